"""Format limits, planned before any stage runs (issue #22).

An ORT-format model is one flatbuffer: its 32-bit offsets cap the file at 2 GiB, so a 2.2 GB fp32 model
cannot become a ``.ort`` at all - a build that found out at the convert stage had already spent a minute
and twice the weights' memory. Before any work, each recipe's shipped size is predicted from the model's
weights alone (no weights are read):

* ``none``: every weight as stored;
* ``fp16``: float32 weights halved;
* ``dynamic-int8``: float32 weights of MatMul/Gemm quartered (the only ops it quantizes);
* ``static-int8`` / ``static-w8a16``: float32 weights of Conv/ConvTranspose/MatMul/Gemm quartered.

A recipe whose prediction exceeds the backend's format limit (:meth:`Backend.format_limit`) is skipped
with the numbers in its attempt (the manifest says why). When no recipe of the profile can fit - or only
recipes that need ``--calibration`` and none was given - the target is refused at once ("plan" stage),
naming the recipe that would fit.
"""

from __future__ import annotations

from .errors import StageError
from .model import iter_graphs

INT8_OPS = {"static-int8": ("Conv", "ConvTranspose", "MatMul", "Gemm"),
            "static-w8a16": ("Conv", "ConvTranspose", "MatMul", "Gemm"),
            "dynamic-int8": ("MatMul", "Gemm")}
GIB = 1024**3


def _bytes(t) -> int:
    import numpy as np
    from onnx import helper

    try:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    except (KeyError, TypeError, ValueError):
        itemsize = 1
    count = 1
    for d in t.dims:
        count *= int(d)
    return count * itemsize


def predicted_bytes(proto) -> dict[str, int]:
    """{recipe name: predicted bytes of its shipped weights} for the model ``proto`` (weights not loaded)."""
    from onnx import TensorProto

    total = f32 = 0
    by_op: dict[str, int] = {}
    weights: dict[str, int] = {}
    for g in iter_graphs(proto.graph):
        for t in g.initializer:
            n = _bytes(t)
            total += n
            if t.data_type == TensorProto.FLOAT:
                f32 += n
                if len(t.dims) >= 2:
                    weights[t.name] = n
    for g in iter_graphs(proto.graph):
        for node in g.node:
            w = node.input[1] if len(node.input) > 1 else None
            if w in weights:
                by_op[node.op_type] = by_op.get(node.op_type, 0) + weights.pop(w)
    out = {"none": total, "fp16": total - f32 // 2}
    for recipe, ops in INT8_OPS.items():
        out[recipe] = total - sum(by_op.get(op, 0) for op in ops) * 3 // 4
    return out


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def plan(proto, profile, backend, has_calibration: bool, model_name: str) -> dict[str, str]:
    """{recipe name: why it is skipped} for the recipes whose shipped form would exceed the backend's
    format limit; StageError when no recipe of ``profile`` can ship this model."""
    limit = backend.format_limit(profile)
    if limit is None:
        return {}
    cap, what = limit
    sizes = predicted_bytes(proto)
    unfit: dict[str, str] = {}
    usable = []
    for r in profile.recipes:
        size = sizes.get(r.name, sizes["none"])
        if size > cap:
            unfit[r.name] = (f"its {backend.bundle_suffix} would hold about {_gb(size)} of weights, beyond {what} "
                             f"of {_gb(cap)} (planned before any stage ran)")
        else:
            usable.append(r)
    if not unfit:
        return {}
    if not usable:
        tried = "; ".join(f"{n}: {why}" for n, why in unfit.items())
        msg = f"{model_name} cannot ship as {profile.name}'s format: no recipe fits ({tried})"
        raise StageError(msg)
    if not has_calibration and all(r.needs_calibration for r in usable):
        names = ", ".join(f"{r.name} (about {_gb(sizes.get(r.name, 0))})" for r in usable)
        msg = (f"{model_name}: only {names} fits {what} of {_gb(cap)}, and it needs calibration data: "
               "pass --calibration DIR")
        raise StageError(msg)
    return unfit
