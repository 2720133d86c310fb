"""Graph rewrites keep outputs equal (fp32, 1e-5 relative) and change the nodes they claim to."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from conftest import tiny_cnn
from edgepack.shapes import fix_input_shapes
from edgepack.transforms import decompose, ort_optimize


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_decompose_hardswish_and_flatten_is_exact():
    model = tiny_cnn()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32) * 4
    out, counts = decompose(model, {"HardSwish", "Flatten"})
    assert counts == {"HardSwish": 1, "Flatten": 1}
    ops = [n.op_type for n in out.graph.node]
    assert "HardSwish" not in ops and "Flatten" not in ops and "Clip" in ops and "Reshape" in ops
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=1e-5, atol=1e-6)
    assert [n.op_type for n in model.graph.node].count("HardSwish") == 1  # input untouched


def test_decompose_hardsigmoid_keeps_attributes():
    model = tiny_cnn()
    for node in model.graph.node:
        if node.op_type == "HardSwish":
            node.op_type = "HardSigmoid"
            node.attribute.extend([onnx.helper.make_attribute("alpha", 0.3), onnx.helper.make_attribute("beta", 0.4)])
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32) * 4
    out, counts = decompose(model, {"HardSigmoid"})
    assert counts == {"HardSigmoid": 1}
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=1e-5, atol=1e-6)


def test_fix_shapes_and_basic_optimization_fold_batchnorm(tmp_path):
    model = fix_input_shapes(tiny_cnn(), {"x": (1, 3, 8, 8)})
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 5]
    dst = tmp_path / "opt.onnx"
    ort_optimize(model, tmp_path, dst, "basic")
    optimized = onnx.load(str(dst))
    assert "BatchNormalization" not in [n.op_type for n in optimized.graph.node]
    # BN's four parameter tensors are folded into the Conv's weight and bias
    assert len(optimized.graph.initializer) < len(model.graph.initializer)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(optimized, x), _run(model, x), rtol=1e-5, atol=1e-6)
