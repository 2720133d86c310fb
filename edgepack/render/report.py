"""Compare reports: ``report.json`` (complete), ``report.md`` (a pull-request comment), ``report.html``
(one self-contained page with inline SVG charts, no network resources)."""

from __future__ import annotations

import html
import json
from pathlib import Path


def _mb(n: float | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def _est(e: dict | None, unit: str = "") -> str:
    if not e:
        return "–"
    return f"{e['value']:.3g}{unit} ({e['low']:.3g}–{e['high']:.3g})"


def _get(d: dict, *path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _cells(r: dict) -> list[str]:
    cov = r["coverage"]
    acc = r["accuracy"]
    host = r["host_latency"]
    est = r.get("estimates") or {}
    recipes = ", ".join(sorted(set(v or "?" for v in r["recipes"].values())))
    runtime_min = _get(est, "size", "runtime_minimal")
    accuracy = "–" if acc["cosine_min"] is None else f"cos {acc['cosine_min']:.4f}" + (
        f", agreement {acc['agreement']:.3f}" if acc.get("agreement") is not None else "") + (
        f" ({acc['status']})" if acc.get("status") not in (None, "verified") else "")
    return [
        r["target"],
        f"{r['engine']} / {r['provider']}",
        recipes,
        _mb(r["model_bytes"]),
        _mb(runtime_min["value"]) if runtime_min else "–",
        f"{cov['nodes_on_accelerator']}/{cov['nodes_total']} ({100 * cov['fraction']:.0f}%), {cov['partitions']} part.",
        accuracy,
        "–" if not host else f"{host['fp32_ms']:.2f} → {host['shipped_ms']:.2f} ms",
        _est(_get(est, "latency_ms"), " ms"),
        _est(_get(est, "energy"), " mJ"),
        _est(_get(est, "energy", "battery_pct_per_hour"), " %/h"),
    ]


HEADERS = ["target", "runtime", "recipe", "model", "min. runtime (est.)", "accelerator coverage", "accuracy vs fp32",
           "host latency fp32 → shipped (measured)", "device latency (est., band)", "energy/inference (est.)",
           "battery per hour (est.)"]


def markdown(report: dict) -> str:
    lines = ["## edgepack compare", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    for r in report["targets"].values():
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    for target, why in report.get("failed_targets", {}).items():
        lines.append(f"| {target} | **not built**: {why.replace('|', '/')} |" + " |" * (len(HEADERS) - 2))
    lines += ["", "Measured = on the build host, on its CPU (onnxruntime; OpenVINO for OpenVINO bundles), not on the device. "
              "Estimated = edgepack's cost model from the target profile's published figures, value (low–high).", ""]
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

_W, _BAR, _GAP, _LEFT = 640, 22, 10, 130


def _bars(title: str, rows: list[tuple[str, list[tuple[float, str, str]], tuple[float, float] | None]], unit: str) -> str:
    """Horizontal bars: per row segments (value, colour, label), an optional band (low, high)."""
    top = max([sum(v for v, _, _ in segs) for _, segs, _ in rows] + [b[1] for _, _, b in rows if b] + [1e-12])
    scale = (_W - _LEFT - 90) / top
    height = 30 + len(rows) * (_BAR + _GAP)
    parts = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}" width="{_W}" height="{height}" '
             f'viewBox="0 0 {_W} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="0" y="16" class="title">{html.escape(title)}</text>']
    for i, (label, segs, band) in enumerate(rows):
        y = 28 + i * (_BAR + _GAP)
        parts.append(f'<text x="0" y="{y + 15}" class="label">{html.escape(label)}</text>')
        x = _LEFT
        for value, colour, seg_label in segs:
            w = max(value * scale, 0.5)
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_BAR}" fill="{colour}">'
                         f'<title>{html.escape(seg_label)}</title></rect>')
            x += w
        if band:
            lo, hi = _LEFT + band[0] * scale, _LEFT + band[1] * scale
            mid = y + _BAR / 2
            parts.append(f'<line x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" y2="{mid}" class="band"/>'
                         f'<line x1="{lo:.1f}" y1="{y + 4}" x2="{lo:.1f}" y2="{y + _BAR - 4}" class="band"/>'
                         f'<line x1="{hi:.1f}" y1="{y + 4}" x2="{hi:.1f}" y2="{y + _BAR - 4}" class="band"/>')
        total = sum(v for v, _, _ in segs)
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 15}" class="value">{total:.3g} {html.escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _charts(report: dict) -> list[str]:
    rows = list(report["targets"].values())
    size = [(r["target"], [(r["model_bytes"] / 1e6, "#3b82f6", "model files")] +
             ([(_get(r, "estimates", "size", "runtime_minimal", "value") / 1e6, "#f59e0b", "minimal runtime (est.)")]
              if _get(r, "estimates", "size", "runtime_minimal", "value") else []), None) for r in rows]
    charts = [_bars("Bundle size: model (blue) + minimal runtime estimate (amber)", size, "MB")]
    lat = []
    for r in rows:
        est = _get(r, "estimates", "latency_ms")
        if est:
            lat.append((f"{r['target']} est.", [(est["value"], "#8b5cf6", "device estimate")], (est["low"], est["high"])))
        if r["host_latency"]:
            lat.append((f"{r['target']} host", [(r["host_latency"]["shipped_ms"], "#10b981", "measured on the host")], None))
    charts.append(_bars("Latency: device estimate with its band (violet) beside the host measurement (green)", lat, "ms"))
    energy = [(r["target"], [(e["value"], "#ef4444", "energy per inference (est.)")], (e["low"], e["high"]))
              for r in rows if (e := _get(r, "estimates", "energy")) and "value" in e]
    charts.append(_bars("Energy per inference (estimate, band)", energy, "mJ") if energy else
                  '<p class="note">No energy estimates in these bundles.</p>')
    cov = [(r["target"], [(100 * r["coverage"]["fraction"], "#14b8a6", "nodes on the accelerator or runtime")], None)
           for r in rows]
    charts.append(_bars("Accelerator coverage (% of nodes)", cov, "%"))
    return charts


_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#111}table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f4f4f5}
.fail{color:#b91c1c;font-weight:600}.pass{color:#15803d}.chart{display:block;margin:18px 0}
.title{font-weight:600;font-size:13px}.label,.value{font-size:12px}.band{stroke:#111;stroke-width:1.5}.note{color:#555}"""


def html_page(report: dict) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>"
                   for r in report["targets"].values())
    body += "".join(f"<tr><td>{html.escape(t)}</td><td class='fail' colspan='{len(HEADERS) - 1}'>not built: "
                    f"{html.escape(why)}</td></tr>" for t, why in report.get("failed_targets", {}).items())
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
            f"<table id='summary'><tr>{head}</tr>{body}</table>"
            "<p class='note'>Measured = on the build host, on its CPU (onnxruntime; OpenVINO for OpenVINO bundles), not on the device. "
            "Estimated = edgepack's cost model from the target profile's published figures: value (low–high).</p>"
            f"{budgets}<h2>Charts</h2>{charts}</body></html>\n")


REPORTS = ("report.json", "report.md", "report.html")


def write_reports(report: dict, out: Path) -> None:
    from ..safe_io import write_file  # beside the destination, then os.replace: never through a planted symlink

    out.mkdir(parents=True, exist_ok=True)
    write_file(out / "report.json", json.dumps(report, indent=2, default=float) + "\n")
    write_file(out / "report.md", markdown(report))
    write_file(out / "report.html", html_page(report))
