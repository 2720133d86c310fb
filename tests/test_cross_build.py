"""Cross-building (issue #22): the speed gate rests on a host measurement only where the build host can
stand in for the target; format limits are planned before any stage runs."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
from conftest import SAMPLE_MODEL, make_model
from onnx import TensorProto, helper, numpy_helper

from edgepack import cross, limits_plan
from edgepack.backends.onnxruntime import OnnxRuntimeBackend
from edgepack.build import build
from edgepack.errors import StageError
from edgepack.target import load_target

X86_VNNI = cross.Host("x86_64", frozenset({"avx2", "fma", "avx512_vnni", "sse4_2"}))
X86_HASWELL = cross.Host("x86_64", frozenset({"avx2", "fma", "sse4_2"}))
PI5_HOST = cross.Host("arm64", frozenset({"fp", "asimd", "asimdhp", "fphp", "asimddp", "atomics"}))
PI4_HOST = cross.Host("arm64", frozenset({"fp", "asimd", "crc32"}))


@pytest.mark.parametrize(("host", "target", "ok", "words"), [
    (X86_VNNI, "intel-openvino", True, "x86_64 build host with the target's avx2, fma, avx_vnni stands in"),
    (X86_HASWELL, "intel-openvino", False, "lacks the target's avx_vnni"),
    (X86_VNNI, "rpi5-cpu", False, "a build host that is not arm64 cannot stand in for this arm64 target"),
    (PI5_HOST, "rpi5-cpu", True, "stands in"),
    (PI5_HOST, "rpi4-cpu", True, "stands in"),  # the Pi 4 lists only neon: a Pi 5 runs its kernels
    (PI4_HOST, "rpi5-cpu", False, "lacks the target's fp16, dotprod"),
])
def test_stand_in_needs_the_isa_family_and_the_profiles_features(host, target, ok, words):
    got = cross.stands_in(load_target(target), host)
    assert got.ok is ok
    assert words in got.why
    assert "EPYC" not in got.why and "Xeon" not in got.why  # words that go into a bundle name no host model


def test_this_host_reads_its_isa():
    host = cross.this_host()
    assert host.isa in ("x86_64", "arm64")
    assert host.flags  # /proc/cpuinfo has flags on Linux


def _speed_of(manifest: dict) -> list[dict]:
    return [a["speed"] for a in manifest["models"][0]["quantization"]["attempts"] if "speed" in a]


def _build(tmp_path, host, monkeypatch, target="rpi5-cpu", name="out"):
    monkeypatch.setattr(cross, "this_host", lambda: host)
    (r,) = build([SAMPLE_MODEL], [load_target(target)], tmp_path / name,
                 calibration=SAMPLE_MODEL.parent / "calibration")
    return r


def test_pi_speed_gate_rests_on_the_cost_model_on_an_x86_host(tmp_path, monkeypatch):
    r = _build(tmp_path, X86_VNNI, monkeypatch)
    (speed,) = _speed_of(r.manifest)
    assert speed["rests_on"] == "cost model"
    assert "cannot stand in" in speed["why"]
    assert 0 < speed["estimated_ratio"] <= 1.1 and speed["candidate_ms"] > 0 and speed["fp32_ms"] > 0
    record = json.loads(r.record.read_text())
    # a host timing that would decide nothing is not run (issue #20); the shipped file's is, once, by verify
    assert "candidate_latency" not in record["measurements"]
    assert record["measurements"]["host_latency"]["model"]["ratio"] > 0


def test_pi_speed_gate_rests_on_the_host_on_an_aarch64_host(tmp_path, monkeypatch):
    r = _build(tmp_path, PI5_HOST, monkeypatch)
    (speed,) = _speed_of(r.manifest)
    assert speed == {"rests_on": "host measurement",
                     "why": "an arm64 build host with the target's neon, fp16, dotprod stands in for this arm64 target"}
    (lat,) = json.loads(r.record.read_text())["measurements"]["candidate_latency"]["model"]
    assert lat["decides"] is True


def test_cost_model_drops_a_candidate_it_prices_slower(tmp_path, monkeypatch):
    from edgepack import speed_basis

    monkeypatch.setattr(speed_basis, "estimated_ratio", lambda *a: (1.5, {"fp32_ms": 1.0, "candidate_ms": 1.5}))
    r = _build(tmp_path, X86_VNNI, monkeypatch)
    q = r.manifest["models"][0]["quantization"]
    assert q["recipe"] == "none"
    dropped = q["attempts"][0]
    assert dropped["outcome"] == "dropped" and "estimated 1.50x the fp32 latency on the target" in dropped["reason"]
    assert dropped["speed"]["rests_on"] == "cost model"


def test_the_manifest_does_not_change_with_the_hosts_timing(tmp_path, monkeypatch):
    """Off the stand-in path the host timing decides nothing: a host that times int8 10x slower gives the same bundle."""
    from edgepack.backends.onnxruntime import OnnxRuntimeBackend as B

    a = _build(tmp_path, X86_VNNI, monkeypatch, name="a")
    real = B.time_candidate
    calls = []

    def slow(self, *args):
        calls.append(1)
        lat = real(self, *args)
        return None if lat is None else {**lat, "ratio": 10.0}

    monkeypatch.setattr(B, "time_candidate", slow)
    b = _build(tmp_path, X86_VNNI, monkeypatch, name="b")
    assert (a.bundle / "manifest.json").read_bytes() == (b.bundle / "manifest.json").read_bytes()
    assert not calls  # off the stand-in path the candidates are not timed at all (issue #20)
    c = _build(tmp_path, PI5_HOST, monkeypatch, name="c")  # where the host stands in, the same timing decides
    assert c.manifest["models"][0]["quantization"]["recipe"] == "none" and calls


# ---------------------------------------------------------------------------------------------- format limits


def _mlp(width=64, layers=3) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((width, width)) / 8).astype(np.float32), f"w{i}"))
        src = "x" if i == 0 else f"h{i - 1}"
        nodes += [helper.make_node("MatMul", [src, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], ["y" if i == layers - 1 else f"h{i}"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)


def test_predicted_bytes_per_recipe():
    sizes = limits_plan.predicted_bytes(_mlp())
    w = 3 * 64 * 64 * 4
    assert sizes == {"none": w, "fp16": w // 2, "dynamic-int8": w // 4, "static-int8": w // 4, "static-w8a16": w // 4}


def test_the_2gb_ort_limit_is_the_backends():
    cap, what = OnnxRuntimeBackend().format_limit(load_target("rpi5-cpu"))
    assert cap == 2**31 - 1 and "flatbuffer" in what


@pytest.fixture
def small_cap(monkeypatch):
    """The ORT format's limit scaled down to 2.5 MB: a 3.1 MB fp32 model no longer fits, its int8 forms do."""
    monkeypatch.setattr(OnnxRuntimeBackend, "format_limit", lambda self, p: (2_500_000, "a test's ORT-format limit"))


def test_a_recipe_beyond_the_format_limit_is_planned_away(tmp_path, small_cap):
    path = tmp_path / "mlp.onnx"
    onnx.save(_mlp(512), str(path))
    (r,) = build([path], [load_target("rpi5-cpu")], tmp_path / "out")
    assert r.manifest["models"][0]["quantization"]["recipe"] == "dynamic-int8"
    unfit = limits_plan.plan(onnx.load(str(path)), load_target("rpi5-cpu"), OnnxRuntimeBackend(), False, "mlp.onnx")
    assert list(unfit) == ["none"]
    assert "its .ort would hold about 3.1 MB of weights, beyond a test's ORT-format limit of 2.5 MB (planned" in unfit["none"]


def test_no_fitting_recipe_is_refused_before_any_work(tmp_path, small_cap, cli):
    path = tmp_path / "mlp.onnx"
    onnx.save(_mlp(512), str(path))
    start = time.perf_counter()
    code, _, err = cli("build", path, "--target", "ios-coreml", "-o", tmp_path / "out")  # fp16 24 KB fits
    assert code == 0, err
    code, _, err = cli("build", path, "--target", "android-nnapi", "-o", tmp_path / "out2")
    assert time.perf_counter() - start < 30
    assert code == 2 and err.count("\n") == 1
    assert "only static-int8 (about 0.8 MB) fits a test's ORT-format limit of 2.5 MB" in err and "pass --calibration DIR" in err
    assert not (tmp_path / "out2").exists()


def test_plan_without_any_fitting_recipe_names_each():
    profile = load_target("rpi5-cpu")

    class Tiny:
        bundle_suffix = ".ort"

        def format_limit(self, p):
            return 100, "a 100-byte limit"

    with pytest.raises(StageError, match="no recipe fits .*static-int8: its .ort would hold about"):
        limits_plan.plan(_mlp(), profile, Tiny(), True, "mlp.onnx")


@pytest.mark.parametrize(("host", "exact"), [(X86_VNNI, True), (PI4_HOST, True), (X86_HASWELL, False)])
def test_int8_kernels_of_the_host(host, exact):
    assert cross.int8_kernels(host).ok is exact


def test_int8_judged_on_kernels_unlike_the_devices_is_named_in_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setattr(cross, "this_host", lambda: X86_HASWELL)
    (r,) = build([SAMPLE_MODEL], [load_target("rpi4-cpu")], tmp_path / "a", calibration=SAMPLE_MODEL.parent / "calibration")
    named = [d for d in r.manifest["recipe"]["decisions"] if "host-dependent judgement" in d]
    assert len(named) == 1 and "without VNNI" in named[0]
    record = json.loads(r.record.read_text())["measurements"]["host_int8_kernels"]
    assert record["exact"] is False
    monkeypatch.setattr(cross, "this_host", lambda: X86_VNNI)
    (r,) = build([SAMPLE_MODEL], [load_target("rpi4-cpu")], tmp_path / "b", calibration=SAMPLE_MODEL.parent / "calibration")
    assert not [d for d in r.manifest["recipe"]["decisions"] if "host-dependent" in d]


def test_a_graph_the_cost_model_cannot_price_rests_on_the_profiles_rules(tmp_path, monkeypatch):
    from edgepack import speed_basis

    def broken(*a):
        raise ValueError("no shapes")

    monkeypatch.setattr(speed_basis, "estimated_ratio", broken)
    r = _build(tmp_path, X86_VNNI, monkeypatch)
    (speed,) = _speed_of(r.manifest)
    assert r.manifest["models"][0]["quantization"]["recipe"] == "static-int8"
    assert speed["rests_on"] == "profile rules" and "could not price this graph (no shapes)" in speed["why"]


def test_weight_only_int8_on_a_cross_build_rests_on_the_cost_model(tmp_path, monkeypatch):
    """prepare's keep-or-fold gate for weight-only int8 is not timed on a host that cannot stand in."""
    from test_rewrite_check import _weight_only_int8

    from edgepack.build import build
    from edgepack.target import load_target

    def no_timing(*args, **kwargs):
        raise AssertionError("a cross-build must not time the host")

    monkeypatch.setattr(cross, "this_host", lambda: X86_VNNI)
    monkeypatch.setattr("edgepack.stages.prepare.compare_latency", no_timing)  # (verify's timing is information)
    path = tmp_path / "wo8.onnx"
    onnx.save(_weight_only_int8(), str(path))
    [r] = build([path], [load_target("rpi5-cpu")], tmp_path / "out")
    [line] = [d for d in r.manifest["recipe"]["decisions"] if d.startswith("prepare: model: weight-only int8 weights")]
    assert "by the cost model (a build host that is not arm64 cannot stand in for this arm64 target)" in line, line
