"""The model class (conv-heavy / matmul-heavy / other) is computed at the shapes the model runs on in
the build (its verification inputs), so fixing shapes with --shape never changes it, and the decision
list names one class."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import TensorProto, helper, numpy_helper

from edgepack.build import build
from edgepack.flops import classify
from edgepack.target import load_target


def _hybrid() -> onnx.ModelProto:
    """A conv stem over H x W, then a wide MLP head: at 1x1 the head's matmuls dominate, at 64x64 the conv."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 3, 3, 3)).astype(np.float32) * 0.2, "w"),
             numpy_helper.from_array(rng.standard_normal((32, 512)).astype(np.float32) * 0.05, "m1"),
             numpy_helper.from_array(rng.standard_normal((512, 10)).astype(np.float32) * 0.05, "m2")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "m1"], ["h"]),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("MatMul", ["hr", "m2"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)


def test_classify_at_the_inputs_shapes():
    m = _hybrid()
    assert classify(m)[0] == "matmul-heavy"  # dims unknown are 1: a 1x1 image
    cls, evidence = classify(m, {"x": (1, 3, 64, 64)})
    assert cls == "conv-heavy" and evidence.startswith("FLOPs share at the inputs' shapes x=1x3x64x64: conv 9")


def _classes(decisions: list[str]) -> list[str]:
    return re.findall(r"model class '([a-z-]+)'", " ".join(decisions))


def _consistent(decisions: list[str]) -> None:
    [cls] = _classes(decisions)
    for d in decisions:
        m = re.search(r"it applies to ([a-z-]+) models", d)
        assert m is None or m.group(1) != cls, d


def test_shape_or_no_shape_gives_the_same_class_and_recipe(tmp_path):
    path = tmp_path / "hybrid.onnx"
    onnx.save(_hybrid(), str(path))
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "x.npy", np.random.default_rng(1).standard_normal((8, 1, 3, 64, 64)).astype(np.float32))
    [dynamic] = build([path], [load_target("rpi5-cpu")], tmp_path / "a", calibration=calib)
    [fixed] = build([path], [load_target("rpi5-cpu")], tmp_path / "b", calibration=calib, shapes={"x": (1, 3, 64, 64)})
    assert dynamic.manifest["recipe"]["shapes"] != fixed.manifest["recipe"]["shapes"]  # one kept the dynamic dims
    a, b = dynamic.manifest["recipe"]["decisions"], fixed.manifest["recipe"]["decisions"]
    assert _classes(a) == _classes(b) == ["conv-heavy"]
    _consistent(a)
    _consistent(b)
    assert dynamic.manifest["recipe"]["quantization"]["model_class"] == fixed.manifest["recipe"]["quantization"]["model_class"]
    assert dynamic.manifest["recipe"]["quantization"]["recipe"] == fixed.manifest["recipe"]["quantization"]["recipe"]


@pytest.mark.integration
@pytest.mark.parametrize("key", ["minilm_l3_paraphrase", "ppocrv5_rec", "ppocrv2_rec_lstm"])
def test_real_models_keep_their_class_with_and_without_shape(tmp_path, key):
    from real_inputs import SHAPES, MissingSource, samples
    from real_models import REAL_MODELS, find_real_model

    from edgepack.flops import sample_shapes
    from edgepack.shapes import parse_shape_args
    from edgepack.transforms import prepare_graph

    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{REAL_MODELS[key].distribution} is not installed")
    try:
        feeds = samples(key, "calibration")[:1]
    except MissingSource as exc:
        pytest.skip(str(exc))
    proto = onnx.load_model(str(path), load_external_data=False)
    got = []
    for shapes in (None, parse_shape_args(SHAPES[key])):  # the prepared graph a build makes without and with --shape
        dst = tmp_path / f"{'fixed' if shapes else 'dynamic'}.onnx"
        prepare_graph(proto, path.parent.resolve(), dst, shapes=shapes)
        got.append(classify(onnx.load_model(str(dst), load_external_data=False), sample_shapes(feeds)))
    assert got[0][0] == got[1][0], got
    expected = "matmul-heavy" if key.startswith("minilm") else "conv-heavy"
    assert got[0][0] == expected, got
