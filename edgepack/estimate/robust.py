"""Robust timing for ``edgepack calibrate`` on a machine that may be busy.

With one intra-op thread, runs are timed by the thread's CPU clock (other programs' time slices do not
count); with more, by the wall clock. A figure is the minimum of several round medians: each round times a batch of runs and keeps their
median; rounds repeat until the last ``STABLE_ROUNDS`` medians lie within ``SPREAD_BOUND`` of each
other (or the figure's time budget is spent), and the fastest of those medians is kept (other
programs only ever make a run slower). The spread of the kept rounds is recorded with the figure.

Interference: a reference kernel (a fixed fp32 GEMM) is timed the same way before and after each
group of figures; when either timing is more than ``DRIFT_BOUND`` slower than the fastest reference
timing of the calibration the group is measured again, and when it still is the figures carry a warning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

SPREAD_BOUND = 0.05  # last round medians within 5% of each other
STABLE_ROUNDS = 3
DRIFT_BOUND = 0.10  # the reference kernel may move 10% between before and after


@dataclass(frozen=True)
class Timing:
    ms: float  # min of the round medians
    spread: float  # (max - min) / min of the last STABLE_ROUNDS round medians
    rounds: int
    stable: bool


@dataclass(frozen=True)
class Session:
    """How the micro-benchmarks' sessions are made: the session the profile's estimates model."""

    threads: int
    level: str | None  # None: onnxruntime's default (all)

    @property
    def cpu_clock(self) -> bool:
        """One thread: timed by the thread's CPU clock (see :func:`time_session`)."""
        return self.threads == 1


def open_session(model: onnx.ModelProto, folder: Path, name: str, settings: Session):
    from ..runtime import ort as ort_runtime

    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    so = ort_runtime.session_options(level_name=settings.level, threads=settings.threads)
    sess = ort_runtime.inference_session(path, so)
    rng = np.random.default_rng(2)
    feed = {i.name: (np.array(True) if i.type == "tensor(bool)" else rng.standard_normal(list(i.shape)).astype(np.float32))
            for i in sess.get_inputs()}
    return sess, feed


def time_session(sess, feed, budget_s: float, *, max_rounds: int = 12, cpu_clock: bool = False) -> Timing:
    """Round medians of ``sess.run`` until stable or ``budget_s`` is spent (at least STABLE_ROUNDS).

    ``cpu_clock``: time each run by the calling thread's CPU clock instead of the wall clock - with one
    intra-op thread onnxruntime runs the graph on the calling thread, so this is the run's latency on a
    core of its own, whatever else the machine runs (time-slicing by other programs does not count;
    their use of shared caches and memory still does)."""
    clock = time.thread_time if cpu_clock else time.perf_counter
    for _ in range(2):
        sess.run(None, feed)
    t0 = time.perf_counter()
    sess.run(None, feed)
    once = time.perf_counter() - t0
    # a round of ~1/8 of the budget's share, at least 3 and at most 200 runs
    per_round = int(min(200, max(3, budget_s / (STABLE_ROUNDS + 2) / max(once, 1e-6))))
    medians: list[float] = []
    start = time.perf_counter()
    while True:
        times = []
        for _ in range(per_round):
            t = clock()
            sess.run(None, feed)
            times.append(clock() - t)
        medians.append(float(np.median(times)) * 1e3)
        last = medians[-STABLE_ROUNDS:]
        spread = (max(last) - min(last)) / min(last) if len(last) == STABLE_ROUNDS else float("inf")
        stable = spread <= SPREAD_BOUND
        if stable or len(medians) >= max_rounds or (time.perf_counter() - start > budget_s
                                                     and len(medians) >= STABLE_ROUNDS):
            return Timing(min(medians), spread, len(medians), stable)


def time_model(model: onnx.ModelProto, folder: Path, name: str, settings: Session, budget_s: float) -> Timing:
    sess, feed = open_session(model, folder, name, settings)
    return time_session(sess, feed, budget_s, cpu_clock=settings.cpu_clock)


def drift(before: float, after: float) -> float:
    """Relative change of the reference kernel's time."""
    return after / before - 1.0
