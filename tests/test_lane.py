"""The background lane (edgepack.runtime.lane): model runs that go on while the build does other work,
with results that never depend on which thread ran them or when."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgepack.runtime import ort as ort_runtime
from edgepack.runtime.lane import Lane, Pending


def _matmul(path: Path) -> Path:
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor("w", TensorProto.FLOAT, [64, 64], w.ravel())])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _held(lane: Lane) -> threading.Event:
    """Occupy the lane's own thread until the returned event is set (the caller must not take that job)."""
    started, gate = threading.Event(), threading.Event()

    def hold():
        started.set()
        return gate.wait(30)

    lane.submit(hold)
    assert started.wait(5)
    return gate


def _feeds(n: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 64)).astype(np.float32)} for _ in range(n)]


def test_queued_runs_equal_run_model_in_order(tmp_path):
    model, feeds = _matmul(tmp_path / "m.onnx"), _feeds(12)
    want = ort_runtime.run_model(model, feeds, level="disable")
    pending = ort_runtime.queue_model_runs(model, feeds, level="disable")
    assert len(pending) == 12
    np.testing.assert_array_equal(pending[3]["y"], want[3]["y"])  # one output, before the rest
    got = pending.result()
    assert all(np.array_equal(a["y"], b["y"]) for a, b in zip(got, want))
    assert list(pending) == got


def test_first_jobs_are_taken_before_later_ones():
    lane, order = Lane("test-lane"), []
    gate = _held(lane)  # while the queue fills
    later = [lane.submit(order.append, f"later{i}") for i in range(3)]
    first = [lane.submit(order.append, f"first{i}", first=True) for i in range(2)]
    gate.set()
    lane.results(later + first)
    assert order == ["first0", "first1", "later0", "later1", "later2"]


def test_the_caller_helps_and_a_failure_is_raised_where_results_are_asked():
    lane = Lane("test-lane")
    gate = _held(lane)  # the caller must run the jobs itself
    ok = lane.submit(lambda: 7)
    bad = lane.submit(lambda: 1 / 0)
    assert lane.results([ok]) == [7]
    with pytest.raises(ZeroDivisionError):
        lane.results([bad])
    gate.set()


def test_a_cancelled_or_stopped_job_is_run_by_whoever_asks_for_it():
    lane = Lane("test-lane")
    gate = _held(lane)
    queued = lane.submit(lambda: "computed by the asker")
    lane.cancel_queued()
    assert queued.cancelled() and lane.results([queued]) == ["computed by the asker"]
    gate.set()


def test_pending_drops_its_other_runs_after_a_failure():
    lane, ran = Lane("test-lane"), []
    gate = _held(lane)

    def fail():
        raise RuntimeError("no")

    import edgepack.runtime.lane as lane_module

    real, lane_module.LANE = lane_module.LANE, lane
    try:
        pending = Pending([lane.submit(fail), *[lane.submit(ran.append, i) for i in range(3)]],
                          wrap=lambda exc: ValueError(f"wrapped: {exc}"))
        with pytest.raises(ValueError, match="wrapped: no"):
            pending.result()
    finally:
        lane_module.LANE = real
        gate.set()
    time.sleep(0.1)
    assert ran == []  # cancelled, never run


def test_stop_ends_the_run_in_flight_and_it_is_run_again_when_asked(tmp_path):
    from edgepack import limits

    lane, started, calls = Lane("test-lane"), threading.Event(), []

    def run_until_stopped():
        calls.append(1)
        if len(calls) == 1:  # the lane's run: a guarded wait that only a stop ends
            started.set()
            with limits.guard("endless", lambda: None) as g:  # a cancel: the watchdog never hard-stops
                while not g.expired:
                    time.sleep(0.01)
            raise limits.TimeLimitError("stopped")
        return "again"

    limits.set_run_seconds(60)
    try:
        job = lane.submit(run_until_stopped)
        assert started.wait(5)
        t0 = time.perf_counter()
        lane.stop(seconds=5)
        assert time.perf_counter() - t0 < 4 and job.done() and job.stopped
        assert lane.results([job]) == ["again"]
    finally:
        limits.set_run_seconds(None)


def test_ctrl_c_in_a_helping_thread_is_raised_there():
    lane = Lane("test-lane")
    gate = _held(lane)

    def interrupted():
        raise KeyboardInterrupt

    job = lane.submit(interrupted)
    with pytest.raises(KeyboardInterrupt):
        lane.results([job])
    gate.set()


def test_a_stop_that_comes_after_the_job_finished_keeps_its_result():
    lane = Lane("test-lane")
    job = lane.submit(lambda: 5)
    assert lane.results([job]) == [5]
    job.stopped = True  # what stop() does when it sees the job an instant before the lane lets it go
    assert lane.results([job]) == [5]
