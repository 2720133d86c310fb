"""edgepack build on the sample model: bundles, manifests, accuracy, reproducibility, bad input."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import REPO, SAMPLE_MODEL
from edgepack.build import build
from edgepack.target import load_target

CALIB = REPO / "sample_apps" / "model" / "calibration"
TEST_SET = REPO / "sample_apps" / "model" / "digits_test.npz"
ORT_TARGETS = ["android-nnapi", "ios-coreml", "rpi4-cpu", "rpi5-cpu"]


def _accuracy(model_path) -> float:
    spec = importlib.util.spec_from_file_location("evaluate", REPO / "sample_apps" / "model" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.accuracy(model_path, TEST_SET)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    results = build([SAMPLE_MODEL], [load_target(t) for t in ORT_TARGETS], out, calibration=CALIB)
    return out, {r.target: r for r in results}


def test_bundle_layout_and_manifest(bundles):
    out, results = bundles
    for target in ORT_TARGETS:
        b = out / target
        names = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
        expected = {"README.md", "build_runtime.sh", "ci/build-runtime.yml", "manifest.json", "model.ort",
                    "required_operators_and_types.config"}
        assert expected <= set(names)
        assert ("requirements.txt" in names) == target.startswith("rpi")
        doc = json.loads((b / "manifest.json").read_text())
        for key in ("schema_version", "target", "source_model", "artifacts", "toolchain", "recipe", "coverage",
                    "verification", "measured"):
            assert key in doc
        listed = {a["path"] for a in doc["artifacts"]}
        assert listed == set(names) - {"manifest.json"}
        assert doc["verification"]["passed"] is True
        assert doc["recipe"]["decisions"]
        assert doc["toolchain"]["onnxruntime"] == ort.__version__
        assert (out / f"{target}.build.json").is_file()
        assert not list(out.glob(".*staging*"))


def test_recipes_follow_the_targets(bundles):
    out, results = bundles
    recipe = {t: results[t].manifest["recipe"]["quantization"]["recipe"] for t in ORT_TARGETS}
    assert recipe["android-nnapi"] == "static-int8"
    assert recipe["ios-coreml"] == "fp16"
    q = results["android-nnapi"].manifest["recipe"]["quantization"]
    assert q["settings"]["activation_type"] == "uint8"
    # on the Pis static int8 either ships or is dropped for a recorded reason (host speed gate);
    # dynamic int8 is never tried on this CNN
    for t in ("rpi4-cpu", "rpi5-cpu"):
        decisions = results[t].manifest["recipe"]["decisions"]
        assert any("static-int8 chosen" in d or "static-int8 dropped" in d for d in decisions)
        assert recipe[t] in ("static-int8", "none")
        assert not any("dynamic-int8 chosen" in d for d in decisions)


def test_accelerator_coverage_after_prepare(bundles):
    _, results = bundles
    for t in ("android-nnapi", "ios-coreml"):
        cov = results[t].manifest["coverage"]
        assert cov["nodes_on_accelerator"] == cov["nodes_total"] and cov["partitions"] == 1


def test_int8_bundle_accuracy_within_one_point(bundles):
    out, _ = bundles
    fp32 = _accuracy(SAMPLE_MODEL)
    int8 = _accuracy(out / "android-nnapi" / "model.ort")
    assert fp32 - int8 <= 0.01, (fp32, int8)
    fp16 = _accuracy(out / "ios-coreml" / "model.ort")
    assert fp32 - fp16 <= 0.01


def test_config_and_build_script(bundles):
    out, _ = bundles
    cfg = (out / "android-nnapi" / "required_operators_and_types.config").read_text()
    assert "QuantizeLinear" in cfg or "DequantizeLinear" in cfg
    assert "/" not in "".join(line for line in cfg.splitlines() if line.startswith("#"))
    script = (out / "android-nnapi" / "build_runtime.sh").read_text()
    assert "build_aar_package.py" in script and f"v{ort.__version__}" in script
    settings = json.loads((out / "android-nnapi" / "runtime" / "android_aar_build_settings.json").read_text())
    assert "--use_nnapi" in settings["build_params"] and "--disable_ml_ops" in settings["build_params"]
    assert "--build_java" in settings["build_params"]
    assert f"onnxruntime=={ort.__version__}" in (out / "rpi4-cpu" / "requirements.txt").read_text()


def test_shipped_models_run(bundles):
    out, _ = bundles
    x = np.load(CALIB / "input.npy")[:1]
    for t in ORT_TARGETS:
        sess = ort.InferenceSession(str(out / t / "model.ort"), providers=["CPUExecutionProvider"])
        assert sess.run(None, {"input": x})[0].shape == (1, 10)


def test_rebuild_is_byte_identical(bundles, tmp_path):
    out, _ = bundles
    again = tmp_path / "again"
    build([SAMPLE_MODEL], [load_target("android-nnapi"), load_target("rpi5-cpu")], again, calibration=CALIB)
    for t in ("android-nnapi", "rpi5-cpu"):
        a = {p.relative_to(out / t): p.read_bytes() for p in (out / t).rglob("*") if p.is_file()}
        b = {p.relative_to(again / t): p.read_bytes() for p in (again / t).rglob("*") if p.is_file()}
        assert a.keys() == b.keys()
        assert [k for k in a if a[k] != b[k]] == []


def test_without_calibration_static_int8_is_not_guessed(tmp_path):
    [r] = build([SAMPLE_MODEL], [load_target("android-nnapi")], tmp_path / "out")
    assert r.manifest["recipe"]["quantization"]["recipe"] == "none"
    assert any("no calibration data" in d for d in r.manifest["recipe"]["decisions"])
    assert "generated inputs" in r.manifest["verification"]["inputs"][0]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--target", "android-nnapi", "-o", "{model_dir}"], "is the folder of the model"),
        (["--target", "android-nnapi", "-o", "{out}", "--calibration", "{tmp}/nope"], "calibration folder not found"),
        (["--target", "android-nnapi", "-o", "{out}", "--calibration", "{tmp}/badcal"], "names no model input 'inptu'"),
        (["--target", "android-nnapi", "-o", "{out}", "--shape", "input=1x2x8x8"], "dimension 1 is fixed to 1"),
        (["--target", "nope", "-o", "{out}"], "unknown target 'nope'"),
        (["-o", "{out}"], "the following arguments are required: --target"),
        (["--target", "android-nnapi", "-o", "{existing}"], "already exists and is not empty; pass --force"),
        # a file system no folder can be made on (root passes permission checks, so those cannot tell)
        (["--target", "android-nnapi", "-o", "/proc/edgepack-out/x"], "/proc/edgepack-out/x cannot be created"),
    ],
)
def test_bad_build_input(tmp_path, cli, args, expected):
    import shutil

    model_dir = tmp_path / "m"
    model_dir.mkdir()
    model = model_dir / "digits.onnx"
    shutil.copyfile(SAMPLE_MODEL, model)
    (tmp_path / "badcal").mkdir()
    np.save(tmp_path / "badcal" / "inptu.npy", np.zeros((4, 1, 8, 8), np.float32))
    existing = tmp_path / "existing"
    (existing / "android-nnapi").mkdir(parents=True)
    (existing / "android-nnapi" / "keep.txt").write_text("x")
    fmt = {"model_dir": model_dir, "out": tmp_path / "out", "tmp": tmp_path, "existing": existing}
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    code, out, err = cli("build", model, *[a.format(**fmt) for a in args])
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_accelerator_needs_decided_shapes(tmp_path, cli):
    from conftest import make_model
    import onnx
    from onnx import TensorProto, helper

    m = make_model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    p = tmp_path / "dyn.onnx"
    onnx.save(m, str(p))
    code, _, err = cli("build", p, "--target", "android-nnapi", "-o", tmp_path / "out")
    assert code == 2
    assert "cannot decide input 'x' dim 2 ('H'), input 'x' dim 3 ('W')" in err and "--shape x=1x3xNxN" in err
    code, _, err = cli("build", p, "--target", "android-nnapi", "-o", tmp_path / "out", "--shape", "x=1x3x16x16")
    assert code == 0, err


# ---------------------------------------------------------------- edgepack verify


def test_verify_accepts_an_untouched_bundle(bundles, cli):
    out, _ = bundles
    for t in ORT_TARGETS:
        code, stdout, _ = cli("verify", out / t)
        assert code == 0, stdout
        assert "runs on its reference input and 1 output(s) match the reference" in stdout


@pytest.mark.parametrize("tamper,expected", [
    ("flip", "changed file: model.ort"),
    ("append", "changed file: model.ort has"),
    ("extra", "extra file not in the manifest: notes.txt"),
    ("missing", "missing file: README.md"),
])
def test_verify_catches_tampering(bundles, cli, tmp_path, tamper, expected):
    import shutil

    out, _ = bundles
    b = tmp_path / "b"
    shutil.copytree(out / "rpi4-cpu", b)
    model = b / "model.ort"
    if tamper == "flip":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit, same size
        model.write_bytes(bytes(data))
    elif tamper == "append":
        model.write_bytes(model.read_bytes() + b"\0")
    elif tamper == "extra":
        (b / "notes.txt").write_text("x")
    else:
        (b / "README.md").unlink()
    code, stdout, _ = cli("verify", b)
    assert code == 1 and expected in stdout


def test_verify_bad_input(cli, tmp_path):
    code, _, err = cli("verify", tmp_path)
    assert code == 2 and "has no manifest.json" in err and err.count("\n") == 1
    (tmp_path / "manifest.json").write_text("{not json")
    code, _, err = cli("verify", tmp_path)
    assert code == 2 and "not valid JSON" in err


# ---------------------------------------------------------------- estimates in bundles, inspect and calibrate


def test_manifest_estimates_are_labelled_estimates(bundles):
    _, results = bundles
    for t in ORT_TARGETS:
        est = results[t].manifest["estimates"]
        for key in ("size", "latency_ms", "energy"):
            e = est[key]
            assert e["low"] <= e["value"] <= e["high"] and e["method"] and isinstance(e["assumptions"], list)
        assert "runtime_minimal" in est["size"] and "peak_memory" in est["size"]
    phone = results["android-nnapi"].manifest["estimates"]["energy"]
    assert "battery_pct_per_hour" in phone and "mah_per_hour" in phone
    pi = results["rpi4-cpu"].manifest["estimates"]["energy"]
    assert "power_bank_hours" in pi and "wh_per_1000" in pi


def test_inspect_shows_estimates_before_building(cli):
    code, out, _ = cli("inspect", SAMPLE_MODEL, "--target", "ios-coreml", "--rate", "30/s")
    assert code == 0
    assert "estimated (fp32, before quantization): latency" in out and "108000 inferences/hour" in out
    code, _, err = cli("inspect", SAMPLE_MODEL, "--target", "ios-coreml", "--rate", "fast")
    assert code == 2 and "--rate 'fast' must look like 30/s" in err


def test_calibrate_writes_a_profile_that_extends_its_base(cli, tmp_path):
    out = tmp_path / "mine.toml"
    code, stdout, _ = cli("calibrate", "-o", out, "--base", "rpi4-cpu", "--quick")
    assert code == 0 and "extends rpi4-cpu" in stdout
    from edgepack.target import load_target

    mine = load_target(str(out))
    assert mine.recipes == load_target("rpi4-cpu").recipes
    assert all("measured by edgepack calibrate" in mine.device.sources[k] for k in ("memory_bandwidth_gbps",
                                                                                   "dispatch_overhead_us"))
    code, stdout, _ = cli("inspect", SAMPLE_MODEL, "--target", out)
    assert code == 0 and "estimated (fp32" in stdout
    code, _, err = cli("calibrate", "-o", tmp_path / "x.txt")
    assert code == 2 and "must end in .toml" in err


@pytest.mark.parametrize(("where", "expected"), [("{tmp}/nodir/p.toml", "does not exist"),
                                                  ("/proc/edgepack-p.toml", "cannot write /proc/edgepack-p.toml"),
                                                  ("{tmp}", "must end in .toml")])
def test_calibrate_bad_output_is_one_line_before_measuring(tmp_path, cli, where, expected):
    code, out, err = cli("calibrate", "-o", where.format(tmp=tmp_path), "--quick")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_a_scalar_bool_input_builds_on_generated_inputs(tmp_path):
    """If control flow steered by a scalar bool input: the generated samples are 0-d arrays (numpy's
    generators return scalars for shape (), and onnxruntime refuses a numpy bool scalar)."""
    from conftest import make_model
    from onnx import TensorProto, helper

    def branch(op, name):
        return helper.make_graph([helper.make_node(op, ["x"], [f"o_{name}"])], name, [],
                                 [helper.make_tensor_value_info(f"o_{name}", TensorProto.FLOAT, [1, 8])])

    model = make_model([helper.make_node("If", ["c"], ["y"], then_branch=branch("Relu", "t"),
                                         else_branch=branch("Sigmoid", "e"))],
                       [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    path = tmp_path / "if_bool.onnx"
    onnx.save(model, str(path))
    [r] = build([path], [load_target("rpi5-cpu")], tmp_path / "out")
    assert r.manifest["verification"]["passed"]
