"""calibrate (issue #15): robust timing, interference detection, the profile's measured cost-model
parameters and session, and the estimate using them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import make_model
from onnx import TensorProto, helper, numpy_helper

from edgepack.estimate import calibrate, latency, params, robust
from edgepack.estimate.robust import Timing
from edgepack.target import load_target
from edgepack.transforms import infer_shapes


class _FakeSession:
    """sess.run sleeping through a list of durations (seconds), the last one repeated."""

    def __init__(self, durations):
        self.durations = list(durations)
        self.calls = 0

    def run(self, _outputs, _feed):
        import time

        d = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        t = time.perf_counter()
        while time.perf_counter() - t < d:
            pass


def test_time_session_stops_when_round_medians_agree_and_keeps_the_fastest():
    t = robust.time_session(_FakeSession([0.0005]), {}, budget_s=0.2)
    assert t.stable and t.rounds >= robust.STABLE_ROUNDS and t.spread <= robust.SPREAD_BOUND
    assert 0.4 < t.ms < 0.7


def test_time_session_reports_an_unstable_figure():
    # alternating slow and fast rounds never settle: the budget ends it, the spread says so
    # 2 warm-up runs and a probe at 2 ms: rounds of 0.05 / 5 / 0.002 = 5 runs, alternately slow and fast
    durations = [0.002] * 3 + ([0.002] * 5 + [0.0005] * 5) * 10
    t = robust.time_session(_FakeSession(durations), {}, budget_s=0.05, max_rounds=6)
    assert not t.stable and t.spread > robust.SPREAD_BOUND
    assert t.ms < 1.0  # min of the round medians: the undisturbed speed


def test_interference_is_retried_then_warned():
    refs = iter([1.0, 1.5, 1.1, 1.6])  # the reference kernel runs 50-60% slower than its best, twice
    out: dict = {}
    calls = []
    figures = calibrate._group("gemm-conv", lambda: calls.append(1) or {"x": 1.0},  # noqa: SLF001
                               lambda: Timing(next(refs), 0.0, 3, True), out, calibrate.SMALL)
    assert figures == {"x": 1.0} and len(calls) == 2  # measured again once
    assert out["reference_drift"]["gemm-conv"] == pytest.approx(0.6)
    assert "gemm-conv" in out["warnings"][0] and "+60%" in out["warnings"][0]


def test_a_group_slow_throughout_is_caught_against_the_best_reference():
    """Before and after agree, but both are slower than the reference was earlier (a second core lost
    for the whole group): still interference."""
    out: dict = {"reference_best_ms": 1.0}
    refs = iter([1.7, 1.7, 1.7, 1.7])
    calibrate._group("depthwise", lambda: {}, lambda: Timing(next(refs), 0.0, 3, True), out, calibrate.SMALL)  # noqa: SLF001
    assert out["reference_drift"]["depthwise"] == pytest.approx(0.7) and "depthwise" in out["warnings"][0]


def test_quiet_group_is_measured_once_without_warning():
    refs = iter([1.0, 1.02])
    out: dict = {}
    calls = []
    calibrate._group("memory", lambda: calls.append(1) or {}, lambda: Timing(next(refs), 0.0, 3, True),  # noqa: SLF001
                     out, calibrate.Sizes())
    assert len(calls) == 1 and "warnings" not in out


def _conv_model():
    w = numpy_helper.from_array(np.zeros((64, 64, 3, 3), np.float32), "w")
    return infer_shapes(make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 32, 32])],
                                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 32, 32])], [w]))


def test_measured_efficiency_in_the_profile_prices_the_op_class():
    base = load_target("rpi5-cpu")
    measured = dataclasses.replace(base, device=dataclasses.replace(
        base.device, cost_model={"eff_conv": 2 * latency.EFFICIENCY["conv"]}))
    (a,) = latency.breakdown(_conv_model(), base, "fp32").nodes
    (b,) = latency.breakdown(_conv_model(), measured, "fp32").nodes
    assert b.compute_us == pytest.approx(a.compute_us / 2, rel=1e-9)


def test_session_settings_default_to_the_bundle_and_follow_the_estimate_table():
    base = load_target("rpi5-cpu")
    assert params.session(base)[:2] == (base.optimization_level, "nchw")
    x86 = dataclasses.replace(base, estimate_session={"optimization_level": "basic", "layout": "nchwc", "threads": 2})
    prm = params.for_profile(x86)
    assert (prm.level, prm.layout, prm.threads, prm.fused) == ("basic", "nchwc", 2, False)
    assert "level 'basic' with the NCHWc layout, 2 thread(s)" in params.describe(prm, x86)


def test_profile_text_is_a_loadable_profile_with_sources_and_warnings(tmp_path):
    spread = {k: 0.02 for k in ("gemm", "conv3x3", "conv1x1", "conv3x3_g4", "dw16", "lstm", "one", "chain",
                                "add_dram", "add_cache", "add_ladder0", "conv3x3_s2_single", "Sigmoid")}
    m = {"threads": 2, "level": "all", "layout": "nchwc", "spread": spread, "gemm_fp32_gops": 80.0,
         "conv_fp32_gops": 60.0, "conv_1x1_fp32_gops": 70.0, "gemm_int8_gops": 200.0, "add_gbps": 20.0,
         "dispatch_us": 1.0, "reference_gops_start": 80.0, "reference_gops_end": 60.0,
         "reference_drift": {"gemm-conv": 0.3}, "warnings": ["gemm-conv: the reference GEMM moved +30%"],
         "cache_bytes": 1e6, "cache_gbps": 60.0, "peak_fp32_gops": 100.0, "peak_int8_gops": 250.0,
         "cost_model": {"eff_conv": 0.5, "strided_conv": 0.8, "op_Sigmoid": 12.0}}
    from edgepack.estimate.calibrate_profile import profile_text

    path = tmp_path / "dev.toml"
    text = profile_text("rpi5-cpu", m, "Test CPU", "dev")
    path.write_text(text)
    p = load_target(str(path))
    assert p.estimate_session == {"optimization_level": "all", "layout": "nchwc", "threads": 2,
                                  "note": p.estimate_session["note"]}
    assert p.device.cost_model == {"eff_conv": 0.5, "strided_conv": 0.8, "op_Sigmoid": 12.0}
    assert "spread of the kept round medians up to 2.0%" in p.device.sources["cost_model.eff_conv"]
    assert "# WARNING: gemm-conv" in text
    assert params.for_profile(p).element_ops["Sigmoid"] == 12.0


# ------------------------------------------------------------------ N threads: the cores probe


class _FakeProbe(robust.CoresProbe):
    """A CoresProbe whose speedups come from a list (the last repeated), without sessions."""

    def __init__(self, speedups, threads=2):
        self.threads, self.best, self._s, self.reads = threads, 0.0, list(speedups), 0

    def speedup(self, window_s=robust.PROBE_WINDOW_S):
        s = self._s.pop(0) if len(self._s) > 1 else self._s[0]
        self.reads += 1
        self._note(s)
        return s


def test_the_probe_is_judged_against_the_best_it_has_seen(monkeypatch):
    monkeypatch.setattr(robust, "CORES_POLL_S", 0.0)
    p = _FakeProbe([1.8, 1.3, 1.3, 1.75])
    assert p.check().ok  # 1.8: the best so far
    c = p.wait(budget_s=5.0)  # 1.3, 1.3 (below 0.85 x 1.8), then 1.75
    assert c.ok and c.speedup == 1.75 and p.reads == 4  # waited through both slow readings
    assert p.stale(1.3) and not p.stale(1.6)
    slow = _FakeProbe([1.9, 1.2])
    slow.check()
    c = slow.wait(budget_s=0.0)  # no time to wait: the slow reading, not ok
    assert not c.ok and c.speedup == 1.2 and c.waited_s == 0.0


def test_an_impossible_reading_does_not_set_the_bar():
    p = _FakeProbe([3.5, 1.8])  # 2 threads 3.5x as fast as one: a slowed one-thread window
    p.speedup()
    assert p.best == 2.0 and not p.stale(1.75)


def test_a_group_whose_cores_went_away_is_measured_again():
    refs = iter([1.0] * 8)
    out: dict = {"cores_wait_left_s": 0.0}
    calls = []
    probe = _FakeProbe([1.8, 1.8, 1.1, 1.8, 1.8])  # seed, before, after (lost), before, after
    probe.speedup()
    calibrate._group("gemm-conv", lambda: calls.append(1) or {}, lambda: Timing(next(refs), 0.0, 3, True),  # noqa: SLF001
                     out, calibrate.SMALL, probe)
    assert len(calls) == 2 and out["cores"]["gemm-conv"] == {"speedup_before": 1.8, "waited_s": 0.0, "speedup_after": 1.8}
    assert calibrate._stale_groups(out, probe) == []  # noqa: SLF001


def test_groups_measured_before_the_best_was_seen_are_stale_and_warned():
    out = {"cores": {"overhead": {"speedup_before": 1.3, "waited_s": 0.0, "speedup_after": 1.32},
                     "memory": {"speedup_before": 1.8, "waited_s": 0.0, "speedup_after": 1.79}}}
    probe = _FakeProbe([1.82])
    probe.speedup()
    assert calibrate._stale_groups(out, probe) == ["overhead"]  # noqa: SLF001
    calibrate._cores_warnings(out, probe)  # noqa: SLF001
    (w,) = out["warnings"]
    assert w.startswith("overhead: 2 threads ran only 1.30x") and "best 1.82x" in w


def test_parallel_terms_come_from_the_add_ladder():
    m = {"threads": 2, "add_cache_gbps": 100.0, "par_element_ns": {"Relu": 0.03},
         "ladder": [(12.0 * 65536, 110.0), (12.0 * 85196, 104.0), (12.0 * 110755, 220.0), (12.0 * 143982, 205.0)]}
    terms = calibrate._parallel_terms(m, elem_rate=2.0)  # noqa: SLF001
    assert terms == {"parallel_elems": 110755.0, "par_cache_gbps": 220.0, "par_op_Relu": 0.06}
    never = {**m, "ladder": [(12.0 * 65536, 110.0), (12.0 * 143982, 105.0)]}
    assert calibrate._parallel_terms(never, elem_rate=2.0) == {}  # noqa: SLF001


def _add_model(n: int):
    return infer_shapes(make_model([helper.make_node("Add", ["x", "x"], ["y"])],
                                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])]))


def test_elementwise_nodes_from_parallel_elems_on_are_priced_split_over_the_threads():
    base = load_target("rpi5-cpu")
    dev = dataclasses.replace(base.device, cache_bandwidth_gbps=100.0, cache_bytes=64e6)
    serial = dataclasses.replace(base, device=dev)
    split = dataclasses.replace(base, device=dataclasses.replace(
        dev, cost_model={"parallel_elems": 100_000.0, "par_cache_gbps": 200.0}))
    for n, faster in ((50_000, False), (200_000, True)):
        (a,) = latency.breakdown(_add_model(n), serial, "fp32").nodes
        (b,) = latency.breakdown(_add_model(n), split, "fp32").nodes
        assert b.memory_us == pytest.approx(a.memory_us / 2 if faster else a.memory_us, rel=1e-9)
