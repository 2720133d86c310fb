"""--verify-on-target / verify --on-target with the emulator replaced by a stand-in (no qemu needed).

The stand-in runs the file with the host's onnxruntime (as the emulated runner would, level 'disable')
and can change its answers, so the decisions that follow an aarch64 result are checked here; the real
emulated runs are in tests/test_on_target_real.py (skipped with the reason when the emulator is absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgepack
from edgepack import emulator
from edgepack.runtime.ort import run_model

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "sample_apps" / "model" / "digits_cnn.onnx"
CALIB = ROOT / "sample_apps" / "model" / "calibration"
PIS = ["rpi4-cpu", "rpi5-cpu"]


class FakeEmulator:
    """Stands in for emulator.run: host onnxruntime, optionally wrong (``wrong``: call numbers to spoil)."""

    def __init__(self, wrong=(), crash=()):
        self.calls: list[dict] = []
        self.wrong, self.crash = set(wrong), set(crash)

    def __call__(self, model_path, feeds, *, arch="aarch64", cpu=None, level="disable", **_):
        n = len(self.calls)
        self.calls.append({"model": Path(model_path).name, "cpu": cpu, "level": level, "feeds": len(feeds)})
        if n in self.crash:
            msg = f"the emulated onnxruntime crashed on {Path(model_path).name} (SIGSEGV)"
            raise emulator.EmulatedRunError(msg)
        outputs = run_model(Path(model_path), list(feeds), level=level)
        if n in self.wrong:  # another top-1 class for every sample
            outputs = [{k: np.roll(v, 1, axis=-1) for k, v in o.items()} for o in outputs]
        env = emulator.Environment("aarch64", (cpu or "max").lower(), "9.9.9-fake", "2.0", "3.11.2", "7.2.22",
                                   "x86_64", ("fp", "asimd"))
        return emulator.EmulatedRun(outputs, env, 12.5)


@pytest.fixture
def fake(monkeypatch):
    stand_in = FakeEmulator()
    monkeypatch.setattr(emulator, "available", lambda arch="aarch64", root=None: (True, "stand-in"))
    monkeypatch.setattr(emulator, "qemu_cpu", lambda name, arch="aarch64": (name or "max").lower())
    monkeypatch.setattr(emulator, "run", stand_in)
    return stand_in


@pytest.fixture
def absent(monkeypatch):
    def run(*args, **kwargs):
        raise AssertionError("the emulator must not run")

    monkeypatch.setattr(emulator, "available", lambda arch="aarch64", root=None: (
        False, f"no {arch} emulator root at /nowhere: run `edgepack emulator setup {arch}`"))
    monkeypatch.setattr(emulator, "run", run)


def _build(out: Path, targets=PIS, **kw) -> dict[str, dict]:
    results = edgepack.build(DIGITS, targets, out, calibration=CALIB, **kw)
    return {r.target: r.manifest for r in results}


def _record(out: Path, target: str) -> dict:
    return json.loads((out / f"{target}.build.json").read_text())


def test_without_the_flag_nothing_runs_emulated(absent, tmp_path):
    manifests = _build(tmp_path / "out", ["rpi5-cpu"])
    ver = manifests["rpi5-cpu"]["verification"]
    assert "ran_on" not in ver and ver["checked"]["runtime"] == "onnxruntime CPU"
    assert "on_target" not in _record(tmp_path / "out", "rpi5-cpu")["measurements"]
    assert not any("verify-on-target" in d for d in manifests["rpi5-cpu"]["recipe"]["decisions"])


def test_flag_without_the_emulator_is_one_error_before_any_work(absent, tmp_path, cli):
    code, out, err = cli("build", DIGITS, "--target", "rpi4-cpu", "-o", tmp_path / "out", "--verify-on-target")
    assert code == 2 and out == ""
    assert err.startswith("error: --verify-on-target needs the aarch64 emulator: ") and err.count("\n") == 1
    assert "`edgepack emulator setup aarch64`" in err
    assert not (tmp_path / "out").exists()
    code, _, err = cli("compare", DIGITS, "--targets", "rpi5-cpu", "-o", tmp_path / "cmp", "--verify-on-target")
    assert code == 2 and "edgepack emulator setup aarch64" in err and not (tmp_path / "cmp").exists()


def test_missing_qemu_names_both_steps(monkeypatch, tmp_path, cli):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64-static anywhere
    code, _, err = cli("build", DIGITS, "--target", "rpi4-cpu", "-o", tmp_path / "out", "--verify-on-target")
    assert code == 2
    assert "apt-get install qemu-user-static" in err and "then run `edgepack emulator setup aarch64`" in err


def test_targets_that_cannot_be_emulated_need_no_emulator(absent, tmp_path):
    manifests = _build(tmp_path / "out", ["android-nnapi"], verify_on_target=True)
    ver = manifests["android-nnapi"]["verification"]
    assert "ran_on" not in ver
    assert any("--verify-on-target: android-nnapi's runtime build cannot be emulated" in d
               for d in manifests["android-nnapi"]["recipe"]["decisions"])


def test_pi_targets_are_judged_on_the_emulated_runtime(fake, tmp_path):
    out = tmp_path / "out"
    manifests = _build(out, verify_on_target=True)
    # one emulated run per target: the artifact about to ship, on the verification samples, as stored
    assert [(c["cpu"], c["level"]) for c in fake.calls] == [("Cortex-A72", "disable"), ("Cortex-A76", "disable")]
    for target, cpu in (("rpi4-cpu", "cortex-a72"), ("rpi5-cpu", "cortex-a76")):
        doc = manifests[target]
        ver = doc["verification"]
        assert ver["ran_on"] == {"arch": "aarch64", "cpu": cpu, "runtime": "onnxruntime 9.9.9-fake (aarch64 wheel)",
                                 "emulated": "qemu user-mode"}
        assert ver["checked"]["runtime"].startswith("onnxruntime 9.9.9-fake (aarch64 wheel)")
        assert ver["summary"].startswith(f"verified, n=32: on aarch64 onnxruntime 9.9.9-fake ({cpu}, qemu user-mode): ")
        chosen = [a for a in doc["recipe"]["quantization"]["attempts"] if a["outcome"] == "chosen"]
        assert chosen[0]["reason"].startswith("on aarch64 onnxruntime")
        assert any(d.startswith("verify: model: shipped model.ort on the build host (onnxruntime CPU): passed")
                   for d in doc["recipe"]["decisions"])
        # the bundle names no build host, qemu version or time; the build record does
        text = (out / target / "manifest.json").read_text()
        assert "x86_64" not in text and "7.2.22" not in text and "12.5" not in text
        rec = _record(out, target)["measurements"]["on_target"]["model"]
        assert rec["environment"]["qemu"] == "7.2.22" and rec["environment"]["host_machine"] == "x86_64"
        assert rec["emulated_wall_s"] == 12.5 and "not a latency" in rec["note"]
        assert rec["samples"] == 32 and rec["outcome"] == "passed"
        assert rec["vs_host"]["logits"]["max_abs_err"] == 0.0
        assert rec["vs_host"]["logits"]["cosine_min"] == 1.0


def test_manifest_is_byte_identical_across_builds(fake, tmp_path):
    _build(tmp_path / "a", ["rpi5-cpu"], verify_on_target=True)
    _build(tmp_path / "b", ["rpi5-cpu"], verify_on_target=True)
    assert (tmp_path / "a/rpi5-cpu/manifest.json").read_bytes() == (tmp_path / "b/rpi5-cpu/manifest.json").read_bytes()


def test_a_candidate_failing_on_the_target_falls_through_to_the_next_recipe(fake, tmp_path):
    fake.wrong = {0}  # static int8 passes on the host, but not on the (stand-in) aarch64 runtime
    manifests = _build(tmp_path / "out", ["rpi5-cpu"], verify_on_target=True)
    q = manifests["rpi5-cpu"]["recipe"]["quantization"]
    int8 = next(a for a in q["attempts"] if a["recipe"] == "static-int8")
    assert int8["outcome"] == "dropped"
    assert int8["reason"].startswith("outside tolerance on aarch64 onnxruntime 9.9.9-fake (cortex-a76, qemu user-mode): ")
    assert int8["reason"].endswith("(it passed on the build host)")
    assert q["recipe"] == "none"  # the next recipe, judged on the target's runtime too
    assert len(fake.calls) == 2
    assert manifests["rpi5-cpu"]["verification"]["ran_on"]["cpu"] == "cortex-a76"


def test_a_candidate_the_target_runtime_cannot_run_is_dropped(fake, tmp_path):
    fake.crash = {0}
    manifests = _build(tmp_path / "out", ["rpi4-cpu"], verify_on_target=True)
    q = manifests["rpi4-cpu"]["recipe"]["quantization"]
    int8 = next(a for a in q["attempts"] if a["recipe"] == "static-int8")
    assert int8["outcome"] == "dropped"
    assert int8["reason"] == ("it does not run on the target's runtime under emulation: the emulated onnxruntime "
                              "crashed on model.ort (SIGSEGV)")
    assert q["recipe"] == "none"


def test_no_recipe_passing_on_the_target_is_target_not_built(fake, tmp_path, cli):
    fake.wrong = {0, 1}
    code, _, err = cli("build", DIGITS, "--target", "rpi5-cpu", "-o", tmp_path / "out", "--calibration", CALIB,
                       "--verify-on-target")
    assert code == 1
    assert "target not built: rpi5-cpu: quantize:" in err and "outside tolerance on aarch64" in err


def test_verify_on_target_runs_the_reference_pair_emulated(fake, tmp_path, cli):
    _build(tmp_path / "out", ["rpi4-cpu"], verify_on_target=True)
    fake.calls.clear()
    code, out, _ = cli("verify", tmp_path / "out" / "rpi4-cpu", "--on-target")
    assert code == 0
    assert [c["cpu"] for c in fake.calls] == ["cortex-a72"]  # from the manifest's ran_on
    assert "(on aarch64 onnxruntime 9.9.9-fake (cortex-a72, qemu user-mode))" in out
    fake.wrong = {1}
    code, out, err = cli("verify", tmp_path / "out" / "rpi4-cpu", "--on-target")
    assert code == 1 and "on aarch64 onnxruntime 9.9.9-fake (cortex-a72, qemu user-mode): output 'logits'" in out


def test_verify_on_target_takes_the_builtin_profile_cpu_without_ran_on(fake, tmp_path, cli):
    _build(tmp_path / "out", ["rpi5-cpu"])  # built without the flag: no ran_on in the manifest
    assert cli("verify", tmp_path / "out" / "rpi5-cpu", "--on-target")[0] == 0
    assert [c["cpu"] for c in fake.calls] == ["Cortex-A76"]


def test_verify_on_target_refuses_bundles_it_cannot_emulate(fake, tmp_path, cli):
    _build(tmp_path / "out", ["android-nnapi"])
    code, out, err = cli("verify", tmp_path / "out" / "android-nnapi", "--on-target")
    assert code == 2 and out == ""
    assert err == "error: --on-target: the bundle of target 'android-nnapi': its runtime build cannot be emulated here\n"
    assert not fake.calls


def test_verify_on_target_without_the_emulator(absent, tmp_path, cli):
    _build(tmp_path / "out", ["rpi4-cpu"])
    code, _, err = cli("verify", tmp_path / "out" / "rpi4-cpu", "--on-target")
    assert code == 2 and "--on-target needs the aarch64 emulator" in err and "edgepack emulator setup aarch64" in err
