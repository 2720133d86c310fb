"""Bundle READMEs answer a developer's questions: the outputs (names, shapes, meaning), the
preprocessing the model expects, and a complete snippet per platform that runs one input (the Python
ones are run here, in the bundle folder, as they stand)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from conftest import REPO, SAMPLE_MODEL
from edgepack.build import build
from edgepack.render import snippets
from edgepack.target import load_targets

CALIB = REPO / "sample_apps" / "model" / "calibration"
TARGETS = ["android-nnapi", "ios-coreml", "rpi4-cpu"] + (
    ["intel-openvino"] if importlib.util.find_spec("openvino") else [])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("readme")
    return {r.target: r.bundle for r in build([SAMPLE_MODEL], load_targets(TARGETS), out, calibration=CALIB)}


def _block(text: str, language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    assert blocks, f"no {language} block"
    return blocks[-1] if language == "python" else blocks[0]


@pytest.mark.parametrize("target", [t for t in TARGETS if t in ("rpi4-cpu", "intel-openvino")])
def test_the_python_snippet_runs_one_input_as_written(bundles, target):
    bundle = bundles[target]
    code = _block((bundle / "README.md").read_text(), "python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads((bundle / "manifest.json").read_text())["models"][0]["reference"]["inputs"][0]
    x = np.fromfile(bundle / entry["file"], "<f4").reshape(entry["shape"])
    expected = ort.InferenceSession(str(SAMPLE_MODEL), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert proc.stdout.strip() == f"logits (1, 10) argmax: [{int(expected.argmax())}]"


def test_every_readme_names_outputs_and_preprocessing(bundles):
    for target, bundle in bundles.items():
        text = (bundle / "README.md").read_text()
        assert "`model` output `logits`: float32 [1, 10] - looks like class scores (logits): 10 per sample" in text, target
        shape = "[1, 1, 8, 8]" if target in ("android-nnapi", "ios-coreml") else "[batch, 1, 8, 8]"  # fixed for NPUs
        assert (f"`model` input `input`: a raw float32 tensor {shape} (no image preprocessing recorded); "
                "the calibration data span [0, 1]") in text, target
        assert "`reference/model.in0.bin`: `model` input `input` float32 [1, 1, 8, 8]" in text


def test_android_readme_has_a_complete_kotlin_snippet_and_the_aar(bundles):
    text = (bundles["android-nnapi"] / "README.md").read_text()
    code = _block(text, "kotlin")
    for needed in ("fun runOnce(context: Context)", "env.createSession(model.path, options)",
                   'addConfigEntry("session.enable_saved_runtime_optimizations", "1")', "addNnapi(",
                   '"input" to tensor("reference/model.in0.bin", longArrayOf(1, 1, 8, 8), null)', "session.run(feed)"):
        assert needed in code, needed
    assert code.count("{") == code.count("}") and code.count("(") == code.count(")")
    assert "onnxruntime-release.aar" in text and "build_aar_package.py" in text


def test_ios_readme_has_a_complete_swift_snippet_and_the_pods(bundles):
    text = (bundles["ios-coreml"] / "README.md").read_text()
    code = _block(text, "swift")
    for needed in ("func runOnce() throws", '"ModelCacheDirectory": cache.path', '"ModelFormat": "MLProgram"',
                   'modelPath: dir.appendingPathComponent("model.ort").path',
                   '"input": try tensor("reference/model.in0.bin", .float, [1, 1, 8, 8])', "session.run(withInputs: feed"):
        assert needed in code, needed
    assert code.count("{") == code.count("}") and code.count("(") == code.count(")")
    assert "platform :ios, '15.1'" in text
    assert "pod 'onnxruntime-objc', :path => 'onnxruntime/build/edgepack/pods/onnxruntime-objc'" in text
    assert "pod 'onnxruntime-c', :path => 'onnxruntime/build/edgepack/pods/onnxruntime-c'" in text
    assert "ORT_POD_LOCAL_PATH" in text


def test_image_preprocessing_is_recorded_and_explained(tmp_path, tiny_cnn_path):
    image = pytest.importorskip("PIL.Image")
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    (calib / "preprocess.toml").write_text('input = "x"\nsize = [8, 8]\nresize = "letterbox"\ncolor = "BGR"\n'
                                          'mean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n')
    [r] = build([tiny_cnn_path], load_targets(["rpi5-cpu"]), tmp_path / "out", calibration=calib)
    pre = r.manifest["models"][0]["preprocessing"]
    assert pre == {"input": "x", "size": [8, 8], "resize": "letterbox", "pad_value": 114, "layout": "NCHW",
                   "color": "BGR", "scale": pytest.approx(1 / 255), "mean": [0.5] * 3, "std": [0.25] * 3}
    text = (r.bundle / "README.md").read_text()
    assert ("`model` input `x` is an image (from the calibration folder's preprocess.toml; also "
            "`models[].preprocessing` in manifest.json): decode the image as BGR; resize to 8x8 (letterbox, pad value "
            "114); multiply each pixel (0-255) by 0.00392157; subtract mean [0.5, 0.5, 0.5] and divide by std "
            "[0.25, 0.25, 0.25] per channel; lay out as NCHW with a batch axis of 1.") in text


def test_without_calibration_the_readme_says_what_it_does_not_know(tmp_path):
    [r] = build([SAMPLE_MODEL], load_targets(["rpi5-cpu"]), tmp_path)
    text = (r.bundle / "README.md").read_text()
    assert "there was no calibration data (the build verified on generated inputs): feed what the model was trained on" in text


HOSTILE = 'in"put$x\\y\x01z'


def test_names_reach_the_snippets_as_escaped_literals():
    entry = {"inputs": [{"name": HOSTILE, "file": "reference/m.in0.bin", "dtype": "float32", "shape": [1, 2]}]}
    py = snippets.python("model.ort", entry, {})
    literal = re.search(r"^    (\".*?\"): np\.fromfile", py, re.M).group(1)
    assert ast.literal_eval(literal) == HOSTILE
    kt = snippets.kotlin("model.ort", entry, {}, [], True)
    assert '"in\\"put\\$x\\\\y\\u0001z" to tensor(' in kt
    sw = snippets.swift("model.ort", entry, {}, {})
    assert '"in\\"put$x\\\\y\\u{1}z": try tensor(' in sw
