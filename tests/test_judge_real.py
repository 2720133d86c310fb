"""The judgement on real models with real inputs (tests/real_models.py, tests/real_inputs.py): what the
user sees is what is judged, on held-out samples, and failures are reported per target."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_inputs import SHAPES, decode, samples, write_calibration_folder  # noqa: E402
from real_models import find_real_model  # noqa: E402

pytestmark = pytest.mark.integration


def _model(key: str) -> Path:
    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{key} is not installed")
    return path


def _judge(key: str, candidate: Path, tolerance):
    from edgepack.judge import judge
    from edgepack.metrics.kinds import kinds_of
    from edgepack.records import Evidence
    from edgepack.runtime.ort import run_model

    src = _model(key)
    held = samples(key, "heldout")
    ref, cand = run_model(src, held), run_model(candidate, held)
    kinds = kinds_of(onnx.load_model(str(src), load_external_data=False).graph, ref[0], {})
    return judge(ref, cand, kinds, tolerance, Evidence("calibration folder", len(held), True)), ref, cand


def _static_int8(key: str, dst: Path, monkeypatch) -> Path:
    from edgepack.backends.onnxruntime.quantize import quantize
    from edgepack.target import Recipe

    # onnxruntime's symbolic shape inference, failing on these dynamic-shape models, saves
    # sym_shape_infer_temp.onnx + <uuid>.data into the working folder: edgepack sends them to its work folder
    cwd = dst.parent / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    record = quantize(_model(key), dst, Recipe("static-int8", activation_type="uint8", weight_type="int8"),
                      samples(key, "calibration"), is_accelerator=False)
    assert list(cwd.iterdir()) == [], record["notes"]
    return dst


def test_an_int8_yolov8_whose_scores_collapse_passes_cosine_and_is_rejected_by_its_boxes(tmp_path, monkeypatch):
    """nudenet's YOLOv8n, plain uint8 static int8: one scale for the output Concat of boxes (0..640) and
    scores (0..1) - every score becomes 0, while the whole-tensor cosine stays above any int8 bar."""
    from edgepack.target import load_target

    tolerance = load_target("rpi5-cpu").recipes[0].tolerance
    from edgepack.backends.onnxruntime import quantize as q

    # onnxruntime's plain quantize_static: without edgepack's float output Concat (mixed precision keeps it float)
    monkeypatch.setattr(q, "range_mixing_later", lambda pre, calibration: lambda: (pre, {}))
    j, ref, cand = _judge("nudenet_yolov8n", _static_int8("nudenet_yolov8n", tmp_path / "q.onnx", monkeypatch), tolerance)
    out = j.outputs["output0"]
    assert out["kind"] == "boxes" and out["cosine_min"] > 0.99 > tolerance.cosine_min + 0.005
    assert float(np.max(cand[0]["output0"][0, 4:])) == 0.0  # the collapse
    assert out["fp32_confident"] >= 1 and out["box_agreement"] == 0.0
    assert j.status == "failed" and "box_agreement 0.0000 < 0.95" in j.reason


def test_a_recognizer_candidate_is_held_to_its_decoded_text(tmp_path, monkeypatch):
    """PP-OCRv5's CTC recognizer, static int8: judged by identical decoded text on held-out real lines,
    and that metric agrees with the text the model's own decoding gives."""
    from edgepack.target import load_target

    tolerance = load_target("rpi5-cpu").recipes[0].tolerance
    key = "ppocrv5_rec"
    j, ref, cand = _judge(key, _static_int8(key, tmp_path / "q.onnx", monkeypatch), tolerance)
    out = j.outputs["fetch_name_0"]
    assert out["kind"] == "sequence" and out["n"] == len(ref) >= 32
    texts = [(decode(key, [r["fetch_name_0"]]), decode(key, [c["fetch_name_0"]])) for r, c in zip(ref, cand)]
    same = sum(a == b for a, b in texts) / len(texts)
    assert out["sequence_agreement"] == pytest.approx(same, abs=1e-6)
    assert (j.status == "failed") == (same < 0.95)


def test_a_detector_on_generated_inputs_is_not_verifiable_and_ships_marked_so(cli, tmp_path):
    model = _model("ppocrv5_det")
    code, out, err = cli("build", model, "--target", "rpi5-cpu", "-o", tmp_path / "o", *sum((["--shape", s] for s in
                                                                                           SHAPES["ppocrv5_det"]), []))
    assert code == 0, err
    ver = json.loads((tmp_path / "o" / "rpi5-cpu" / "manifest.json").read_text())["models"][0]["verification"]
    assert ver["status"] == "not verifiable"
    entry = next(iter(ver["outputs"].values()))
    assert entry["kind"] == "map" and entry["status"] == "not verifiable"
    assert "never exceeds the threshold 0.5" in entry["reason"] and "with generated inputs" in entry["reason"]
    assert "UNVERIFIED" in out


def test_few_real_samples_are_weakly_verified_with_their_count(cli, tmp_path):
    key = "ppocrv5_cls"
    calib = write_calibration_folder(key, tmp_path / "calib")
    np.save(calib / "x.npy", np.load(calib / "x.npy")[:20])
    code, out, err = cli("build", _model(key), "--target", "rpi5-cpu", "-o", tmp_path / "o", "--calibration", calib,
                         *sum((["--shape", s] for s in SHAPES[key]), []))
    assert code == 0, err
    ver = json.loads((tmp_path / "o" / "rpi5-cpu" / "manifest.json").read_text())["models"][0]["verification"]
    assert ver["status"] == "weakly verified" and ver["evidence"]["samples"] == 10
    assert "weakly verified, n=10" in out


def test_compare_all_targets_on_an_ai_onnx_ml_model_builds_the_rest_and_names_the_openvino_failure(cli, tmp_path):
    pytest.importorskip("openvino")
    model = _model("logreg_iris")
    code, out, err = cli("compare", model, "--targets", "all", "-o", tmp_path / "o", "--jobs", "1")
    assert code == 1
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert set(report["targets"]) == {"android-nnapi", "ios-coreml", "rpi4-cpu", "rpi5-cpu"}
    failures = {f["target"]: f for f in report["failures"]}
    assert set(failures) == {"intel-openvino", "android-qnn", "android-qnn-8gen2", "android-qnn-8elite"}
    assert all(f["stage"] == "plan" for f in failures.values())
    assert failures["intel-openvino"]["reason"].startswith("OpenVINO has no ai.onnx.ml operators (LinearClassifier")
    assert failures["android-qnn"]["reason"].startswith("the QNN HTP has no ai.onnx.ml operators (LinearClassifier")
    assert "target not built: intel-openvino: plan: OpenVINO has no ai.onnx.ml operators" in err
    for name in ("report.md", "report.html"):
        assert "intel-openvino" in (tmp_path / "o" / name).read_text()
