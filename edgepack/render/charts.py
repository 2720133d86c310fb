"""Horizontal bar charts as inline SVG for report.html (no script, no network).

Each row: a label, stacked segments, an optional band (low-high whisker) and a note saying what the
bar includes. The value label starts after both the bar and its whisker, so a whisker never strikes
through it; the picture is as wide as its longest text needs (text widths are estimated generously,
and tests/test_report_html.py measures the rendered boxes in headless Chromium)."""

from __future__ import annotations

import html

BAR, GAP, BAR_AREA, PAD = 22, 10, 360, 6
CHAR_PX = 7.2  # a generous width of one 12px system-ui character: boxes are estimated, never too small
TITLE_CHAR_PX = 7.8

Row = tuple[str, list[tuple[float, str, str]], "tuple[float, float] | None", str]


def _width(text: str, per_char: float = CHAR_PX) -> float:
    return len(text) * per_char


def bars(title: str, rows: list[Row], unit: str) -> str:
    """An SVG of ``rows`` (label, [(value, colour, segment label)], band or None, note), values in ``unit``."""
    left = max([_width(label) for label, _, _, _ in rows] + [60.0]) + 14
    top = max([sum(v for v, _, _ in segs) for _, segs, _, _ in rows] + [b[1] for _, _, b, _ in rows if b] + [1e-12])
    scale = BAR_AREA / top
    texts = [f"{sum(v for v, _, _ in segs):.3g} {unit}" + (f" · {note}" if note else "") for _, segs, _, note in rows]
    width = int(left + BAR_AREA + PAD + max([_width(t) for t in texts] + [0.0]) + 16)
    width = max(width, int(_width(title, TITLE_CHAR_PX)) + 16)
    height = 30 + len(rows) * (BAR + GAP)
    parts = [f'<svg class="chart" role="img" aria-label="{html.escape(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="0" y="16" class="title">{html.escape(title)}</text>']
    for i, ((label, segs, band, note), text) in enumerate(zip(rows, texts)):
        y = 28 + i * (BAR + GAP)
        parts.append(f'<text x="0" y="{y + 15}" class="label">{html.escape(label)}</text>')
        x = left
        for value, colour, seg_label in segs:
            w = max(value * scale, 0.5)
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR}" fill="{colour}">'
                         f'<title>{html.escape(seg_label)}: {value:.3g} {html.escape(unit)}</title></rect>')
            x += w
        end = x
        if band:
            lo, hi = left + band[0] * scale, left + band[1] * scale
            mid = y + BAR / 2
            parts.append(f'<line x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" y2="{mid}" class="band"/>'
                         f'<line x1="{lo:.1f}" y1="{y + 4}" x2="{lo:.1f}" y2="{y + BAR - 4}" class="band"/>'
                         f'<line x1="{hi:.1f}" y1="{y + 4}" x2="{hi:.1f}" y2="{y + BAR - 4}" class="band"/>')
            end = max(end, hi + 1.5)  # the whisker's cap and its stroke
        value, _, rest = text.partition(" · ")
        parts.append(f'<text x="{end + PAD:.1f}" y="{y + 15}" class="value">{html.escape(value)}'
                     + (f'<tspan class="what"> · {html.escape(rest)}</tspan>' if rest else "") + "</text>")
    parts.append("</svg>")
    return "".join(parts)
