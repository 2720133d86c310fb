"""Child process of :func:`edgepack.backends.qnn.context.compile_context` (not a user command).

Reads one JSON request on stdin - {"model", "context", "options", "extra"} - compiles the model into
an EPContext model + QNN context binary as the first and only QNN session of this process, and
prints one JSON line: {} on success, {"error": "..."} otherwise. Everything the QNN libraries print
is captured at the file-descriptor level.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    from edgepack import quiet
    from edgepack.errors import EdgepackError
    from edgepack.runtime.capture import captured_output

    request = json.loads(sys.stdin.read())
    try:
        import onnxruntime as ort

        ort.set_default_logger_severity(quiet.ort_severity())
        from edgepack.backends.qnn import session

        options = {**session.host_options(request["options"]), **request["extra"]}
        config = [("ep.context_enable", "1"), ("ep.context_file_path", request["context"]),
                  ("ep.context_embed_mode", "0")]
        model = Path(request["model"]).read_bytes()  # bytes, not a path: see context.py
        with captured_output():
            session.create(model, options, config=config, what=Path(request["model"]).name)
    except EdgepackError as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    print(json.dumps({}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
