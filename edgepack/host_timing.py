"""Host latencies a compare report can put side by side: timed after every target was built, one
target at a time, on each bundle's own reference input.

The build measures each target while the others build in parallel (``--jobs``), so those figures
share the machine with whatever else ran and are not comparable across targets (identical Pi bundles
measured 0.03 vs 0.13 ms). Here nothing else of ours runs: per target, the fp32 original in
onnxruntime CPU (the common yardstick), the fp32 original in the target's engine where that is not
onnxruntime (OpenVINO), and the shipped model in the engine the device uses, in rotating rounds.
They are measurements of this host, never of the target device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import reference
from .backends import backend_for
from .errors import EdgepackError, first_line
from .runtime.host import host_cpu
from .runtime.timing import round_robin

THREADS = 1
TIMING = "timed after all targets were built, one target at a time (runs of the fp32 and shipped models interleaved)"


def _feed(bundle: Path, entry: dict) -> dict[str, np.ndarray]:
    return {t["name"]: reference.from_bytes((bundle / t["file"]).read_bytes(), t["dtype"], t["shape"])
            for t in entry["inputs"]}


def _stats(times: list[float]) -> dict:
    arr = np.asarray(times)
    return {"median_ms": float(np.median(arr)), "p10_ms": float(np.percentile(arr, 10)),
            "p90_ms": float(np.percentile(arr, 90)), "runs": len(times)}


def time_target(bundle: Path, manifest: dict, sources: list[Path], profile) -> dict | None:
    """The row's host latency: per key (fp32, fp32_engine, shipped) the sum over the bundle's models
    of the median ms, with what ran; None when this host cannot run the bundle's engine."""
    backend = backend_for(profile)
    totals: dict[str, float] = {}
    labels: dict[str, str] = {}
    per_model = {}
    for entry, source in zip(manifest["models"], sources):
        ref = entry.get("reference")
        if not ref:
            return None
        runners = backend.host_runners(Path(source), bundle / entry["artifact"], profile, THREADS)
        if not runners:
            return None
        feed = _feed(bundle, ref)
        calls: dict[str, Callable[[], object]] = {key: (lambda run=run: run(feed)) for key, _, run in runners}
        times = round_robin(calls)
        per_model[entry["name"]] = {key: {"what": what, **_stats(times[key])} for key, what, _ in runners}
        for key, what, _ in runners:
            totals[key] = totals.get(key, 0.0) + per_model[entry["name"]][key]["median_ms"]
            labels[key] = what
    out = {"fp32_ms": round(totals["fp32"], 4), "shipped_ms": round(totals["shipped"], 4),
           "ratio": round(totals["shipped"] / totals["fp32"], 4) if totals["fp32"] else None,
           "what": labels, "threads": THREADS, "host_cpu": host_cpu(), "timing": TIMING, "models": per_model,
           "where": "this host (not the target device)"}
    if "fp32_engine" in totals:
        out["fp32_engine_ms"] = round(totals["fp32_engine"], 4)
    return out


def time_targets(results, profiles, sources: list[Path], progress: Callable[[str], None] | None = None) -> dict:
    """{target: host latency or {'error': why}} for every built target, one after another."""
    by_name = {p.name: p for p in profiles}
    out = {}
    for r in results:
        if progress:
            progress(f"{r.target}: timing on this host")
        try:
            out[r.target] = time_target(Path(r.bundle), r.manifest, sources, by_name[r.target])
        except (EdgepackError, OSError, RuntimeError) as exc:  # a figure we could not take is said, not fatal
            out[r.target] = {"error": f"{type(exc).__name__}: {first_line(exc)}"}
    return out
