"""Run an ONNX / ORT-format model inside the emulated (aarch64) Python. Needs only numpy + onnxruntime.

Started by :mod:`edgepack.emulator` as ``python3 -I -S _emulated_runner.py SITE_PACKAGES WORKDIR`` under
qemu-user; it must not import edgepack. WORKDIR holds ``request.json`` and ``in-NNNN.npz`` (arrays
``a0, a1, ...`` in the order of the request's ``input_names``); it writes ``out-NNNN.npz`` (``a0, a1,
...`` in the order of ``output_names``) and ``response.json`` (what ran where). Inputs are loaded with
``allow_pickle=False`` and must be plain numeric or boolean arrays; anything else is refused.
On a refused request or an onnxruntime error the last stderr line is ``edgepack-runner: error: ...``
and the exit code is 3.
"""

from __future__ import annotations

import json
import os
import sys
import time

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}
PLAIN_KINDS = "biuf"  # bool, int, uint, float: what a model takes; no objects, strings, structs or complex
MAX_FEEDS = 10000
# AT_HWCAP / AT_HWCAP2 bits of arm64 Linux (arch/arm64/include/uapi/asm/hwcap.h)
HWCAP = {"fp": 0, "asimd": 1, "aes": 3, "crc32": 7, "atomics": 8, "fphp": 9, "asimdhp": 10, "asimdrdm": 12,
         "asimddp": 20, "sve": 22, "asimdfhm": 23}
HWCAP2 = {"sve2": 1, "svei8mm": 9, "i8mm": 13, "bf16": 14, "sme": 23}


class Refused(Exception):
    """The request or an input is not acceptable."""


def _fail(msg: str) -> int:
    sys.stderr.write(f"edgepack-runner: error: {msg}\n")
    return 3


def read_request(workdir: str) -> dict:
    """request.json, checked field by field."""
    with open(os.path.join(workdir, "request.json"), encoding="utf-8") as fh:
        req = json.load(fh)
    if not isinstance(req, dict) or req.get("version") != 1:
        raise Refused("request.json is not a version-1 request")
    model = req.get("model")
    if not isinstance(model, str) or not model.endswith((".onnx", ".ort")) or not os.path.isfile(model):
        raise Refused(f"model {model!r} is not an existing .onnx or .ort file")
    threads = req.get("threads")
    if type(threads) is not int or not 1 <= threads <= 256:
        raise Refused(f"threads {threads!r} must be an integer in 1..256")
    if req.get("level") is not None and req.get("level") not in LEVELS:
        raise Refused(f"level {req.get('level')!r} must be one of {', '.join(LEVELS)} or null")
    names = req.get("input_names")
    if (not isinstance(names, list) or len(names) > MAX_FEEDS
            or not all(isinstance(n, list) and all(isinstance(s, str) for s in n) for n in names)):
        raise Refused("input_names must be a list (one per feed) of lists of input names")
    return req


def load_feed(path: str, names: list) -> dict:
    """One feed {input name: array} from an .npz of plain arrays a0, a1, ... (no pickles)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        keys = sorted(npz.files)
        if keys != sorted(f"a{i}" for i in range(len(names))):
            raise Refused(f"{os.path.basename(path)} holds {keys}, expected a0..a{len(names) - 1}")
        feed = {}
        for i, name in enumerate(names):
            arr = npz[f"a{i}"]
            if arr.dtype.kind not in PLAIN_KINDS or arr.dtype.fields is not None:
                raise Refused(f"input {name!r} is not a plain numeric array (dtype {arr.dtype})")
            feed[name] = arr
    return feed


def cpu_features() -> list:
    """Names of the arm64 features the (emulated) kernel reports in AT_HWCAP/AT_HWCAP2."""
    import ctypes

    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return []
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    hw, hw2 = getauxval(16), getauxval(26)  # AT_HWCAP, AT_HWCAP2
    return [n for n, b in HWCAP.items() if hw >> b & 1] + [n for n, b in HWCAP2.items() if hw2 >> b & 1]


def run(req: dict, workdir: str) -> dict:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    if req.get("level") is not None:
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[req["level"]])
    so.intra_op_num_threads = req["threads"]
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    feeds = [load_feed(os.path.join(workdir, f"in-{i:04d}.npz"), n) for i, n in enumerate(req["input_names"])]
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(req["model"], so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises Fail/InvalidGraph/NotImplemented...
        raise Refused(f"onnxruntime cannot load {os.path.basename(req['model'])}: {_first(exc)}") from None
    t1 = time.perf_counter()
    out_names = [o.name for o in sess.get_outputs()]
    for i, feed in enumerate(feeds):
        try:
            outs = sess.run(None, feed)
        except Exception as exc:  # noqa: BLE001
            raise Refused(f"onnxruntime failed running feed {i}: {_first(exc)}") from None
        arrays = [np.asarray(o) for o in outs]
        for name, arr in zip(out_names, arrays):
            if arr.dtype.kind not in PLAIN_KINDS:
                raise Refused(f"output {name!r} is not a plain numeric array (dtype {arr.dtype})")
        np.savez(os.path.join(workdir, f"out-{i:04d}.npz"), **{f"a{j}": a for j, a in enumerate(arrays)})
    t2 = time.perf_counter()
    import platform

    return {"output_names": out_names, "onnxruntime": ort.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "cpu_features": cpu_features(),
            "session_s": round(t1 - t0, 3), "runs_s": round(t2 - t1, 3)}


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list) -> int:
    if len(argv) != 3:
        return _fail("usage: _emulated_runner.py SITE_PACKAGES WORKDIR")
    site, workdir = argv[1], argv[2]
    sys.path.insert(0, site)
    try:
        req = read_request(workdir)
        info = run(req, workdir)
    except Refused as exc:
        return _fail(str(exc))
    except (OSError, ValueError) as exc:  # unreadable files, malformed JSON or .npz
        return _fail(_first(exc))
    except ImportError as exc:
        return _fail(f"cannot import {exc.name or 'a module'} from {site}")
    with open(os.path.join(workdir, "response.json"), "w", encoding="utf-8") as fh:
        json.dump(info, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
