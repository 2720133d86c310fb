"""The graph estimates are computed on: shapes fixed, onnxruntime basic optimizations, shapes inferred."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from ..cleanup import tmp_prefix
from ..shapes import fix_input_shapes
from ..transforms import infer_shapes, ort_optimize


def analysis_model(path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None, *,
                   optimize: bool = True) -> onnx.ModelProto:
    """Load ``path`` (an .onnx file), fix ``shapes``, basic-optimize with onnxruntime, infer shapes.

    Reads the model (and its external data folder); writes only to a temporary folder.
    """
    path = Path(path)
    proto = onnx.load_model(str(path), load_external_data=False)
    if shapes:
        proto = fix_input_shapes(proto, shapes)
    if optimize:
        with tempfile.TemporaryDirectory(prefix=tmp_prefix("estimate")) as tmp:
            dst = Path(tmp) / "basic.onnx"
            ort_optimize(proto, path.parent.resolve(), dst, "basic")
            proto = onnx.load_model(str(dst), load_external_data=False)
    return infer_shapes(proto)
