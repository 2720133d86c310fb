"""Every bundle ships a reference input/output pair (edgepack.reference): byte-reproducible, listed
and checksummed, checked by `edgepack verify`, malformed entries are findings."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from conftest import REPO, SAMPLE_MODEL
from edgepack import reference
from edgepack.build import build
from edgepack.bundle_check import check_bundle
from edgepack.target import load_targets

CALIB = REPO / "sample_apps" / "model" / "calibration"
TARGETS = ["android-nnapi", "ios-coreml", "rpi4-cpu", "rpi5-cpu"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return out, {r.target: r.bundle for r in build([SAMPLE_MODEL], load_targets(TARGETS), out, calibration=CALIB)}


def _entry(bundle):
    return json.loads((bundle / "manifest.json").read_text())["models"][0]["reference"]


def test_every_bundle_holds_a_listed_reference_pair(bundles):
    _, found = bundles
    calib = np.load(CALIB / "input.npy")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the reference: the model as stored
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(SAMPLE_MODEL), so, providers=["CPUExecutionProvider"])
    for target, bundle in found.items():
        doc = json.loads((bundle / "manifest.json").read_text())
        entry = doc["models"][0]["reference"]
        listed = {a["path"] for a in doc["artifacts"]}
        assert {t["file"] for t in entry["inputs"] + entry["outputs"]} <= listed
        [inp] = entry["inputs"]
        x = reference.from_bytes((bundle / inp["file"]).read_bytes(), inp["dtype"], inp["shape"])
        assert x.shape == (1, 1, 8, 8) and any(np.array_equal(x[0], c) for c in calib)  # a real held-out sample
        [out] = entry["outputs"]
        y = reference.from_bytes((bundle / out["file"]).read_bytes(), out["dtype"], out["shape"])
        np.testing.assert_array_equal(y, sess.run(None, {"input": x})[0])  # the fp32 original's output, exactly
        tolerance = doc["models"][0]["verification"]["tolerance"]
        assert entry["check"]["cosine_min"] == tolerance["cosine_min"] and entry["check"]["same_top1"] is True
        assert "held-out calibration sample" in entry["origin"], target


def test_the_pair_is_byte_reproducible(bundles, tmp_path):
    out, _ = bundles
    again = {r.target: r.bundle for r in build([SAMPLE_MODEL], load_targets(["rpi5-cpu"]), tmp_path, calibration=CALIB)}
    for rel in ("reference/model.in0.bin", "reference/model.out0.bin"):
        assert (again["rpi5-cpu"] / rel).read_bytes() == (out / "rpi5-cpu" / rel).read_bytes()


def test_without_calibration_the_pair_is_a_generated_input(tmp_path):
    [r] = build([SAMPLE_MODEL], load_targets(["rpi5-cpu"]), tmp_path)
    entry = r.manifest["models"][0]["reference"]
    assert "generated input" in entry["origin"]
    assert check_bundle(r.bundle).ok


def _rewrite(bundle, rel, data: bytes):
    """Replace a file and update the manifest's size and checksum, as an attacker or a bug would."""
    (bundle / rel).write_bytes(data)
    doc = json.loads((bundle / "manifest.json").read_text())
    for a in doc["artifacts"]:
        if a["path"] == rel:
            a["bytes"], a["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(doc))


def test_verify_checks_the_outputs_against_the_reference(bundles, tmp_path):
    out, _ = bundles
    bundle = tmp_path / "b"
    shutil.copytree(out / "rpi4-cpu", bundle)
    ref = reference.from_bytes((bundle / "reference/model.out0.bin").read_bytes(), "float32", [1, 10])
    _rewrite(bundle, "reference/model.out0.bin", reference.to_bytes(-ref))
    findings = check_bundle(bundle)
    assert not findings.ok
    [problem] = findings.problems
    # the negated reference: cosine close to -1 (the int8 model's outputs against -fp32)
    assert re.fullmatch(r"model\.ort on its reference input: output 'logits': cosine -0\.99\d+ to the reference < 0\.98 "
                        r"required \(the fp32 original's output on the same input, the recipe's tolerance\)", problem), problem


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda r: r["inputs"][0].update(file="../x.bin"), "models[0].reference.inputs[0] file '../x.bin' is not a file listed"),
    (lambda r: r["outputs"][0].update(dtype="complex64"), "models[0].reference.outputs[0] dtype 'complex64' is not one of"),
    (lambda r: r["outputs"][0].update(shape=[1, 11]), "model.ort: its reference pair cannot be read: 40 bytes, but float32"),
    (lambda r: r["inputs"][0].update(name="other"), "models[0].reference.inputs do not name the model's inputs"),
    (lambda r: r.update(check={"equal_within": "x"}), "models[0].reference.check is not an object of numbers"),
    (lambda r: r.update(outputs=[]), "models[0].reference.outputs is not a non-empty list"),
], ids=["path-escape", "dtype", "shape", "input-name", "check", "no-outputs"])
def test_malformed_reference_entries_are_findings(bundles, tmp_path, edit, problem):
    out, _ = bundles
    bundle = tmp_path / "b"
    shutil.copytree(out / "rpi4-cpu", bundle)
    doc = json.loads((bundle / "manifest.json").read_text())
    edit(doc["models"][0]["reference"])
    (bundle / "manifest.json").write_text(json.dumps(doc))
    findings = check_bundle(bundle)
    assert not findings.ok and any(p.startswith(problem) for p in findings.problems), findings.problems


def test_a_bundle_without_a_reference_pair_still_runs(bundles, tmp_path):
    out, _ = bundles
    bundle = tmp_path / "b"
    shutil.copytree(out / "rpi4-cpu", bundle)
    doc = json.loads((bundle / "manifest.json").read_text())
    doc["models"][0]["reference"] = None
    doc["artifacts"] = [a for a in doc["artifacts"] if not a["path"].startswith("reference/")]
    shutil.rmtree(bundle / "reference")
    (bundle / "manifest.json").write_text(json.dumps(doc))
    findings = check_bundle(bundle)
    assert findings.ok and any("generated inputs" in c and "no reference pair" in c for c in findings.checked)


@pytest.mark.parametrize(("got", "rule", "ok", "why"), [
    (np.array([[1.0, 2.0, 3.0]]), {"equal_within": 1e-5, "cosine_min": 0.99}, True, "equal within"),
    (np.array([[1.0, 2.1, 3.0]]), {"equal_within": 1e-5, "cosine_min": 0.99}, True, "lowest cosine 0.99"),
    (np.array([[3.0, 2.0, 1.0]]), {"equal_within": 1e-5, "cosine_min": 0.99}, False, "cosine 0.714286"),
    (np.array([[1.0, 3.1, 3.0]]), {"equal_within": 1e-5, "cosine_min": 0.9, "same_top1": True}, False, "top-1 class"),
    (np.array([[1.0, np.nan, 3.0]]), {"equal_within": 1e-5, "cosine_min": 0.0}, False, "NaN"),
    (np.array([1.0, 2.0, 3.0]), {"equal_within": 1e-5}, False, "has shape [3]"),
])
def test_the_check_rule(got, rule, ok, why):
    passed, text = reference.check({"y": np.array([[1.0, 2.0, 3.0]], np.float32)}, {"y": got}, rule)
    assert passed is ok and why in text, text


def test_raw_bytes_round_trip_little_endian():
    for dtype in ("float32", "int64", "uint8", "bool", "float16"):
        a = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
        raw = reference.to_bytes(a)
        assert raw == a.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
        np.testing.assert_array_equal(reference.from_bytes(raw, dtype, [3, 4]), a)
    with pytest.raises(ValueError, match="needs 48"):
        reference.from_bytes(b"\0" * 4, "float32", [3, 4])
