"""The EPContext model and its QNN context binary: what the app loads so the phone skips compiling.

Creating a QNN session with ``ep.context_enable=1``, ``ep.context_file_path=<dir>/<stem>.onnx`` and
``ep.context_embed_mode=0`` writes ``<stem>.onnx`` (one ``com.microsoft:EPContext`` node naming
``<stem>_qnn.bin`` by its bare file name) and ``<stem>_qnn.bin``, the graph compiled for the
``soc_model`` of the provider options. Two rules make the bytes reproducible (measured with
onnxruntime 1.32 / onnxruntime-qnn 2.7.0):

* the model is given as **bytes**: given a path, the partition name hashes the path, and a copy of
  the same model in another folder compiles to different ``.onnx`` and ``.bin`` bytes;
* the compile is the **first QNN session of its process**: after any earlier QNN session about
  3,400 bytes of the ``.bin`` differ (internal counters). Each compile therefore runs in a fresh
  Python process (:mod:`._compile`), bounded by the run time limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx

from ...errors import StageError

CONTEXT_SUFFIX = "_qnn.bin"  # what the QNN EP appends to the context model's stem
COMPAT_KEY = "ep_compatibility_info.QNNExecutionProvider"


def context_files(out_dir: Path, stem: str) -> tuple[Path, Path]:
    return out_dir / f"{stem}.onnx", out_dir / f"{stem}{CONTEXT_SUFFIX}"


def compile_context(model: Path, out_dir: Path, stem: str, device_options: dict[str, str],
                    extra_options: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Compile ``model`` for the HTP into ``out_dir/<stem>.onnx`` + ``<stem>_qnn.bin`` in a fresh process."""
    from ... import limits

    ctx, binary = context_files(out_dir, stem)
    for stale in (ctx, binary):  # the EP refuses to overwrite an existing context model
        stale.unlink(missing_ok=True)
    request = {"model": str(model), "context": str(ctx), "options": device_options, "extra": extra_options or {}}
    package_root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-m", "edgepack.backends.qnn._compile"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=limits.run_seconds() + limits.GRACE_SECONDS,
                              env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        msg = limits.over_limit_message(f"compiling the QNN context of {model.name}", limits.run_seconds())
        raise StageError(msg) from exc
    answer = _answer(done.stdout)
    if done.returncode != 0 or answer.get("error"):
        why = answer.get("error") or (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        msg = f"compiling the QNN context binary of {model.name} failed: {why}"
        raise StageError(msg)
    if not ctx.is_file() or not binary.is_file():
        msg = f"the QNN EP wrote no context binary for {model.name} (expected {ctx.name} and {binary.name})"
        raise StageError(msg)
    return ctx, binary


def _answer(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}


def context_info(ctx: Path) -> dict[str, str]:
    """What the EPContext model says about the binary: the SDK that wrote it and the compatibility string."""
    model = onnx.load_model(str(ctx), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    info = {"ep_compatibility_info": meta.get(COMPAT_KEY, "")}
    for node in model.graph.node:
        if node.op_type == "EPContext":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            for key in ("ep_sdk_version", "ep_cache_context", "embed_mode", "source"):
                value = attrs.get(key)
                info[key] = value.decode() if isinstance(value, bytes) else str(value)
            break
    return info
