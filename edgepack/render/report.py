"""Compare reports: ``report.json`` (complete), ``report.md`` (a pull-request comment), ``report.html``
(one self-contained page with inline SVG charts, no network resources).

Every figure says what it is: sizes include the runtime each target ships with (named per bar),
host latencies are measured on this host after the builds (the fp32 original in onnxruntime, and in
the target's own engine where that differs, beside the shipped model), device figures are estimates
with their band and the fp32 estimate in front of the shipped one. A row for the fp32 source comes
first; one line per target says why its recipe was chosen."""

from __future__ import annotations

import html
import json
from pathlib import Path

from .charts import bars


def _mb(n: float | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def _get(d: dict, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _est(e: dict | None, unit: str = "", fp32: dict | None = None) -> str:
    if not e or "value" not in e:
        return "–"
    head = f"{fp32['value']:.3g} → " if fp32 and "value" in fp32 else ""
    return f"{head}{e['value']:.3g}{unit} ({e['low']:.3g}–{e['high']:.3g})"


def _host(h: dict | None) -> str:
    if not h:
        return "–"
    what = h.get("what") or {}
    engine = what.get("shipped", "").rsplit(", ", 1)[-1] or "onnxruntime CPU"
    if "fp32_engine_ms" in h:
        return (f"fp32 {h['fp32_ms']:.3f} (onnxruntime) / {h['fp32_engine_ms']:.3f} ({engine}) → "
                f"{h['shipped_ms']:.3f} ms ({engine})")
    flag = "" if "after all targets" in (h.get("timing") or "") else " (during the build: not comparable)"
    return f"{h['fp32_ms']:.3f} → {h['shipped_ms']:.3f} ms ({engine}){flag}"


def _size(r: dict) -> str:
    s = r.get("size")
    if not s:
        return _mb(r["model_bytes"])
    return f"{_mb(s['total_bytes'])} ({s['model_bytes'] / 1e6:.2f} model + {s['runtime_bytes'] / 1e6:.2f} {s['runtime']})"


def _cells(r: dict) -> list[str]:
    cov = r["coverage"]
    acc = r["accuracy"]
    est = r.get("estimates") or {}
    fp32 = r.get("estimates_fp32") or {}
    recipes = ", ".join(sorted(set(v or "?" for v in r["recipes"].values())))
    accuracy = "–" if acc["cosine_min"] is None else f"cos {acc['cosine_min']:.4f}" + (
        f", agreement {acc['agreement']:.3f}" if acc.get("agreement") is not None else "") + (
        f" ({acc['status']})" if acc.get("status") not in (None, "verified") else "")
    return [
        r["target"],
        f"{r['engine']} / {r['provider']}",
        recipes,
        _size(r),
        _mb(_get(r, "size", "app_download_bytes")),
        f"{cov['nodes_on_accelerator']}/{cov['nodes_total']} ({100 * cov['fraction']:.0f}%), {cov['partitions']} part.",
        accuracy,
        _host(r["host_latency"]),
        _est(_get(est, "latency_ms"), " ms", fp32.get("latency_ms")),
        _est(_get(est, "energy"), " mJ", fp32.get("energy")),
        _est(_get(est, "energy", "battery_pct_per_hour"), " %/h"),
    ]


def _source_cells(report: dict) -> list[str] | None:
    src = report.get("source")
    if not src:
        return None
    files = ", ".join(m["file"] for m in src["models"])
    host = src.get("host_latency")
    where = "this host"
    if report.get("merged_from") and isinstance(src.get("host"), dict):  # a merged report: the first job's host
        where = f"{src['host'].get('cpu', '?')}, in {src.get('report', '?')}"
    return [f"fp32 source ({files})", f"onnxruntime / CPU ({where})", "none (fp32)", f"{_mb(src['bytes'])} (model only)",
            "–", "–", "the reference", f"{host['median_ms']:.3f} ms" if host else "–",
            "fp32 estimate: left of → in each row", "fp32 estimate: left of → in each row", "–"]


HEADERS = ["target", "runtime", "recipe", "size: model + runtime", "app download (est.)", "accelerator coverage",
           "accuracy vs fp32", "host latency fp32 → shipped (measured)", "device latency fp32 → shipped (est., band)",
           "energy/inference fp32 → shipped (est.)", "battery per hour (est.)"]

NOTES = ("Measured = on this host, after all targets were built, one target at a time: the fp32 original in onnxruntime "
         "CPU (and in the target's own engine where that differs) and the shipped model in the engine the device uses; "
         "comparable with each other, not with the device. Estimated = edgepack's cost model from the target "
         "profile's published figures, value (low–high), the fp32 source estimated the same way before the arrow. "
         "Sizes include the runtime each target ships with, named in each row.")


def _notes(report: dict) -> str:
    """NOTES; a merged report's host figures were measured on each job's host, not on one."""
    if report.get("merged_from"):
        return NOTES.replace("Measured = on this host, after all targets were built,",
                             "Measured = on the host of the job that built each row (named below), after its builds,")
    return NOTES


def _hosts_line(report: dict) -> str:
    """Where the host figures were measured: one machine, or (a merged report) one per target."""
    def cpu(host) -> str:
        return f"{host.get('cpu', '?')} ({host.get('machine', '?')}, {host.get('os', '?')})" if isinstance(host, dict) else "?"

    hosts = {name: r.get("host") for name, r in report["targets"].items()}
    distinct = {cpu(h) for h in hosts.values()}
    if report.get("merged_from") and len(distinct) > 1:
        return "Host figures measured on: " + "; ".join(f"{n}: {cpu(h)}" for n, h in hosts.items()) + "."
    return f"Host figures measured on: {next(iter(distinct)) if distinct else cpu(report.get('host'))}."


def _why_lines(report: dict) -> list[str]:
    return [f"- **{name}**: {r['why']}" for name, r in report["targets"].items() if r.get("why")]


def _measured_lines(report: dict) -> list[str]:
    """Measurements from `edgepack verify --measure` on machines close to the targets (see merge)."""
    lines = []
    for target, items in (report.get("measured") or {}).items():
        est = _get(report, "targets", target, "estimates", "latency_ms")
        device = _get(report, "targets", target, "device") or "the target device"
        for m in items:
            lat = m["latency"]
            machine = m["machine"]
            where = f"{machine.get('cpu', '?')}, {machine.get('os', '?')}"
            lines.append(f"| {target} | {lat['median_ms']:.3f} ms (p10 {lat['p10_ms']:.3f}, p90 {lat['p90_ms']:.3f}, "
                         f"{lat['runs']} runs, {lat['threads']} thread(s)) on {where} with {m['runtime']} "
                         f"[{m['provider']}] | " + (f"{est['value']:.3g} ms ({est['low']:.3g}–{est['high']:.3g}) for "
                                                   f"{device.split(' (')[0]}" if est else "–") + " |")
    return lines


def markdown(report: dict) -> str:
    lines = ["## edgepack compare", ""]
    merged = report.get("merged_from")
    if merged:  # edgepack merge: one report per CI job
        lines += [f"Merged by `edgepack merge` from {len(merged)} reports (one per job): "
                  + "; ".join(f"{', '.join(m['targets'] + m.get('failed_targets', [])) or 'no target'} from "
                              f"{m['file']}" for m in merged) + ".", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    src = _source_cells(report)
    if src:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in src) + " |")
    for r in report["targets"].values():
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    for target, why in report.get("failed_targets", {}).items():
        lines.append(f"| {target} | **not built**: {why.replace('|', '/')} |" + " |" * (len(HEADERS) - 2))
    lines += ["", _notes(report), "", _hosts_line(report), ""]
    why = _why_lines(report)
    if why:
        lines += ["### Why these recipes", "", *why, ""]
    measured = _measured_lines(report)
    if measured:
        lines += ["### Measured where it lands", "", "| target | measured (verify --measure) | estimated |",
                  "|---|---|---|", *measured, ""]
    if report["budgets"]:
        lines += ["### Budgets", "", "| target | budget | limit | figure | result | basis |", "|---|---|---|---|---|---|"]
        for b in report["budgets"]:
            result = "n/a" if b["passed"] is None else ("pass" if b["passed"] else f"**FAIL** (over by {b['over_by']})")
            value = "–" if b["value"] is None else f"{b['value']}"
            lines.append(f"| {b['target']} | {b['budget']} | {b['limit']} | {value} | {result} | {b['basis']} |")
        lines.append("")
    if report.get("baseline"):
        lines += ["### Against the baseline", "", "| target | model | host latency | est. latency | recipe changed |",
                  "|---|---|---|---|---|"]
        for t, d in report["baseline"].items():
            if d.get("new_target"):
                lines.append(f"| {t} | new target | | | |")
                continue
            host = f"{d['host_latency_pct']:+.1f}%" if "host_latency_pct" in d else "–"
            estl = f"{d['estimated_latency_pct']:+.1f}%" if "estimated_latency_pct" in d else "–"
            lines.append(f"| {t} | {d['model_kb']:+.1f} KB | {host} | {estl} | {'yes' if d['recipe_changed'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- charts


def _charts(report: dict) -> list[str]:
    rows = list(report["targets"].values())
    size = []
    src = report.get("source")
    if src:
        size.append(("fp32 source", [(src["bytes"] / 1e6, "#94a3b8", "the fp32 .onnx")], None, "the fp32 .onnx alone"))
    for r in rows:
        s = r.get("size") or {"model_bytes": r["model_bytes"], "runtime_bytes": 0, "runtime": "no runtime figure"}
        size.append((r["target"], [(s["model_bytes"] / 1e6, "#3b82f6", "model files"),
                                   (s["runtime_bytes"] / 1e6, "#f59e0b", s["runtime"])], None,
                     f"model + {s['runtime']}"))
    charts = [bars("Size: model (blue) + the runtime each target ships with (amber)", size, "MB")]
    lat = []
    for r in rows:
        est = _get(r, "estimates", "latency_ms")
        if est:
            device = (r.get("device") or "the device").split(" (")[0]
            lat.append((f"{r['target']} est.", [(est["value"], "#8b5cf6", "device estimate")], (est["low"], est["high"]),
                        f"estimated for {device}"))
        if r["host_latency"]:
            lat.append((f"{r['target']} host", [(r["host_latency"]["shipped_ms"], "#10b981", "measured on this host")],
                        None, "measured on this host"))
    charts.append(bars("Latency: device estimate with its band (violet) beside the host measurement (green)", lat, "ms"))
    energy = [(r["target"], [(e["value"], "#ef4444", "energy per inference (est.)")], (e["low"], e["high"]), "estimate")
              for r in rows if (e := _get(r, "estimates", "energy")) and "value" in e]
    charts.append(bars("Energy per inference (estimate, band)", energy, "mJ") if energy else
                  '<p class="note">No energy estimates in these bundles.</p>')
    cov = [(r["target"], [(100 * r["coverage"]["fraction"], "#14b8a6", "nodes on the accelerator or runtime")], None, "")
           for r in rows]
    charts.append(bars("Accelerator coverage (% of nodes)", cov, "%"))
    return charts


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111}table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f5}
tr.source td{background:#f8fafc;font-style:italic}
.fail{color:#b91c1c;font-weight:600}.pass{color:#15803d}.chart{display:block;margin:18px 0}
.title{font-weight:600;font-size:13px}.label,.value,.what{font-size:12px}.what{fill:#555}.band{stroke:#111;stroke-width:1.5}
.note{color:#555}"""


def _table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f"<tr class='{c}'>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>"
                   for r, c in zip(rows, classes or [""] * len(rows)))
    return f"<tr>{head}</tr>{body}"


def html_page(report: dict) -> str:
    src = _source_cells(report)
    rows = ([src] if src else []) + [_cells(r) for r in report["targets"].values()]
    body = _table(HEADERS, rows, (["source"] if src else []) + [""] * len(report["targets"]))
    body += "".join(f"<tr><td>{html.escape(t)}</td><td class='fail' colspan='{len(HEADERS) - 1}'>not built: "
                    f"{html.escape(why)}</td></tr>" for t, why in report.get("failed_targets", {}).items())
    why = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(r['why'])}</li>" for n, r in report["targets"].items()
                  if r.get("why"))
    measured = ""
    if _measured_lines(report):
        cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in _measured_lines(report)]
        measured = ("<h2>Measured where it lands</h2><table>"
                    + _table(["target", "measured (verify --measure)", "estimated"], cells) + "</table>")
    budgets = ""
    if report["budgets"]:
        trs = []
        for b in report["budgets"]:
            cls, text = ("", "n/a") if b["passed"] is None else (("pass", "pass") if b["passed"] else
                                                                   ("fail", f"FAIL (over by {b['over_by']})"))
            trs.append(f"<tr><td>{html.escape(b['target'])}</td><td>{b['budget']}</td><td>{b['limit']}</td>"
                       f"<td>{'–' if b['value'] is None else b['value']}</td><td class='{cls}'>{text}</td>"
                       f"<td>{html.escape(b['basis'])}</td></tr>")
        budgets = ("<h2>Budgets</h2><table><tr><th>target</th><th>budget</th><th>limit</th><th>figure</th>"
                   "<th>result</th><th>basis</th></tr>" + "".join(trs) + "</table>")
    charts = "".join(_charts(report))
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>edgepack compare</title>"
            f"<style>{_CSS}</style></head><body><h1>edgepack compare</h1>"
            f"<table id='summary'>{body}</table>"
            f"<p class='note'>{html.escape(_notes(report))}</p><p class='note'>{html.escape(_hosts_line(report))}</p>"
            + (f"<h2>Why these recipes</h2><ul>{why}</ul>" if why else "")
            + f"{measured}{budgets}<h2>Charts</h2>{charts}</body></html>\n")


REPORTS = ("report.json", "report.md", "report.html")


def write_reports(report: dict, out: Path) -> None:
    from ..safe_io import write_file  # beside the destination, then os.replace: never through a planted symlink

    out.mkdir(parents=True, exist_ok=True)
    write_file(out / "report.json", json.dumps(report, indent=2, default=float) + "\n")
    write_file(out / "report.md", markdown(report))
    write_file(out / "report.html", html_page(report))
