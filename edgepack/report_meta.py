"""What makes a compare report self-contained and mergeable: the models it is about (digests), the
toolchain and host that made it, the budgets it was checked against, the fp32 source row (size, host
latency, estimates at fp32 on each target)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from .errors import EdgepackError, first_line

REPORT_VERSION = 2
MERGE_KEYS = ("edgepack", "onnxruntime")  # reports made with different versions of these are not merged


def host_info() -> dict:
    """The machine a report (or a measurement) was made on."""
    from .runtime.host import host_cpu

    return {"cpu": host_cpu(), "machine": platform.machine(), "os": f"{platform.system()} {platform.release()}",
            "python": f"{sys.version_info.major}.{sys.version_info.minor}"}


def toolchain(manifests: list[dict]) -> dict:
    """The versions that built the bundles (the same process built them all): the union of their toolchains."""
    import onnxruntime

    from . import __version__

    out: dict[str, str] = {}
    for doc in manifests:
        for k, v in (doc.get("toolchain") or {}).items():
            out.setdefault(k, v)
    # also when every target failed: merge checks these two (a report of failed targets is merged too)
    out.setdefault("edgepack", __version__)
    out.setdefault("onnxruntime", onnxruntime.__version__)
    return dict(sorted(out.items()))


def budget_settings(effective: dict) -> list[dict]:
    """The budgets that applied, per target and key (limit and where it came from)."""
    return [{"target": t, "budget": k, "limit": b.limit, "source": b.source}
            for t, by_key in effective.items() for k, b in sorted(by_key.items())]


def _source_models(manifest: dict) -> list[dict]:
    return [{"file": m["source_model"]["file"], "sha256": m["source_model"]["sha256"], "bytes": m["source_model"]["bytes"],
             "inputs": m["source_model"]["inputs"], "outputs": m["source_model"]["outputs"]} for m in manifest["models"]]


def source_section(sources: list[Path], manifest: dict, bundle: Path) -> dict:
    """The fp32 source row: the model files, their bytes, and the fp32 original's host latency in
    onnxruntime CPU with its default optimizations (1 thread) on the first bundle's reference input."""
    from . import host_timing
    from .runtime import ort as ort_runtime
    from .runtime.host import host_cpu
    from .runtime.timing import round_robin

    models = _source_models(manifest)
    out = {"models": models, "bytes": sum(m["bytes"] for m in models), "host_latency": None}
    try:
        total = 0.0
        for entry, source in zip(manifest["models"], sources):
            if not entry.get("reference"):
                return out
            feed = host_timing._feed(bundle, entry["reference"])  # noqa: SLF001 - the module's own reader
            sess = ort_runtime.session(Path(source), host_timing.THREADS)
            total += host_timing._stats(round_robin({"fp32": lambda: ort_runtime.run(sess, feed)})["fp32"])["median_ms"]  # noqa: SLF001
    except (EdgepackError, OSError) as exc:
        out["host_latency_error"] = first_line(exc)
        return out
    out["host_latency"] = {"median_ms": round(total, 4), "what": "fp32 original, onnxruntime CPU (default optimizations)",
                           "threads": host_timing.THREADS, "host_cpu": host_cpu(), "timing": host_timing.TIMING}
    return out


def fp32_estimates(sources: list[Path], manifest: dict, profile, per_hour: float) -> dict | None:
    """The fp32 original on the target, estimated the same way as the shipped model (before prepare and
    quantization: the source graph at the shipped input shapes): latency, energy, app size (sums over models)."""
    from .estimate import estimate_bundle

    keys = ("latency_ms", "energy")
    total: dict[str, dict] = {}
    try:
        for entry, source in zip(manifest["models"], sources):
            ref = entry.get("reference") or {}
            shapes = {t["name"]: tuple(t["shape"]) for t in ref.get("inputs", [])} or None
            est = estimate_bundle(Path(source), profile, "fp32", shapes=shapes, per_hour=per_hour).to_json()
            for k in keys:
                e = est[k]
                t = total.setdefault(k, {"value": 0.0, "low": 0.0, "high": 0.0, "unit": e["unit"], "method": e["method"]})
                for part in ("value", "low", "high"):
                    t[part] += e[part]
    except (EdgepackError, OSError, ValueError) as exc:
        return {"error": first_line(exc)}
    for t in total.values():
        for part in ("value", "low", "high"):
            t[part] = float(f"{t[part]:.4g}")
    return {**total, "note": "the fp32 source graph at the shipped input shapes, prepared as the build prepares it (estimate.estimate_bundle), before quantization"}
