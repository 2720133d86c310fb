"""edgepack compare: side-by-side reports, budgets (exit 1 / 0), pyproject budgets, baseline deltas."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO, SAMPLE_MODEL
from edgepack.budgets import Budget, effective, parse_budget_arg
from edgepack.errors import UsageError

CALIB = REPO / "sample_apps" / "model" / "calibration"
TARGETS = "android-nnapi,ios-coreml,rpi4-cpu,rpi5-cpu"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from edgepack.cli import main

    out = tmp_path_factory.mktemp("cmp") / "out"
    code = main(["compare", str(SAMPLE_MODEL), "--targets", TARGETS, "-o", str(out), "--calibration", str(CALIB),
                 "--json", "--jobs", "2"])
    return out, code


def test_reports_are_written(compared):
    out, code = compared
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["targets"]) == TARGETS.split(",")
    for row in report["targets"].values():
        assert row["model_bytes"] > 0 and row["coverage"]["nodes_total"] > 0
        assert row["host_latency"]["shipped_ms"] > 0
    md = (out / "report.md").read_text()
    assert md.startswith("## edgepack compare") and "| rpi5-cpu |" in md
    assert report["report_version"] == 2
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 3 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in page and "<link" not in page  # self-contained


def test_fp32_source_row_comes_first(compared):
    out, _ = compared
    report = json.loads((out / "report.json").read_text())
    src = report["source"]
    assert src["models"][0]["file"] == "digits_cnn.onnx" and src["bytes"] == SAMPLE_MODEL.stat().st_size
    assert src["host_latency"]["median_ms"] > 0 and "onnxruntime CPU" in src["host_latency"]["what"]
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| fp32 source (digits_cnn.onnx) | onnxruntime / CPU (this host) | none (fp32) | 0.06 MB")
    for name, row in report["targets"].items():  # estimates at fp32 beside the shipped ones
        fp32, shipped = row["estimates_fp32"]["latency_ms"], row["estimates"]["latency_ms"]
        assert fp32["value"] > 0 and f"{fp32['value']:.3g} → {shipped['value']:.3g} ms" in (out / "report.md").read_text()


def test_one_line_per_target_says_why_its_recipe(compared):
    out, _ = compared
    md = (out / "report.md").read_text()
    why = md.split("### Why these recipes", 1)[1].split("###", 1)[0]
    assert [line.split("**")[1] for line in why.splitlines() if line.startswith("- **")] == TARGETS.split(",")
    assert "- **ios-coreml**: fp16: the Neural Engine computes in fp16 anyway" in why


def test_why_names_the_recipes_passed_over(cli, tmp_path):
    code, _, _ = cli("compare", SAMPLE_MODEL, "--targets", "android-nnapi", "-o", tmp_path / "o", "--jobs", "1")
    assert code == 0
    why = json.loads((tmp_path / "o" / "report.json").read_text())["targets"]["android-nnapi"]["why"]
    assert why.startswith("none: fp32 model; NNAPI drivers run it") and "(static-int8 skipped: " in why


def test_sizes_include_the_runtime_each_target_ships_with(compared):
    out, _ = compared
    report = json.loads((out / "report.json").read_text())
    for row in report["targets"].values():
        size = row["size"]
        assert size["runtime"] == "minimal onnxruntime build (est.)" and size["runtime_bytes"] > 1e6
        assert size["total_bytes"] == size["model_bytes"] + size["runtime_bytes"]
        assert row["budget_figures"]["max-bundle-mb"] == [size["total_bytes"] / 1e6, "model + minimal onnxruntime build (est.)"]


def test_host_latencies_are_timed_serially_after_the_builds(compared):
    out, _ = compared
    report = json.loads((out / "report.json").read_text())
    for row in report["targets"].values():
        host = row["host_latency"]
        assert host["timing"].startswith("timed after all targets were built, one target at a time")
        assert host["what"] == {"fp32": "fp32 original, onnxruntime CPU", "shipped": "shipped model.ort, onnxruntime CPU"}
        assert host["models"]["model"]["shipped"]["runs"] >= 20 and host["threads"] == 1


def test_a_target_that_cannot_be_retimed_keeps_its_build_figure_marked(cli, tmp_path, monkeypatch):
    from edgepack.backends.onnxruntime import OnnxRuntimeBackend
    from edgepack.errors import StageError

    def broken(self, *args, **kwargs):
        raise StageError("no host runtime")

    monkeypatch.setattr(OnnxRuntimeBackend, "host_runners", broken)
    code, out, _ = cli("compare", SAMPLE_MODEL, "--targets", "rpi4-cpu", "-o", tmp_path / "o", "--jobs", "1")
    assert code == 0
    host = json.loads((tmp_path / "o" / "report.json").read_text())["targets"]["rpi4-cpu"]["host_latency"]
    assert "not comparable across targets" in host["timing"] and host["retime_error"] == "StageError: no host runtime"
    assert "(during the build: not comparable)" in out


def test_openvino_row_shows_both_engines_fp32_and_its_runtime(cli, tmp_path):
    pytest.importorskip("openvino")
    code, out, _ = cli("compare", SAMPLE_MODEL, "--targets", "intel-openvino,rpi5-cpu", "-o", tmp_path / "o",
                       "--calibration", CALIB, "--jobs", "2")
    assert code == 0
    row = json.loads((tmp_path / "o" / "report.json").read_text())["targets"]["intel-openvino"]
    host = row["host_latency"]
    assert host["fp32_ms"] > 0 and host["fp32_engine_ms"] > 0 and host["shipped_ms"] > 0
    assert host["what"]["fp32_engine"] == "fp32 original, OpenVINO CPU"
    assert re.search(r"\| fp32 [0-9.]+ \(onnxruntime\) / [0-9.]+ \(OpenVINO CPU\) → [0-9.]+ ms \(OpenVINO CPU\) \|", out)
    size = row["size"]
    assert size["runtime_bytes"] > 30e6 and size["runtime"].startswith("openvino runtime libraries")
    assert "model + openvino runtime libraries" in (tmp_path / "o" / "report.html").read_text()


def test_progress_shows_every_target_on_a_terminal_and_plain_lines_in_ci():
    import io

    from edgepack.render.progress import Progress

    term = io.StringIO()
    p = Progress(True, term)
    for msg in ("rpi4-cpu: prepare", "rpi5-cpu: prepare", "rpi4-cpu: quantize", "reports: writing"):
        p(msg)
    screen = term.getvalue()
    last = screen.rsplit("\033[2A", 1)[-1]  # the last redraw: three lines, one per target and the report step
    p.done()
    assert term.getvalue().endswith("\033[3A")  # the block is cleared, the cursor back where it began
    assert "rpi4-cpu: [" in last and "] quantize" in last and "rpi5-cpu: [" in last and "] prepare" in last
    assert "reports: [" in last and "] writing" in last and "\033[K" in screen
    log = io.StringIO()
    p = Progress(False, log)
    p("rpi4-cpu: prepare")
    p("rpi5-cpu: prepare")
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("... [") for line in lines) and "\033" not in log.getvalue()
    assert lines[1].endswith("] rpi5-cpu: prepare")


def _run(cli, out, *extra):
    return cli("compare", SAMPLE_MODEL, "--targets", "rpi4-cpu,rpi5-cpu", "-o", out, "--calibration", CALIB,
               "--jobs", "1", *extra)


def test_broken_budget_exits_1_and_names_it(cli, tmp_path):
    code, out, err = _run(cli, tmp_path / "o", "--budget", "rpi4-cpu:max-bundle-mb=0.001")
    assert code == 1
    assert "budget failed: rpi4-cpu max-bundle-mb" in err and "> 0.001" in err
    assert "**FAIL**" in out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    failed = [b for b in report["budgets"] if b["passed"] is False]
    assert [(b["target"], b["budget"]) for b in failed] == [("rpi4-cpu", "max-bundle-mb")]
    assert failed[0]["over_by"] > 0


def test_met_budgets_exit_0(cli, tmp_path):
    code, out, _ = _run(cli, tmp_path / "o", "--max-bundle-mb", "50", "--max-accuracy-drop", "0.05",
                        "--max-latency-ms", "1000")
    assert code == 0 and "FAIL" not in out


def test_budgets_from_pyproject(cli, tmp_path):
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text("[tool.edgepack]\nmax-bundle-mb = 50\n[tool.edgepack.budgets.rpi5-cpu]\nmax-bundle-mb = 0.001\n")
    code, _, err = _run(cli, tmp_path / "o", "--config", cfg)
    assert code == 1 and "rpi5-cpu max-bundle-mb" in err and "rpi4-cpu max-bundle-mb" not in err


def test_baseline_delta(cli, tmp_path):
    code, _, _ = _run(cli, tmp_path / "a")
    assert code == 0
    old = json.loads((tmp_path / "a" / "report.json").read_text())
    old["targets"]["rpi4-cpu"]["model_bytes"] -= 2000  # pretend the last release was 2 KB smaller
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, out, _ = _run(cli, tmp_path / "b", "--baseline", tmp_path / "old.json")
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["baseline"]["rpi4-cpu"]["model_kb"] == pytest.approx(2.0)
    assert "host_latency_pct" in report["baseline"]["rpi5-cpu"]
    assert "+2.0 KB" in out


@pytest.mark.parametrize("arg,expected", [
    ("rpi4-cpu:max-bundle-mbb=3", "unknown budget 'max-bundle-mbb' (did you mean 'max-bundle-mb'?)"),
    ("rpi9:max-bundle-mb=3", "names target 'rpi9'"),
    ("rpi4-cpu:max-bundle-mb=lots", "must be a number"),
    ("max-bundle-mb", "must look like TARGET:KEY=VALUE"),
])
def test_bad_budget_args(arg, expected):
    with pytest.raises(UsageError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_budget_arg(arg, ["rpi4-cpu", "rpi5-cpu"])


def test_per_target_budget_beats_global():
    eff = effective([Budget("max-bundle-mb", 8, "rpi4-cpu", "--budget"), Budget("max-bundle-mb", 50, None, "--max")],
                    ["rpi4-cpu", "rpi5-cpu"])
    assert eff["rpi4-cpu"]["max-bundle-mb"].limit == 8 and eff["rpi5-cpu"]["max-bundle-mb"].limit == 50


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_html_renders_in_headless_chromium(compared, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); the HTML report was not rendered")
    out, _ = compared
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    assert "<table id=\"summary\">" in dom and dom.count("<svg") >= 3 and "<rect" in dom
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1280,1600", (out / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_a_target_that_cannot_be_built_does_not_stop_the_others(cli, tmp_path):
    pytest.importorskip("openvino")
    import onnxruntime

    from pathlib import Path

    model = Path(onnxruntime.__file__).parent / "datasets" / "logreg_iris.onnx"  # ai.onnx.ml: no OpenVINO
    code, out, err = cli("compare", model, "--targets", "rpi4-cpu,intel-openvino", "-o", tmp_path / "o", "--jobs", "1")
    assert code == 1
    assert "target not built: intel-openvino: plan: OpenVINO has no ai.onnx.ml operators" in err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert list(report["targets"]) == ["rpi4-cpu"] and "intel-openvino" in report["failed_targets"]
    assert "**not built**" in out
