"""``edgepack compare``: every chosen target built side by side, one report, CI budgets, a baseline."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from . import budgets as budget_mod
from . import report_meta as meta
from .build import BuildResult, build
from .errors import UsageError
from .host_timing import time_targets
from .report_checks import check_baseline
from .render.report import REPORTS
from .safe_io import check_file_slot
from .target import TargetProfile



def _artifact_bytes(manifest: dict, names: set[str]) -> int:
    return sum(a["bytes"] for a in manifest["artifacts"] if a["path"] in names)


def _accuracy(manifest: dict) -> dict:
    """The worst figures of the verification: cosine, agreement of the output kinds, the user's metric,
    and the accuracy drop the budget reads (the --eval drop; else 1 - the worst kind agreement; else 1 - cosine)."""
    from .metrics.bars import PRIMARY

    cos, top1, agree, drops, statuses = [], [], [], [], []
    for m in manifest["models"]:
        ver = m.get("verification") or {}
        statuses.append(ver.get("status", "verified"))
        if (ver.get("user_metric") or {}).get("drop") is not None:
            drops.append(ver["user_metric"]["drop"])
        for out in ver.get("outputs", {}).values():
            cos.append(out["cosine_min"])
            if out.get("top1_agreement") is not None:
                top1.append(out["top1_agreement"])
            kind = out.get("kind", "embedding")
            if kind != "embedding" and out.get(PRIMARY[kind]) is not None and out.get("status") == "passed":
                agree.append((out[PRIMARY[kind]], f"{kind}: {PRIMARY[kind]}"))
    worst_cos = min(cos) if cos else None
    worst_top1 = min(top1) if top1 else None
    worst_agree = min(agree) if agree else None
    if drops:
        drop, basis = max(drops), "your --eval metric: fp32 value minus the shipped model's"
    elif worst_agree is not None:
        drop, basis = 1.0 - worst_agree[0], f"1 - the lowest agreement with the fp32 model ({worst_agree[1]})"
    elif worst_cos is not None:
        drop, basis = 1.0 - worst_cos, "1 - lowest cosine similarity to the fp32 outputs"
    else:
        drop, basis = None, "no verification metrics"
    order = ("not verifiable", "weakly verified", "verified")
    status = next((s for s in order if s in statuses), None)
    return {"cosine_min": worst_cos, "top1_agreement": worst_top1, "agreement": worst_agree[0] if worst_agree else None,
            "status": status, "drop": drop, "drop_basis": basis}


def _coverage(manifest: dict) -> dict:
    total = on = parts = 0
    for m in manifest["models"]:
        c = m["coverage"]
        total += c["nodes_total"]
        on += c["nodes_on_accelerator"]
        parts += c["partitions"]
    return {"nodes_total": total, "nodes_on_accelerator": on, "partitions": parts,
            "fraction": round(on / total, 4) if total else 0.0}


def _host_from_build(measurements: dict) -> dict | None:
    """The build's own host latency (taken while other targets built in parallel): a fallback only. A backend
    whose host run is no stand-in for the device (the QNN HTP simulator) measures nothing."""
    lat = {k: v for k, v in measurements.get("host_latency", {}).items() if v}
    if not lat:
        return None
    fp32 = sum(v["fp32_original"]["median_ms"] for v in lat.values())
    shipped = sum(v["shipped"]["median_ms"] for v in lat.values())
    first = next(iter(lat.values()))
    return {"fp32_ms": round(fp32, 4), "shipped_ms": round(shipped, 4), "ratio": round(shipped / fp32, 4) if fp32 else None,
            "where": first.get("where"), "threads": first["shipped"].get("threads"), "host_cpu": first["shipped"].get("host_cpu"),
            "timing": "timed during the build, while other targets may have been building: not comparable across targets"}


def _estimates(manifest: dict) -> dict:
    """The manifest's estimates, if it has them (see edgepack.estimate)."""
    return manifest.get("estimates") or {}


def _est_value(est: dict, *path: str) -> dict | None:
    node: Any = est
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node if isinstance(node, dict) and "value" in node else None


def _why(manifest: dict) -> str:
    """One line: the recipe shipped, why the profile prefers it, and what happened to the ones before it."""
    parts = []
    for model in manifest["models"]:
        q = model.get("quantization") or {}
        recipe = q.get("recipe") or "?"
        passed_over = []
        for d in manifest["recipe"]["decisions"]:
            m = re.match(rf"quantize: {re.escape(model['name'])}: ([\w-]+) (skipped|dropped): (.*)$", d)
            if m and m.group(1) != recipe:
                passed_over.append(f"{m.group(1)} {m.group(2)}: {m.group(3)}")
        text = f"{recipe}: {q.get('why') or 'the profile lists no reason'}"
        if passed_over:
            text += " (" + "; ".join(passed_over) + ")"
        parts.append(text if len(manifest["models"]) == 1 else f"{model['name']}: {text}")
    return " | ".join(parts)


def _size(manifest: dict, model_bytes: int) -> dict:
    """Like for like: the model files plus the runtime the app ships with them, each named."""
    est = _estimates(manifest)
    minimal = _est_value(est, "size", "runtime_minimal")
    stock = _est_value(est, "size", "runtime_stock")
    if minimal:
        runtime, what = minimal["value"], "minimal onnxruntime build (est.)"
    elif stock:
        runtime = stock["value"]
        what = f"{manifest['target']['engine']} runtime libraries ({'measured, stock wheel' if stock['method'].startswith('measured') else 'published figure'})"
    else:
        runtime, what = 0.0, "no runtime figure"
    app = _est_value(est, "size")
    return {"model_bytes": model_bytes, "runtime_bytes": round(runtime), "runtime": what,
            "total_bytes": round(model_bytes + runtime),
            "includes": f"model + {what}",
            "app_download_bytes": round(app["value"]) if app else None}


def row(result: BuildResult, host: dict | None = None) -> dict:
    """One target's line of the comparison, from its build result (manifest and measurements, in memory)
    and its host latency timed after the builds (``host``; the build's own figure when None)."""
    manifest = result.manifest
    est = _estimates(manifest)
    model_bytes = _artifact_bytes(manifest, set(result.model_files))
    bundle_bytes = sum(a["bytes"] for a in manifest["artifacts"])
    recipes = {m["name"]: (m.get("quantization") or {}).get("recipe") for m in manifest["models"]}
    accuracy = _accuracy(manifest)
    if host is None or "error" in host:
        fallback = _host_from_build(result.measurements)
        if fallback and host:
            fallback["retime_error"] = host["error"]
        host = fallback
    size = _size(manifest, model_bytes)
    latency = _est_value(est, "latency_ms")
    battery = _est_value(est, "energy", "battery_pct_per_hour")
    figures = {
        "max-bundle-mb": (size["total_bytes"] / 1e6, size["includes"]),
        "max-accuracy-drop": (accuracy["drop"], accuracy["drop_basis"]),
    }
    if latency:
        figures["max-latency-ms"] = (latency["value"], "device latency estimate (value)")
    elif host:
        figures["max-latency-ms"] = (host["shipped_ms"], "host measurement (no device estimate)")
    if battery:
        figures["max-battery-pct-per-hour"] = (battery["value"], "battery estimate at the requested rate")
    else:
        figures["max-battery-pct-per-hour"] = (None, "no battery on this target")
    return {
        "target": result.target,
        "bundle": Path(result.bundle).name,
        "engine": manifest["target"]["engine"],
        "provider": manifest["target"]["execution_provider"],
        "device": manifest["target"].get("device"),
        "recipes": recipes,
        "why": _why(manifest),
        "model_bytes": model_bytes,
        "bundle_bytes": bundle_bytes,
        "size": size,
        "coverage": _coverage(manifest),
        "accuracy": accuracy,
        "host_latency": host,
        "estimates": est,
        "stage_seconds": {s.stage: round(s.seconds, 3) for s in result.stages},
        "budget_figures": figures,
    }


def baseline_deltas(rows: dict[str, dict], baseline: dict) -> dict:
    """Per target: bundle +KB, host latency +%, estimated latency +%, accuracy drop change."""
    old_rows = baseline.get("targets", {})
    out = {}
    for target, new in rows.items():
        old = old_rows.get(target)
        if old is None:
            out[target] = {"new_target": True}
            continue
        d: dict[str, Any] = {"model_kb": round((new["model_bytes"] - old["model_bytes"]) / 1000, 3),
                             "bundle_kb": round((new["bundle_bytes"] - old["bundle_bytes"]) / 1000, 3)}
        if new.get("host_latency") and old.get("host_latency"):
            d["host_latency_pct"] = round(100 * (new["host_latency"]["shipped_ms"] / old["host_latency"]["shipped_ms"] - 1), 2)
        new_l, old_l = _est_value(new.get("estimates", {}), "latency_ms"), _est_value(old.get("estimates", {}), "latency_ms")
        if new_l and old_l and old_l["value"]:
            d["estimated_latency_pct"] = round(100 * (new_l["value"] / old_l["value"] - 1), 2)
        if new["accuracy"]["drop"] is not None and old.get("accuracy", {}).get("drop") is not None:
            d["accuracy_drop_change"] = round(new["accuracy"]["drop"] - old["accuracy"]["drop"], 6)
        d["recipe_changed"] = new["recipes"] != old.get("recipes")
        out[target] = d
    return out


def _source_models(results: list[BuildResult], paths) -> list[dict]:
    if results:
        return [m["source_model"] for m in results[0].manifest["models"]]
    from .model import load_model  # every target failed: describe the models from their files

    out = []
    for p in paths:
        info = load_model(p).info
        out.append({"file": info.name, "sha256": info.sha256, "bytes": info.file_bytes + info.external_data_bytes,
                    "inputs": [t.to_json() for t in info.inputs], "outputs": [t.to_json() for t in info.outputs]})
    return out


def compare(
    models: list[str | Path],
    targets: list[TargetProfile],
    out: str | Path,
    *,
    calibration: str | Path | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    budgets: list[budget_mod.Budget] | None = None,
    baseline: str | Path | None = None,
    jobs: int = 1,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    per_hour: float = 1000.0,
    output_kinds: list | None = None,
    user_metric=None,
    verify_on_target: bool = False,
) -> dict:
    """Build every target (shared work once, targets in parallel), then write report.{json,md,html}: always,
    also when targets failed (each with its stage and reason in ``failures``)."""
    out = Path(out)
    old = None
    if baseline is not None:
        try:
            old = json.loads(Path(baseline).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            msg = f"--baseline {baseline}: cannot read a report.json ({exc.__class__.__name__})"
            raise UsageError(msg) from exc
        check_baseline(old, f"--baseline {baseline}")
    for name in REPORTS:  # a folder where a report goes is refused before any work
        check_file_slot(out / name)
    start = time.perf_counter()
    outcomes = build(models, targets, out, calibration=calibration, shapes=shapes, force=force, progress=progress,
                     jobs=jobs, per_hour=per_hour, keep_going=True, output_kinds=output_kinds, user_metric=user_metric,
                     verify_on_target=verify_on_target)
    seconds = time.perf_counter() - start
    results = [r for r in outcomes if isinstance(r, BuildResult)]
    failures = [r for r in outcomes if not isinstance(r, BuildResult)]
    sources = [Path(m) for m in models]
    hosts = time_targets(results, targets, sources, progress) if results else {}  # serially, now nothing else runs
    by_name = {t.name: t for t in targets}
    host = meta.host_info()
    rows = {}
    for r in results:
        rows[r.target] = row(r, hosts.get(r.target))
        rows[r.target]["estimates_fp32"] = meta.fp32_estimates(sources, r.manifest, by_name[r.target], per_hour)
        rows[r.target]["host"] = host  # each row says where it was made: a merged report holds rows of many hosts
    names = [t.name for t in targets]
    applied = budget_mod.effective(list(budgets or []), names)
    checks = budget_mod.check(rows, applied)
    if progress:
        progress("reports: fp32 source row, budgets, report.{json,md,html}")
    report = {
        "report_version": meta.REPORT_VERSION,
        "models": _source_models(results, models),
        "source": meta.source_section(sources, results[0].manifest, Path(results[0].bundle)) if results else None,
        "toolchain": meta.toolchain([r.manifest for r in results]),
        "host": host,
        "targets": rows,
        "failed_targets": {f.target: f"{f.stage}: {f.reason}" for f in failures},
        "failures": [f.to_json() for f in failures],
        "budget_settings": meta.budget_settings(applied),
        "budgets": checks,
        "budgets_passed": all(c["passed"] is not False for c in checks),
        "baseline": baseline_deltas(rows, old) if old is not None else None,
        "build_seconds": round(seconds, 2),
        "jobs": jobs,
        "per_hour": per_hour,
        "measured": {},
    }
    from .render.report import write_reports

    write_reports(report, out)
    return report
