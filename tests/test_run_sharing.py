"""Build speed (#20): each model runs once per purpose, verification samples run concurrently through one
session with outputs identical to serial runs, and the host timing stops as soon as its answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import tiny_cnn

from edgepack.metrics.vector import cosine, dot, norm
from edgepack.runtime import ort as ort_runtime
from edgepack.runtime import timing


def _samples(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    path = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), str(path))
    return path


# ------------------------------------------------------------------------------------ runs on this host


def test_concurrent_runs_give_the_serial_outputs(cnn: Path, monkeypatch) -> None:
    inputs = _samples(9)
    monkeypatch.setattr(ort_runtime, "RUNNERS", 1)
    serial = ort_runtime.run_model(cnn, inputs)
    monkeypatch.setattr(ort_runtime, "RUNNERS", 2)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert ort_runtime.run_workers(len(inputs), lean=False) == 2
    together = ort_runtime.run_model(cnn, inputs)
    assert len(together) == len(serial) == 9
    for s, t in zip(serial, together):  # same order, bit for bit
        assert s.keys() == t.keys() and all(np.array_equal(s[k], t[k]) for k in s)
    # and each is what a fresh session gives for that sample alone
    alone = ort_runtime.run_model(cnn, [inputs[4]])[0]
    assert np.array_equal(alone["y"], together[4]["y"])


def test_large_models_and_single_samples_run_one_at_a_time(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert ort_runtime.run_workers(32, lean=True) == 1
    assert ort_runtime.run_workers(1, lean=False) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert ort_runtime.run_workers(32, lean=False) == 1


def test_a_failing_sample_is_one_stage_error(cnn: Path) -> None:
    from edgepack.errors import StageError

    inputs = _samples(4)
    inputs[2] = {"x": np.zeros((1, 3, 9, 9), np.float32)}  # the wrong size
    with pytest.raises(StageError, match="onnxruntime failed running the model"):
        ort_runtime.run_model(cnn, inputs)


def test_vector_helpers_match_numpy_blas() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(46_200), rng.standard_normal(46_200)
    assert dot(a, b) == pytest.approx(float(np.dot(a, b)), rel=1e-12)
    assert norm(a) == pytest.approx(float(np.linalg.norm(a)), rel=1e-12)
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-15)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), np.ones(3)) == 0.0


# ------------------------------------------------------------------------------------ the statistical stop


def _fake_clock(monkeypatch) -> None:
    """Each runner returns its own 'milliseconds': the timing loop's decisions, without the host's noise."""
    monkeypatch.setattr(timing, "elapsed_ms", lambda fn: fn())


def _runner(values):
    it = iter(values)
    return lambda: next(it)


def test_median_interval_is_the_sign_test_interval() -> None:
    assert timing.median_interval([1.0] * 7) is None  # 7 values cannot reach 99%
    assert timing.min_pairs() == 8  # 1 - 2/2^8 = 0.992
    assert timing.median_interval([float(v) for v in range(8)]) == (0.0, 7.0)
    lo, hi = timing.median_interval([float(v) for v in range(40)])
    assert 0.0 < lo < 19.5 < hi < 39.0  # narrower with more pairs


def test_clear_ratio_stops_at_the_fewest_pairs(monkeypatch) -> None:
    _fake_clock(monkeypatch)
    calls = {"a": 0, "b": 0}

    def a():
        calls["a"] += 1
        return 10.0 + 0.1 * (calls["a"] % 3)

    def b():
        calls["b"] += 1
        return 30.0 + 0.1 * (calls["b"] % 2)  # 3x slower: far above a 1.10 bar

    a_ms, b_ms, stop = timing.until_clear(a, b, clear_of=1.10, warmup=1, budget_s=60.0)
    assert len(a_ms) == len(b_ms) == stop["pairs"] == timing.min_pairs()
    assert calls == {"a": timing.min_pairs() + 1, "b": timing.min_pairs() + 1}  # + the warm-up pair
    assert "above 1.1" in stop["stopped"] and stop["ratio_interval"][0] > 1.10


def test_a_ratio_at_the_threshold_times_until_the_cap(monkeypatch) -> None:
    _fake_clock(monkeypatch)
    rng = np.random.default_rng(1)
    a = _runner([10.0] * 1000)
    b = _runner(list(10.0 * (1.10 + rng.normal(0, 0.05, 1000))))  # straddles the bar: never clear
    a_ms, _, stop = timing.until_clear(a, b, clear_of=1.10, warmup=0, budget_s=60.0, max_pairs=50)
    assert len(a_ms) == 50 and stop["stopped"] == "50 pairs"


def test_the_time_budget_bounds_an_undecided_gate(monkeypatch) -> None:
    _fake_clock(monkeypatch)
    rng = np.random.default_rng(2)
    a = _runner([10.0] * 10_000)
    b = _runner(list(10.0 * (1.10 + rng.normal(0, 0.05, 10_000))))
    a_ms, _, stop = timing.until_clear(a, b, clear_of=1.10, warmup=0, budget_s=0.0, max_pairs=10_000)
    assert len(a_ms) == timing.min_pairs() and stop["stopped"].startswith("time budget")


def test_a_measurement_stops_when_precise_enough(monkeypatch) -> None:
    _fake_clock(monkeypatch)
    a = _runner([20.0, 20.2, 19.9, 20.1] * 100)
    b = _runner([10.0, 10.1, 9.95, 10.05] * 100)
    a_ms, b_ms, stop = timing.until_clear(a, b, within=0.05, warmup=0, budget_s=60.0)
    assert len(a_ms) == timing.min_pairs() and "within" in stop["stopped"]
    assert np.median(b_ms) / np.median(a_ms) == pytest.approx(0.5, rel=0.02)


def test_compare_latency_with_a_bar_reports_its_stop(cnn: Path) -> None:
    sample = _samples(1)[0]
    lat = timing.compare_latency(cnn, cnn, sample, clear_of=1.10, stop_budget_s=0.5)
    assert lat["stop"]["pairs"] >= timing.min_pairs() and lat["ref"]["runs"] == lat["stop"]["pairs"]
    assert 0.2 < lat["ratio"] < 5  # the same model on both sides


# ------------------------------------------------------------------------------------ once per purpose


def test_reference_outputs_once_and_the_shipped_artifact_judged_once(tmp_path: Path, monkeypatch) -> None:
    """Two targets, one source model: its fp32 reference outputs are computed once for both; each
    target's chosen .ort is run on the verification samples once (the verify stage takes the
    selection's runs of that same file)."""
    from edgepack.build import build
    from edgepack.target import load_target

    model = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(batch=1), str(model))
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "x.npy", np.random.default_rng(0).standard_normal((24, 1, 3, 8, 8)).astype(np.float32))
    runs: list[tuple[str, str | None]] = []
    real, queued = ort_runtime.run_model, ort_runtime.queue_model_runs

    def counted(path, inputs, threads=1, level=None):
        runs.append((Path(path).name, level))
        return real(path, inputs, threads, level)

    def counted_queue(path, inputs, level=None, **kw):  # runs on the background lane
        runs.append((Path(path).name, level))
        return queued(path, inputs, level, **kw)

    monkeypatch.setattr(ort_runtime, "run_model", counted)
    monkeypatch.setattr(ort_runtime, "queue_model_runs", counted_queue)
    results = build([model], [load_target("rpi4-cpu"), load_target("rpi5-cpu")], tmp_path / "out", calibration=calib)
    assert [r.target for r in results] == ["rpi4-cpu", "rpi5-cpu"]
    # the reference outputs (the model as stored, also the rewrite check's baseline): once for both targets
    assert runs.count(("cnn.onnx", "disable")) == 1
    # every judged artifact ran once, in the recipe selection; the verify stage re-ran none of them
    shipped = [r for r in runs if r[0].endswith(".ort")]
    checked = [a for r in results for a in r.manifest["models"][0]["quantization"]["attempts"] if a.get("checked")]
    assert 1 <= len(shipped) <= len(checked)
    assert all(r.manifest["models"][0]["verification"]["passed"] for r in results)


# ------------------------------------------------------------------------------ built ahead


def _cnn_build(tmp_path: Path, name: str):
    from edgepack.build import build
    from edgepack.target import load_target

    model = tmp_path / "cnn.onnx"
    if not model.exists():
        onnx.save(tiny_cnn(batch=1), str(model))
        calib = tmp_path / "calib"
        calib.mkdir()
        np.save(calib / "x.npy", np.random.default_rng(0).standard_normal((24, 1, 3, 8, 8)).astype(np.float32))
    [result] = build([model], [load_target("rpi5-cpu")], tmp_path / name, calibration=tmp_path / "calib")
    return result


def _decisions(result) -> list[str]:
    import json

    return json.loads((result.bundle / "manifest.json").read_text())["recipe"]["decisions"]


def _bundle_bytes(result) -> dict[str, bytes]:
    return {p.relative_to(result.bundle).as_posix(): p.read_bytes() for p in sorted(result.bundle.rglob("*")) if p.is_file()}


def test_the_first_candidate_built_ahead_is_the_one_the_stage_uses(tmp_path: Path, monkeypatch) -> None:
    """The prepare stage builds, converts and runs the first candidate while its check runs; the quantize
    stage quantizes nothing again, and the bundle is byte for byte the one built without it."""
    from onnxruntime import quantization

    from edgepack.backends.onnxruntime import OnnxRuntimeBackend

    calls: list[str] = []
    real = quantization.quantize_static

    def counted(model_input, *a, **kw):
        calls.append(Path(model_input).name)
        return real(model_input, *a, **kw)

    monkeypatch.setattr(quantization, "quantize_static", counted)
    ahead = _cnn_build(tmp_path, "ahead")
    assert len(calls) == 1  # built once, in the prepare stage
    assert ahead.measurements["built_ahead"]["model"]["recipe"] == "static-int8"
    monkeypatch.setattr(OnnxRuntimeBackend, "builds_ahead", lambda self, ctx, m, model_class: False)
    plain = _cnn_build(tmp_path, "plain")
    assert len(calls) == 2 and "built_ahead" not in plain.measurements
    assert _bundle_bytes(ahead) == _bundle_bytes(plain)


def test_a_rewrite_that_fails_its_check_is_not_shipped_though_built_ahead(tmp_path: Path, monkeypatch) -> None:
    """Built ahead from a graph whose check then fails: the build goes on from the unrewritten graph,
    exactly as without building ahead."""
    from edgepack.backends.onnxruntime import OnnxRuntimeBackend
    from edgepack.stages import prepare

    monkeypatch.setattr(prepare._Baseline, "check", lambda self, dev: (False, "forced to fail"))
    ahead = _cnn_build(tmp_path, "ahead")
    decisions = _decisions(ahead)
    assert any("onnxruntime basic optimization skipped: forced to fail" in d for d in decisions), decisions
    assert any("kept the unrewritten graph" in d for d in decisions)
    monkeypatch.setattr(OnnxRuntimeBackend, "builds_ahead", lambda self, ctx, m, model_class: False)
    plain = _cnn_build(tmp_path, "plain")
    assert _bundle_bytes(ahead) == _bundle_bytes(plain)
