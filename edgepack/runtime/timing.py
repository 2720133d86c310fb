"""Timing on this host: interleaved pairs so a ratio is robust to machine noise, and their summaries.

The runners are plain callables, so the same pairing times two onnxruntime sessions, two OpenVINO
compiled models, or one of each. Timings are measurements of the build host, never of the target
device; they go to the build record, never into a bundle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import ort
from .host import host_cpu

MAX_RUNS = 400


def elapsed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def summary(times_ms: list[float], threads: int, provider: str = "CPUExecutionProvider") -> dict:
    arr = np.asarray(times_ms)
    return {
        "median_ms": float(np.median(arr)),
        "p10_ms": float(np.percentile(arr, 10)),
        "p90_ms": float(np.percentile(arr, 90)),
        "runs": len(times_ms),
        "threads": threads,
        "host_cpu": host_cpu(),
        "provider": provider,
    }


def ratio(ref: dict, cand: dict) -> float | None:
    """Candidate median over reference median (below 1: the candidate is faster)."""
    return cand["median_ms"] / ref["median_ms"] if ref["median_ms"] > 0 else None


def interleaved(run_a, run_b, *, warmup: int = 3, runs: int = 20, budget_s: float = 0.5,
                max_runs: int = MAX_RUNS) -> tuple[list[float], list[float]]:
    """Milliseconds of ``run_a`` and ``run_b`` timed in alternating pairs (ABBA...), after ``warmup``
    pairs: at least ``runs`` pairs, more for fast models (up to ``budget_s`` seconds, ``max_runs`` pairs)."""
    for _ in range(warmup):
        run_a()
        run_b()
    # small models run in microseconds, where noise dominates: time at least ~budget_s of pairs
    pair_ms = elapsed_ms(run_a) + elapsed_ms(run_b)
    runs = int(min(max_runs, max(runs, budget_s * 1000.0 / max(pair_ms, 1e-3))))
    a_ms: list[float] = []
    b_ms: list[float] = []
    for i in range(max(runs, 1)):
        # alternate which goes first, so neither always runs on a cache the other warmed
        pair = ((run_a, a_ms), (run_b, b_ms)) if i % 2 == 0 else ((run_b, b_ms), (run_a, a_ms))
        for fn, times in pair:
            times.append(elapsed_ms(fn))
    return a_ms, b_ms


def round_robin(runners: dict[str, Callable[[], object]], *, warmup: int = 3, runs: int = 20, budget_s: float = 0.5,
                max_runs: int = MAX_RUNS) -> dict[str, list[float]]:
    """Milliseconds of each runner, timed in rounds (one run of each per round, the order rotating
    every round so none always runs on a cache another warmed): at least ``runs`` rounds, more for
    fast models (up to ``budget_s`` seconds of rounds, ``max_runs`` rounds)."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    round_ms = sum(elapsed_ms(runners[n]) for n in names)
    rounds = int(min(max_runs, max(runs, budget_s * 1000.0 / max(round_ms, 1e-3))))
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(max(rounds, 1)):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(elapsed_ms(runners[name]))
    return times


CONFIDENCE = 0.99  # per look: the interval is checked after every pair, so each look is strict
STOP_BUDGET_S = 2.0  # seconds of timed pairs a statistical stop may spend before it decides on what it has


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median of ``values`` (the sign test's order
    statistics: ``[x_(k), x_(n-k+1)]`` covers the median with probability 1 - 2 P(Binomial(n, 1/2) < k));
    None while there are too few values for ``confidence``."""
    from math import comb

    n = len(values)
    ordered = sorted(values)
    k, below = 0, 0.0  # below = P(B <= k - 1)
    while k < n // 2:
        nxt = below + comb(n, k) / 2.0**n
        if 1.0 - 2.0 * nxt < confidence:
            break
        below, k = nxt, k + 1
    if k == 0:
        return None
    return ordered[k - 1], ordered[n - k]


def min_pairs(confidence: float = CONFIDENCE) -> int:
    """The fewest pairs whose interval (their minimum and maximum) reaches ``confidence``."""
    n = 1
    while 1.0 - 2.0 / 2.0**n < confidence:
        n += 1
    return n


def _stop_reason(a_ms: list[float], b_ms: list[float], clear_of: float | None, within: float | None) -> str | None:
    """Why timing may stop now (None: not yet): the interval of the per-pair ratios b/a is clear of
    ``clear_of`` on the same side as the ratio of the medians, or narrower than +-``within`` of it."""
    pairs = [b / a for a, b in zip(a_ms, b_ms) if a > 0]
    ci = median_interval(pairs)
    if ci is None or not a_ms:
        return None
    lo, hi = ci
    med_ratio = float(np.median(b_ms) / np.median(a_ms)) if np.median(a_ms) > 0 else None
    if clear_of is not None and med_ratio is not None:
        if hi < clear_of and med_ratio < clear_of:
            return f"ratio's {CONFIDENCE:.0%} interval [{lo:.3f}, {hi:.3f}] below {clear_of:g}"
        if lo > clear_of and med_ratio > clear_of:
            return f"ratio's {CONFIDENCE:.0%} interval [{lo:.3f}, {hi:.3f}] above {clear_of:g}"
    if within is not None and med_ratio is not None and hi - lo <= 2 * within * med_ratio:
        return f"ratio's {CONFIDENCE:.0%} interval [{lo:.3f}, {hi:.3f}] within +-{within:.0%}"
    return None


def until_clear(run_a, run_b, *, clear_of: float | None = None, within: float | None = None, warmup: int = 1,
                budget_s: float = STOP_BUDGET_S, max_pairs: int = MAX_RUNS) -> tuple[list[float], list[float], dict]:
    """Milliseconds of ``run_a`` and ``run_b`` in alternating pairs, stopped as soon as the answer is
    known: the confidence interval of the per-pair ratio b/a is clear of ``clear_of`` (a gate's
    threshold), or narrower than +-``within`` of the ratio (a measurement) - or at ``budget_s`` seconds
    of pairs, or ``max_pairs``, never before :func:`min_pairs`. Returns both lists and how it stopped."""
    for _ in range(warmup):
        run_a()
        run_b()
    a_ms: list[float] = []
    b_ms: list[float] = []
    least = min_pairs()
    start = time.perf_counter()
    reason = None
    for i in range(max(max_pairs, least)):
        pair = ((run_a, a_ms), (run_b, b_ms)) if i % 2 == 0 else ((run_b, b_ms), (run_a, a_ms))
        for fn, times in pair:
            times.append(elapsed_ms(fn))
        if len(a_ms) < least:
            continue
        reason = _stop_reason(a_ms, b_ms, clear_of, within)
        if reason is None and time.perf_counter() - start >= budget_s:
            reason = f"time budget of {budget_s:g} s"
        if reason is not None:
            break
    pairs = [b / a for a, b in zip(a_ms, b_ms) if a > 0]
    ci = median_interval(pairs)
    return a_ms, b_ms, {"pairs": len(a_ms), "stopped": reason or f"{max_pairs} pairs",
                        "ratio_interval": [round(ci[0], 4), round(ci[1], 4)] if ci else None,
                        "confidence": CONFIDENCE, "seconds": round(time.perf_counter() - start, 3)}


def measure_latency(path: Path, sample: dict, *, threads: int = 1, warmup: int = 3, runs: int = 20,
                    level: str | None = None, disabled_optimizers: Iterable[str] = (),
                    lean: bool | None = None) -> dict:
    """Median/p10/p90 milliseconds of ``runs`` onnxruntime runs of one sample after ``warmup`` runs."""
    sess = ort.session(Path(path), threads, level, disabled_optimizers, lean)
    for _ in range(warmup):
        ort.run(sess, sample)
    return summary([elapsed_ms(lambda: ort.run(sess, sample)) for _ in range(max(runs, 1))], threads)


def compare_latency(
    ref_path: Path, cand_path: Path, sample: dict, *, threads: int = 1, warmup: int = 3, runs: int = 20,
    level: str | None = None, disabled_optimizers: Iterable[str] = (), budget_s: float = 0.5,
    clear_of: float | None = None, within: float | None = None, stop_budget_s: float = STOP_BUDGET_S,
) -> dict:
    """Time both models in one process with interleaved runs (ABAB...); ``ratio`` = cand / ref medians.

    At least ``runs`` pairs, more for fast models (up to ``budget_s`` seconds, at most MAX_RUNS pairs).
    With ``clear_of`` (a gate's threshold) or ``within`` (a measurement's relative precision) the
    statistical stop of :func:`until_clear` decides how many pairs instead (``stop`` in the result).

    Both sessions use the same ``level`` and ``disabled_optimizers`` (onnxruntime's defaults if None).
    """
    if ort.model_bytes_on_disk(ref_path) + ort.model_bytes_on_disk(cand_path) > ort.SEQUENTIAL_ABOVE_BYTES:
        # too large to hold both sessions at once: one after the other (less robust to noise, says so),
        # both with the same memory-lean options so their ratio compares like with like
        r = measure_latency(ref_path, sample, threads=threads, warmup=warmup, runs=runs, level=level,
                            disabled_optimizers=disabled_optimizers, lean=True)
        c = measure_latency(cand_path, sample, threads=threads, warmup=warmup, runs=runs, level=level,
                            disabled_optimizers=disabled_optimizers, lean=True)
        r["order"] = c["order"] = "sequential (large models: one session at a time)"
        return {"ref": r, "cand": c, "ratio": ratio(r, c), "lean": True}
    ref = ort.session(Path(ref_path), threads, level, disabled_optimizers, lean=False)
    cand = ort.session(Path(cand_path), threads, level, disabled_optimizers, lean=False)
    run_ref, run_cand = (lambda: ort.run(ref, sample)), (lambda: ort.run(cand, sample))
    stop = None
    if clear_of is None and within is None:
        ref_ms, cand_ms = interleaved(run_ref, run_cand, warmup=warmup, runs=runs, budget_s=budget_s)
    else:
        ref_ms, cand_ms, stop = until_clear(run_ref, run_cand, clear_of=clear_of, within=within,
                                            warmup=min(warmup, 1), budget_s=stop_budget_s)
    r, c = summary(ref_ms, threads), summary(cand_ms, threads)
    out = {"ref": r, "cand": c, "ratio": ratio(r, c)}
    return out if stop is None else {**out, "stop": stop}
