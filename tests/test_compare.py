"""edgepack compare: side-by-side reports, budgets (exit 1 / 0), pyproject budgets, baseline deltas."""

from __future__ import annotations

import json
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
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 3 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in page and "<link" not in page  # self-contained


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
