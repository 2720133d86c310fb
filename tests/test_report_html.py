"""report.html in headless Chromium: a screenshot, and the rendered boxes of every chart's labels,
whiskers and bars measured (getBoundingClientRect) - no value label is struck through by a whisker or
covered by a bar, no two labels overlap, nothing is cut off by its chart."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO, SAMPLE_MODEL
from edgepack.render.charts import bars

CALIB = REPO / "sample_apps" / "model" / "calibration"

# Runs in the page: every pair of boxes in one chart that must not intersect.
PROBE = """<script>
function box(e) { const r = e.getBoundingClientRect(); return {l: r.left, r: r.right, t: r.top, b: r.bottom}; }
function hit(a, b) { return a.l < b.r - 0.5 && b.l < a.r - 0.5 && a.t < b.b - 0.5 && b.t < a.b - 0.5; }
const found = [];
let texts = 0;
document.querySelectorAll('svg.chart').forEach((svg, i) => {
  const frame = box(svg);
  const labels = [...svg.querySelectorAll('text')];
  const marks = [...svg.querySelectorAll('line.band, rect')];
  texts += labels.length;
  labels.forEach((t, j) => {
    const a = box(t);
    if (a.l < frame.l - 0.5 || a.r > frame.r + 0.5 || a.t < frame.t - 0.5 || a.b > frame.b + 0.5)
      found.push(`chart ${i}: '${t.textContent}' is cut off by its chart`);
    marks.forEach(m => { if (hit(a, box(m))) found.push(`chart ${i}: '${t.textContent}' overlaps a ${m.tagName}`); });
    labels.slice(j + 1).forEach(u => { if (hit(a, box(u))) found.push(`chart ${i}: '${t.textContent}' overlaps '${u.textContent}'`); });
  });
});
document.body.setAttribute('data-probe', JSON.stringify({texts: texts, found: found}));
</script>"""


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


BROWSER = _chromium()
needs_chromium = pytest.mark.skipif(BROWSER is None, reason="no Chromium (Debian: apt-get install chromium)")


def _chrome(args, profile):
    return subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                           *args], capture_output=True, text=True, timeout=120)


def probe(page_html: str, tmp_path) -> dict:
    page = tmp_path / "probe.html"
    page.write_text(page_html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chrome(["--window-size=1600,2400", "--dump-dom", page.as_uri()], tmp_path / "p1").stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from edgepack.cli import main

    targets = "android-nnapi,ios-coreml,rpi4-cpu" + (",intel-openvino" if importlib.util.find_spec("openvino") else "")
    out = tmp_path_factory.mktemp("html") / "out"
    assert main(["compare", str(SAMPLE_MODEL), "--targets", targets, "-o", str(out), "--calibration", str(CALIB),
                 "--json"]) == 0
    return out / "report.html"


@needs_chromium
def test_no_label_is_struck_through_covered_or_cut_off(page, tmp_path):
    result = probe(page.read_text(encoding="utf-8"), tmp_path)
    assert result["texts"] > 20  # the charts rendered, with their labels
    assert result["found"] == []


@needs_chromium
def test_the_probe_sees_a_whisker_through_a_label(page, tmp_path):
    """Negative control: the old layout (value label right after the bar, inside the whisker) is caught."""
    text = page.read_text(encoding="utf-8")
    m = re.search(r'<rect x="([0-9.]+)" y="(\d+)" width="([0-9.]+)" height="22" fill="#ef4444">.*?</rect>'
                  r'<line x1="[0-9.]+" y1="[0-9.]+" x2="([0-9.]+)"[^>]*/>.*?<text x="([0-9.]+)" y="\d+" class="value">',
                  text)
    assert m and float(m.group(4)) > float(m.group(1)) + float(m.group(3)) + 6  # the whisker reaches past the bar
    old_x = float(m.group(1)) + float(m.group(3)) + 6
    broken = text[:m.start(5)] + f"{old_x:.1f}" + text[m.end(5):]
    found = probe(broken, tmp_path)["found"]
    assert any("overlaps a line" in f for f in found), found


@needs_chromium
def test_screenshot(page, tmp_path):
    shot = tmp_path / "report.png"
    _chrome(["--window-size=1400,2200", f"--screenshot={shot}", page.as_uri()], tmp_path / "p2")
    assert shot.is_file() and shot.stat().st_size > 20_000
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "<link" not in text  # the report itself stays self-contained


def test_value_labels_start_after_the_whisker():
    svg = bars("t", [("a", [(1.0, "#000", "x")], (0.5, 2.0), "note"), ("b", [(2.0, "#000", "y")], None, "")], "ms")
    values = [float(x) for x in re.findall(r'<text x="([0-9.]+)" y="\d+" class="value">', svg)]
    whisker_end = max(float(x) for x in re.findall(r'x2="([0-9.]+)"', svg))
    assert values[0] > whisker_end
    assert "<tspan class=\"what\"> · note</tspan>" in svg
