"""The README.md of an intel-openvino bundle: how to load the IR with the pinned runtime."""

from __future__ import annotations

import json

from ...render.readme import FOOTER, header_lines


def render(ctx) -> str:
    """README text for an OpenVINO bundle (after the package stage: reads ctx.package)."""
    version = ctx.package.openvino_version if ctx.package else ""
    single = len(ctx.models) == 1
    files = {m.name: ("model" if single else m.name) + ".xml" for m in ctx.models}
    m = ctx.models[0]
    first = m.source.info.inputs[0]
    shape = m.shapes.get(first.name, first.shape) if m.fixed_shapes else first.shape
    example = tuple(d if isinstance(d, int) else 1 for d in (shape or ()))
    return "\n".join([
        *header_lines(ctx, files),
        "## Load it",
        "",
        "```bash",
        "python3 -m venv venv && . venv/bin/activate",
        f"pip install -r requirements.txt        # openvino {version}, the version that wrote the IR",
        "```",
        "",
        "```python",
        "import json, numpy as np, openvino as ov",
        'config = json.load(open("runtime_config.json"))',
        "core = ov.Core()",
        f'compiled = core.compile_model("{files[m.name]}", config["device"], config["properties"])',
        f'outputs = compiled({{{json.dumps(first.name)}: np.zeros({example}, np.float32)}})',
        "```",
        "",
        "`runtime_config.json` holds the device, `PERFORMANCE_HINT`, `INFERENCE_PRECISION_HINT` and",
        "`INFERENCE_NUM_THREADS`. fp16 weights in an IR are storage only: the compute precision is",
        "`INFERENCE_PRECISION_HINT`. The `.bin` file must sit beside its `.xml` with the same stem.",
        "",
        *FOOTER,
    ])
