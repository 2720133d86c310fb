"""``edgepack verify BUNDLE --measure``: the bundle's latency on this machine, with its own runtime
and execution provider (Core ML on a Mac, the aarch64 wheel on an arm64 runner, OpenVINO on Intel),
labelled with the machine - a measurement where the bundle lands, to put beside the estimates
(``edgepack merge``) and to check a profile with (``edgepack calibrate --check``).

The manifest is untrusted: the runtime comes from edgepack's backends table, provider options and
session settings pass a fixed allow-list (:mod:`edgepack.manifest_checks`), and every run has the
time limit. Nothing is measured unless the bundle passed verify's checks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from . import reference
from .errors import EdgepackError, first_line

MEASUREMENT_VERSION = 1
DEFAULT_RUNS = 50
WARMUP = 5


def default_threads() -> int:
    """Intra-op threads when none are given: the machine's CPUs, at most 4 (a phone's big cores, a Pi's cores)."""
    return max(1, min(os.cpu_count() or 1, 4))


def machine() -> dict:
    from .report_meta import host_info

    return host_info()


def _stats(times: list[float], threads: int) -> dict:
    arr = np.asarray(times)
    return {"median_ms": round(float(np.median(arr)), 4), "p10_ms": round(float(np.percentile(arr, 10)), 4),
            "p90_ms": round(float(np.percentile(arr, 90)), 4), "min_ms": round(float(arr.min()), 4),
            "max_ms": round(float(arr.max()), 4), "runs": len(times), "threads": threads}


def measure(bundle: Path, doc: dict, raw: bytes, checked, backend, *, runs: int = DEFAULT_RUNS,
            threads: int | None = None) -> dict:
    """The measurement record (``measurement`` in ``verify --measure --json``)."""
    from .bundle_check import read_reference
    from .runtime.timing import elapsed_ms

    threads = threads or default_threads()
    total = []
    per_model = []
    info: dict = {}
    checks = []
    for run, entry in zip(checked.models, doc["models"]):
        ref = run.reference
        if ref is None:
            msg = f"{run.artifact}: the bundle has no reference input to measure with (rebuild it with this edgepack)"
            raise EdgepackError(msg)
        feed = read_reference(bundle, ref.inputs)
        infer, info = backend.measure_session(bundle / run.artifact, checked, threads)
        first = infer(feed)  # the first run: compiles on accelerators; its outputs are checked
        ok, why = reference.check(read_reference(bundle, ref.outputs), first, ref.rule)
        checks.append(f"{run.artifact}: {'passed' if ok else 'FAILED'}: {why}")
        for _ in range(WARMUP):
            infer(feed)
        times = [elapsed_ms(lambda: infer(feed)) for _ in range(runs)]
        per_model.append({"artifact": run.artifact, "latency": _stats(times, info.get("threads", threads))})
        total.append(times)
    summed = [sum(ts) for ts in zip(*total)]
    estimated = (doc.get("estimates") or {}).get("latency_ms") if len(doc["models"]) == 1 else None
    return {
        "measurement_version": MEASUREMENT_VERSION,
        "target": doc["target"]["name"],
        "device": doc["target"].get("device"),
        "models": [{"name": m["name"], "file": m["source_model"]["file"], "sha256": m["source_model"]["sha256"]}
                   for m in doc["models"]],
        "manifest_sha256": hashlib.sha256(raw).hexdigest(),
        "machine": machine(),
        "runtime": info.get("runtime"),
        "provider": info.get("provider"),
        "requested": info.get("requested"),
        "note": info.get("note"),
        "latency": _stats(summed, info.get("threads", threads)),
        "models_latency": per_model,
        "reference_check": checks,
        "estimated": {"latency_ms": {k: estimated[k] for k in ("value", "low", "high", "unit", "method")
                                     if k in estimated}} if isinstance(estimated, dict) else None,
    }


def describe(m: dict) -> str:
    """One line: measured on <machine> vs estimated for <device>."""
    lat = m["latency"]
    machine_text = f"{m['machine'].get('cpu')} ({m['machine'].get('os')}, {m['machine'].get('machine')})"
    text = (f"measured {lat['median_ms']:.3f} ms median (p10 {lat['p10_ms']:.3f}, p90 {lat['p90_ms']:.3f}; {lat['runs']} "
            f"runs, {lat['threads']} thread(s)) on {machine_text} with {m['runtime']} [{m['provider']}]")
    est = (m.get("estimated") or {}).get("latency_ms")
    if est and "value" in est:
        device = (m.get("device") or "the target device").split(" (")[0]
        text += f" vs estimated {est['value']:.3g} ms ({est['low']:.3g}-{est['high']:.3g}) for {device}"
    return text


def check_against_estimate(m: dict) -> tuple[bool | None, str]:
    """(inside the band?, one line) - for ``calibrate --check``: does the profile's estimate bracket
    the measurement? None when the bundle has no estimate."""
    est = (m.get("estimated") or {}).get("latency_ms")
    if not est or "value" not in est:
        return None, f"{m['target']}: no latency estimate in the bundle to check"
    med = m["latency"]["median_ms"]
    inside = est["low"] <= med <= est["high"]
    ratio = med / est["value"] if est["value"] else float("inf")
    verdict = "inside" if inside else ("above" if med > est["high"] else "below")
    return inside, (f"{m['target']}: {describe(m)}: {verdict} the band (measured/estimated {ratio:.2f}x)"
                    + ("" if inside else "; the profile's figures do not describe this machine: calibrate it "
                       "(edgepack calibrate -o mydevice.toml on it) and rebuild with that profile"))


def measure_error(exc: BaseException) -> str:
    """Our own errors say what happened; a foreign one (OSError, ValueError) is named."""
    return first_line(exc) if isinstance(exc, EdgepackError) else f"{type(exc).__name__}: {first_line(exc)}"


def check_files(paths: list[str]) -> int:
    """``calibrate --check``: one line per measurement; 1 when a measurement falls outside its estimate's band."""
    from .merge import read_json
    from .report_checks import check_measurement

    verdicts = []
    for path in paths:
        doc = check_measurement(read_json(Path(path), "verify --measure --json output"), str(path))
        inside, line = check_against_estimate(doc["measurement"])
        print(line)
        verdicts.append(inside)
    checked = [v for v in verdicts if v is not None]
    print(f"{sum(checked)}/{len(checked)} measurement(s) inside the estimate's band")
    return 0 if all(checked) else 1
