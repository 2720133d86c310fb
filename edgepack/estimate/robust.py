"""Robust timing for ``edgepack calibrate`` on a machine that may be busy.

With one intra-op thread, runs are timed by the thread's CPU clock (other programs' time slices do not
count); with more, by the wall clock. A figure is the minimum of several round medians: each round times a batch of runs and keeps their
median; rounds repeat until the last ``STABLE_ROUNDS`` medians lie within ``SPREAD_BOUND`` of each
other (or the figure's time budget is spent), and the fastest of those medians is kept (other
programs only ever make a run slower). The spread of the kept rounds is recorded with the figure.

Interference: a reference kernel (a fixed fp32 GEMM) is timed the same way before and after each
group of figures; when either timing is more than ``DRIFT_BOUND`` slower than the fastest reference
timing of the calibration the group is measured again, and when it still is the figures carry a warning.
At N threads a second check asks whether the N cores are there at all (:class:`CoresProbe`): a
machine that hands out fewer cores for a while slows every N-thread timing alike, so the reference
kernel's drift cannot see it when it lasts the whole calibration.
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


# -------------------------------------------------------------------------- N threads: are N cores there?

CORES_WITHIN = 0.85  # the probe's N-thread speedup must be at least 0.85 x the best it showed in this run
CORES_WAIT_S = 60.0  # how long calibrate waits, in all, for the cores to come back before it warns
CORES_POLL_S = 1.0
PROBE_WINDOW_S = 0.3


@dataclass(frozen=True)
class Cores:
    """What the parallel probe showed: the ``speedup`` of N threads over one, whether it was within
    CORES_WITHIN of the ``best`` speedup of the run so far, and the seconds spent waiting for that."""

    threads: int
    speedup: float
    best: float
    ok: bool
    waited_s: float


class CoresProbe:
    """The parallel probe of an N-thread measurement. A machine can give a program's threads less than
    its cores for tens of seconds at a time - another program, or a virtual machine's host: on a 2-vCPU
    cloud VM (this project's CI and development host) 2-thread runs of real models fell to the one-thread
    speed for 30-70 s at a time while a big GEMM still ran twice as fast, because what slowed was each
    hand-over between the threads. Figures timed then describe another machine. The probe is what
    suffers: a chain of 60 small convs (32 channels, 14x14: a parallel section every ~16 us), timed at one
    thread and at N threads alternately for PROBE_WINDOW_S; its speedup fell from 1.76-1.80x to
    1.32-1.37x in those periods. It is judged against the best speedup seen in the same run (no fixed
    bar: what N threads give depends on the machine), so a run that starts in such a period is caught
    once a better one is seen (:meth:`stale`). The best is capped at N: an impossible reading does not
    set it."""

    def __init__(self, folder: Path, threads: int):
        from . import microbench as mb

        model, _ = mb.conv_chain_model(32, 14, depth=60)
        self.threads = threads
        self.best = 0.0
        self._one = open_session(model, folder, "probe1", Session(1, None))
        self._many = open_session(model, folder, f"probe{threads}", Session(threads, None))

    def speedup(self, window_s: float = PROBE_WINDOW_S) -> float:
        one, many = [], []
        for sess, feed in (self._one, self._many):
            sess.run(None, feed)
        start = time.perf_counter()
        while time.perf_counter() - start < window_s or len(one) < 3:
            for (sess, feed), times in ((self._one, one), (self._many, many)):
                t = time.perf_counter()
                sess.run(None, feed)
                times.append(time.perf_counter() - t)
        s = float(np.median(one) / np.median(many))
        self._note(s)
        return s

    def _note(self, s: float) -> None:
        """The best so far, never above N (N threads cannot run more than N times as fast as one: a reading
        above that is a one-thread window slowed by something else, and must not set the bar)."""
        self.best = max(self.best, min(s, float(self.threads)))

    def check(self) -> Cores:
        s = self.speedup()
        return Cores(self.threads, s, self.best, s >= CORES_WITHIN * self.best, 0.0)

    def stale(self, speedup: float) -> bool:
        """A figure measured at ``speedup`` is below what the run has since shown the machine can do."""
        return speedup < CORES_WITHIN * self.best

    def wait(self, budget_s: float) -> Cores:
        """Probe until the speedup is back within CORES_WITHIN of the best or ``budget_s`` is spent."""
        start, polls = time.perf_counter(), 0
        while True:
            c = self.check()
            waited = time.perf_counter() - start if polls else 0.0  # the first probe is not waiting
            if c.ok or waited >= budget_s:
                return Cores(c.threads, c.speedup, c.best, c.ok, round(waited, 1))
            polls += 1
            time.sleep(min(CORES_POLL_S, max(budget_s - waited, 0.0)))


def drift(before: float, after: float) -> float:
    """Relative change of the reference kernel's time."""
    return after / before - 1.0
