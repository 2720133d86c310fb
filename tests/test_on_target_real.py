"""Done means of issue #23: a real detector and a real classifier built for rpi5-cpu and rpi4-cpu with
``--verify-on-target`` on real inputs; the decision rests on the aarch64 onnxruntime under emulation and
the manifest says so. Skipped, with the reason, where the aarch64 emulator is not prepared
(``edgepack emulator setup aarch64``; .ci/run prepares it).

Few samples keep it short (an emulated run costs seconds per image; the detector ships fp32 here - its
static int8 fails the box check on the host - and fp32 YOLOv8n at 320 px takes about 8-15 s per image
under emulation): SAMPLES[key] calibration samples, of which the build verifies half.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepack import emulator
from edgepack.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TARGETS = {"rpi4-cpu": "cortex-a72", "rpi5-cpu": "cortex-a76"}
# half calibrate, half verify (weakly verified: a test of where the check runs, not of the recipe)
SAMPLES = {"nudenet_yolov8n": 4, "ppocrv5_cls": 8}


@pytest.fixture(scope="module")
def emulated():
    ok, why = emulator.available("aarch64")
    if not ok:
        pytest.skip(f"aarch64 emulator not available ({why})")


def _calibration(key: str, dest: Path) -> Path:
    from real_inputs import MissingSource, samples

    try:
        feeds = samples(key, "calibration")[:SAMPLES[key]]
    except MissingSource as exc:
        pytest.skip(str(exc))
    dest.mkdir(parents=True)
    for name in feeds[0]:
        np.save(dest / f"{name}.npy", np.stack([f[name] for f in feeds]), allow_pickle=False)
    return dest


def _built(key: str, tmp: Path) -> Path:
    from real_inputs import SHAPES
    from real_models import REAL_MODELS, find_real_model

    model = find_real_model(key)
    if model is None:
        pytest.skip(f"{REAL_MODELS[key].distribution} is not installed")
    calib = _calibration(key, tmp / "calib")
    args = ["build", str(model), *[a for t in TARGETS for a in ("--target", t)], "-o", str(tmp / "out"),
            "--calibration", str(calib), *[a for s in SHAPES[key] for a in ("--shape", s)], "--verify-on-target", "--json"]
    assert main(args) == 0
    return tmp / "out"


@pytest.fixture(scope="module")
def detector(emulated, tmp_path_factory):
    return _built("nudenet_yolov8n", tmp_path_factory.mktemp("det"))


@pytest.fixture(scope="module")
def classifier(emulated, tmp_path_factory):
    return _built("ppocrv5_cls", tmp_path_factory.mktemp("cls"))


def _check(out: Path, target: str, cpu: str, key: str) -> dict:
    doc = json.loads((out / target / "manifest.json").read_text())
    ver = doc["verification"]
    ort = emulator.host_onnxruntime()
    assert ver["ran_on"] == {"arch": "aarch64", "cpu": cpu, "runtime": f"onnxruntime {ort} (aarch64 wheel)",
                             "emulated": "qemu user-mode"}
    assert ver["passed"] and ver["evidence"]["samples"] == SAMPLES[key] // 2
    assert f"on aarch64 onnxruntime {ort} ({cpu}, qemu user-mode): " in ver["summary"]
    # the build record: the emulated CPU really is the target's (the A72 has no dot product), its wall time
    # is labelled as no latency, and the aarch64 outputs are next to the x86 ones
    rec = json.loads((out / f"{target}.build.json").read_text())["measurements"]["on_target"]["model"]
    env = rec["environment"]
    assert env["arch"] == "aarch64" and env["cpu_model"] == cpu and env["onnxruntime"] == ort
    assert ("asimddp" in env["cpu_features"]) == (cpu == "cortex-a76")
    assert rec["samples"] == SAMPLES[key] // 2 and rec["emulated_wall_s"] > 0 and "not a latency" in rec["note"]
    for name, diff in rec["vs_host"].items():
        assert diff["cosine_min"] >= 0.9999, (target, name, diff)
    return doc


@pytest.mark.parametrize(("target", "cpu"), TARGETS.items())
def test_detector_checked_on_aarch64(detector, target, cpu):
    doc = _check(detector, target, cpu, "nudenet_yolov8n")
    assert doc["verification"]["outputs"]["output0"]["kind"] == "boxes"


@pytest.mark.parametrize(("target", "cpu"), TARGETS.items())
def test_classifier_checked_on_aarch64(classifier, target, cpu):
    doc = _check(classifier, target, cpu, "ppocrv5_cls")
    (out,) = doc["verification"]["outputs"].values()
    assert out["kind"] == "classes"


def test_verify_bundle_on_target(classifier, capsys):
    assert main(["verify", str(classifier / "rpi4-cpu"), "--on-target"]) == 0
    out = capsys.readouterr().out
    assert f"(on aarch64 onnxruntime {emulator.host_onnxruntime()} (cortex-a72, qemu user-mode))" in out
