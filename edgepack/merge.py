"""``edgepack merge REPORT.json ... -o OUT``: the reports of per-target CI jobs (each ran ``compare
--targets T`` on a runner that fits T) and the measurements of ``verify --measure`` as one report.

Reports are untrusted input: every field merge and the renderers read is type-checked first
(:mod:`edgepack.report_checks`). Reports of different models, or made by different edgepack or
onnxruntime versions, are refused with one error (their bundles could not be compared like for like);
with ``by_model`` a model zoo's reports (models x targets) are grouped and merged per model. Budgets
are checked again on the merged rows, with the same flags and ``[tool.edgepack]`` table as ``compare``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

from . import budgets as budget_mod
from . import report_meta as meta
from .errors import UsageError, first_line
from .report_checks import check_baseline, check_measurement, check_report

MAX_INPUT_BYTES = 64 * 2**20


def read_json(path: Path, what: str) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            msg = f"{path}: {size:,} bytes; an edgepack {what} is far smaller"
            raise UsageError(msg)
        return json.loads(path.read_text(encoding="utf-8"))
    except UsageError:
        raise
    except FileNotFoundError:
        msg = f"{path}: no such file"
        raise UsageError(msg) from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        msg = f"{path}: cannot read a {what} ({type(exc).__name__}: {first_line(exc)[:120]})"
        raise UsageError(msg) from None


def label(path: Path) -> str:
    """A report's name in messages and in the merged report: the path as given when it is relative (in CI
    every artifact's file is report.json; its folder tells them apart), else its folder and name - never
    an absolute path of the machine that merged."""
    path = Path(path)
    if not path.is_absolute() and ".." not in path.parts:
        return path.as_posix()
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _model_key(doc: dict) -> tuple[str, ...]:
    return tuple(m["sha256"] for m in doc["models"])


def _model_label(doc: dict) -> str:
    return ", ".join(f"{m['file']} (sha256 {m['sha256'][:12]})" for m in doc["models"])


def _load(inputs: list[Path]) -> tuple[list[tuple[Path, dict]], list[tuple[Path, dict]]]:
    """(reports, measurements), each checked; a file is a measurement when it holds verify --measure's JSON."""
    reports, measurements = [], []
    seen = set()
    for path in inputs:
        path = Path(path)
        if path.resolve() in seen:
            msg = f"{path} is given twice"
            raise UsageError(msg)
        seen.add(path.resolve())
        doc = read_json(path, "report")
        if isinstance(doc, dict) and "measurement" in doc:
            measurements.append((path, check_measurement(doc, str(path))))
        else:
            reports.append((path, check_report(doc, str(path))))
    if not reports:
        msg = "no compare report among the inputs (give the report.json of each job)"
        raise UsageError(msg)
    return reports, measurements


def _refuse_mismatches(reports: list[tuple[Path, dict]], by_model: bool) -> None:
    """One error naming every way the reports differ that forbids merging them."""
    problems = []
    for key in meta.MERGE_KEYS:
        versions = {}
        for path, doc in reports:
            versions.setdefault(doc["toolchain"][key], []).append(label(path))
        if len(versions) > 1:
            problems.append(f"{key} versions differ (" + "; ".join(f"{v} in {', '.join(p)}" for v, p in versions.items())
                            + ")")
    rates = {}
    for path, doc in reports:
        rates.setdefault(doc.get("per_hour"), []).append(label(path))
    if len(rates) > 1:  # the energy and battery figures rest on it
        problems.append("they assume different inferences per hour (" + "; ".join(
            f"{r} in {', '.join(p)}" for r, p in rates.items()) + "); run every job with the same --per-hour/--rate")
    if not by_model:
        groups = {}
        for path, doc in reports:
            groups.setdefault(_model_key(doc), (doc, []))[1].append(label(path))
        if len(groups) > 1:
            problems.append("they are of different models (" + "; ".join(
                f"{_model_label(doc)} in {', '.join(p)}" for doc, p in groups.values()) + "); merge one model's "
                "reports at a time, or pass --by-model to write one merged report per model")
    if problems:
        msg = "cannot merge these reports: " + "; ".join(problems)
        raise UsageError(msg)


def _merge_rows(group: list[tuple[Path, dict]]) -> tuple[dict, dict, list[dict], list[dict]]:
    """The rows of every report, the failed targets (with their stage and reason) and where each came from;
    a target in two reports (built or failed in both) is refused: one job per target."""
    rows: dict[str, dict] = {}
    failed: dict[str, str] = {}
    failures: list[dict] = []
    where: dict[str, str] = {}
    merged_from = []
    for path, doc in group:
        mine = list(doc["targets"]) + [t for t in doc.get("failed_targets") or {} if t not in doc["targets"]]
        for name in mine:
            if name in where:
                msg = f"target {name} is in both {where[name]} and {label(path)}; give one report per target"
                raise UsageError(msg)
            where[name] = label(path)
        for name, row in doc["targets"].items():
            rows[name] = {**row, "host": row.get("host") or doc["host"], "report": label(path)}
        for name, why in (doc.get("failed_targets") or {}).items():
            if name not in doc["targets"]:
                failed[name] = why
        failures += [f for f in doc.get("failures") or [] if f["target"] in failed]
        merged_from.append({"file": label(path), "targets": list(doc["targets"]), "failed_targets": list(
            doc.get("failed_targets") or {}), "host": doc["host"], "toolchain": doc["toolchain"]})
    return rows, failed, failures, merged_from


def _source(group: list[tuple[Path, dict]]) -> dict | None:
    """The fp32 source row of the first report that has one (a job whose targets all failed has none),
    with the host it was timed on and the report it came from."""
    for path, doc in group:
        if doc.get("source"):
            return {**doc["source"], "host": doc["host"], "report": label(path)}
    return None


def _toolchain(group: list[tuple[Path, dict]]) -> dict:
    """The versions the jobs used: the same edgepack and onnxruntime (checked); an engine's version the
    jobs disagree on (OpenVINO on two runners) is kept as every value, named by report."""
    seen: dict[str, dict[str, list[str]]] = {}
    for path, doc in group:
        for k, v in doc["toolchain"].items():
            seen.setdefault(k, {}).setdefault(v, []).append(label(path))
    return {k: next(iter(vs)) if len(vs) == 1 else "; ".join(f"{v} ({', '.join(p)})" for v, p in vs.items())[:200]
            for k, vs in sorted(seen.items())}


def _measured(measurements: list[tuple[Path, dict]], doc: dict, rows: dict) -> dict:
    out: dict[str, list] = {}
    key = _model_key(doc)
    for path, m in measurements:
        meas = m["measurement"]
        if tuple(x["sha256"] for x in meas["models"]) != key:
            continue  # another model's measurement (a model zoo): it goes to that model's report
        if meas["target"] not in rows:
            msg = f"{path}: a measurement of target {meas['target']}, which none of the reports holds"
            raise UsageError(msg)
        out.setdefault(meas["target"], []).append({**meas, "file": label(path)})
    return out


def _slug(doc: dict, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(doc["models"][0]["file"]).stem).strip("._") or "model"
    slug = stem if stem not in taken else f"{stem}-{doc['models'][0]['sha256'][:8]}"
    taken.add(slug)
    return slug


def merge(inputs: list[str | Path], out: str | Path, *, budgets: dict | None = None,
          target_budgets: dict | list | None = None, config: str | Path | None = None,
          baseline: str | Path | None = None, by_model: bool = False,
          progress: Callable[[str], None] | None = None) -> list:
    """Merge the reports (and measurements) into ``out/report.{json,md,html}``; with ``by_model``, one
    merged report per model in ``out/<model>/`` and every model's tables in ``out/report.md``.
    Returns one CompareResult per model."""
    from .api import CompareResult
    from .compare import baseline_deltas
    from .render.report import REPORTS, markdown, write_reports
    from .safe_io import check_file_slot, write_file

    out = Path(out)
    reports, measurements = _load([Path(p) for p in inputs])
    _refuse_mismatches(reports, by_model)
    old = None
    if baseline is not None:
        old = read_json(Path(baseline), "report.json")
        check_baseline(old, f"--baseline {baseline}")
    groups: dict[tuple, list] = {}
    for path, doc in reports:
        groups.setdefault(_model_key(doc), []).append((path, doc))
    stray = [label(p) for p, m in measurements if _model_key(m["measurement"]) not in groups]
    if stray:
        msg = f"measurements of a model none of the reports is about: {', '.join(stray)}"
        raise UsageError(msg)
    planned = []
    taken: set[str] = set()
    for key, group in groups.items():
        first = group[0][1]
        rows, failed, failures, merged_from = _merge_rows(group)
        names = list(rows) + list(failed)  # as compare: a budget may name a target that failed
        applied = budget_mod.effective(budget_mod.collect(
            names, config=Path(config) if config is not None else None, every=dict(budgets or {}),
            per_target=target_budgets), names)
        checks = budget_mod.check(rows, applied)
        report = {
            "report_version": meta.REPORT_VERSION,
            "models": first["models"],
            "source": _source(group),
            "toolchain": _toolchain(group),
            "host": None,
            "merged_from": merged_from,
            "targets": rows,
            "failed_targets": failed,
            "failures": failures,
            "budget_settings": meta.budget_settings(applied),
            "budgets": checks,
            "budgets_passed": all(c["passed"] is not False for c in checks),
            "baseline": baseline_deltas(rows, old) if old is not None else None,
            "build_seconds": round(sum(d.get("build_seconds", 0) for _, d in group), 2),
            "jobs": None,
            "per_hour": first.get("per_hour"),
            "measured": _measured(measurements, first, rows),
        }
        planned.append((report, out / _slug(first, taken) if by_model else out, len(group)))
    for _, dest, _ in planned:  # every refusal before anything is written
        for name in REPORTS:
            check_file_slot(dest / name)
    if by_model:
        check_file_slot(out / "report.md")
    results = []
    for report, dest, count in planned:
        if progress:
            progress(f"merge: {count} report(s) of {_model_label(report)} -> {dest}")
        write_reports(report, dest)
        results.append(CompareResult(report, dest))
    if by_model:
        write_file(out / "report.md", "\n".join(f"# {_model_label(r.report)}\n\n{markdown(r.report)}" for r in results))
    return results
