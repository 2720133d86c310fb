"""edgepack merge: per-target compare reports (CI jobs) and verify --measure records as one report;
mismatched or malformed reports refused with one error; budgets re-checked; a model zoo by model."""

from __future__ import annotations

import copy
import json

import onnx
import pytest

from conftest import REPO, SAMPLE_MODEL, tiny_cnn

CALIB = REPO / "sample_apps" / "model" / "calibration"
VOLATILE = ("host_latency", "stage_seconds", "host", "report")  # measured or bookkeeping: differ run to run


def _compare(cli, out, targets, *extra, model=SAMPLE_MODEL, calib=CALIB):
    args = ["compare", model, "--targets", targets, "-o", out, "--jobs", "1", *extra]
    if calib is not None:
        args += ["--calibration", calib]
    return cli(*args)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Two single-target compares (as two CI jobs would run them) and one two-target compare."""
    from edgepack.cli import main

    root = tmp_path_factory.mktemp("merge")
    for name, targets in (("job-rpi4", "rpi4-cpu"), ("job-nnapi", "android-nnapi"), ("both", "rpi4-cpu,android-nnapi")):
        assert main(["compare", str(SAMPLE_MODEL), "--targets", targets, "-o", str(root / name), "--calibration",
                     str(CALIB), "--jobs", "1", "--json"]) == 0
    return root


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def test_two_single_target_compares_merged_equal_one_two_target_compare(jobs, cli):
    flags = ("--max-bundle-mb", "1.6", "--budget", "rpi4-cpu:max-accuracy-drop=0.05")
    code, out, err = cli("merge", jobs / "job-rpi4" / "report.json", jobs / "job-nnapi" / "report.json",
                         "-o", jobs / "merged", *flags)
    both_code, _, both_err = _compare(cli, jobs / "both-budgets", "rpi4-cpu,android-nnapi", *flags)
    merged = json.loads((jobs / "merged" / "report.json").read_text())
    direct = json.loads((jobs / "both-budgets" / "report.json").read_text())
    assert sorted(merged["targets"]) == sorted(direct["targets"]) == ["android-nnapi", "rpi4-cpu"]
    for name in direct["targets"]:
        assert _stable(merged["targets"][name]) == _stable(direct["targets"][name]), name
    strip = [{k: v for k, v in b.items()} for b in direct["budgets"]]
    assert sorted(merged["budgets"], key=lambda b: (b["target"], b["budget"])) == \
        sorted(strip, key=lambda b: (b["target"], b["budget"]))
    assert merged["budgets_passed"] is direct["budgets_passed"] is False  # android-nnapi: 1.71 MB > 1.6
    assert code == both_code == 1
    assert "budget failed: android-nnapi max-bundle-mb" in err and "budget failed: android-nnapi max-bundle-mb" in both_err
    assert merged["models"] == direct["models"] and merged["source"]["models"] == direct["source"]["models"]
    assert [m["file"] for m in merged["merged_from"]] == ["job-rpi4/report.json", "job-nnapi/report.json"]
    md = (jobs / "merged" / "report.md").read_text()
    assert "| rpi4-cpu |" in md and "| android-nnapi |" in md and "**FAIL**" in md
    assert ("Merged by `edgepack merge` from 2 reports (one per job): rpi4-cpu from job-rpi4/report.json; "
            "android-nnapi from job-nnapi/report.json.") in md
    assert f"onnxruntime / CPU ({merged['source']['host']['cpu']}, in job-rpi4/report.json)" in md
    assert "Measured = on the host of the job that built each row" in md
    assert "<svg" in (jobs / "merged" / "report.html").read_text()


def test_merge_reads_the_same_pyproject_budgets_and_keeps_the_baseline(jobs, cli, tmp_path):
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text("[tool.edgepack.budgets.rpi4-cpu]\nmax-bundle-mb = 0.001\n")
    old = json.loads((jobs / "both" / "report.json").read_text())
    old["targets"]["rpi4-cpu"]["model_bytes"] -= 3000
    (tmp_path / "old.json").write_text(json.dumps(old))
    code, out, err = cli("merge", jobs / "job-rpi4" / "report.json", jobs / "job-nnapi" / "report.json", "-o",
                         tmp_path / "m", "--config", cfg, "--baseline", tmp_path / "old.json")
    assert code == 1 and "budget failed: rpi4-cpu max-bundle-mb" in err
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["baseline"]["rpi4-cpu"]["model_kb"] == pytest.approx(3.0)
    assert report["budget_settings"] == [{"target": "rpi4-cpu", "budget": "max-bundle-mb", "limit": 0.001,
                                          "source": "pyproject.toml [tool.edgepack]"}]
    assert "+3.0 KB" in out


def test_failed_targets_are_carried_through_as_in_one_compare(jobs, cli, tmp_path, monkeypatch):
    """A job whose target cannot be built writes a report of that failure (stage and reason); merged, it
    says 'not built' as one compare of all the targets does, and the merge exits 1."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from edgepack.backends.onnxruntime import OnnxRuntimeBackend

    package = OnnxRuntimeBackend.package

    def refuses_rpi5(self, ctx, decisions):
        if ctx.target.name == "rpi5-cpu":
            raise Fail("[ONNXRuntimeError] : 1 : FAIL : cannot do that")
        return package(self, ctx, decisions)

    monkeypatch.setattr(OnnxRuntimeBackend, "package", refuses_rpi5)
    code, _, err = _compare(cli, tmp_path / "job-rpi5", "rpi5-cpu")
    assert code == 1 and "target not built: rpi5-cpu" in err
    code, _, _ = _compare(cli, tmp_path / "all3", "rpi4-cpu,android-nnapi,rpi5-cpu")
    assert code == 1
    job = json.loads((tmp_path / "job-rpi5" / "report.json").read_text())
    assert job["targets"] == {} and job["toolchain"]["edgepack"] and job["toolchain"]["onnxruntime"]
    code, out, err = cli("merge", jobs / "job-rpi4" / "report.json", jobs / "job-nnapi" / "report.json",
                         tmp_path / "job-rpi5" / "report.json", "-o", tmp_path / "m")
    assert code == 1 and "target not built: rpi5-cpu: reduce: Fail: [ONNXRuntimeError] : 1 : FAIL : cannot do that" in err
    merged = json.loads((tmp_path / "m" / "report.json").read_text())
    direct = json.loads((tmp_path / "all3" / "report.json").read_text())
    assert merged["failed_targets"] == direct["failed_targets"] == {
        "rpi5-cpu": "reduce: Fail: [ONNXRuntimeError] : 1 : FAIL : cannot do that"}
    assert merged["failures"] == direct["failures"]
    assert sorted(merged["targets"]) == sorted(direct["targets"]) == ["android-nnapi", "rpi4-cpu"]
    assert "| rpi5-cpu | **not built**: reduce: Fail" in out
    code, _, err = cli("merge", jobs / "job-rpi4" / "report.json", tmp_path / "job-rpi5" / "report.json", "-o",
                       tmp_path / "mb", "--budget", "rpi5-cpu:max-bundle-mb=8")  # as compare: a failed target's budget
    assert code == 1 and "error:" not in err and "target not built: rpi5-cpu" in err
    code, _, err = cli("merge", tmp_path / "job-rpi5" / "report.json", tmp_path / "all3" / "report.json", "-o",
                       tmp_path / "twice")
    assert code == 2 and "target rpi5-cpu is in both job-rpi5/report.json and all3/report.json" in err


def _edited(jobs, tmp_path, name, edit):
    doc = json.loads((jobs / "job-nnapi" / "report.json").read_text())
    edit(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["toolchain"].update(edgepack="0.0.9"),
     "cannot merge these reports: edgepack versions differ (0.1.0 in job-rpi4/report.json; 0.0.9 in "),
    (lambda d: d["toolchain"].update(onnxruntime="1.31.0"), "onnxruntime versions differ ("),
    (lambda d: d["models"][0].update(sha256="0" * 64), "they are of different models (digits_cnn.onnx (sha256 "),
    (lambda d: d.update(targets={"rpi4-cpu": d["targets"]["android-nnapi"] | {"target": "rpi4-cpu"}}),
     "target rpi4-cpu is in both job-rpi4/report.json and "),
    (lambda d: d.update(report_version=1), "other.json: report_version 1; merge reads version 2 reports"),
    (lambda d: d["targets"]["android-nnapi"]["size"].update(total_bytes="big"),
     "other.json: 'targets.android-nnapi.size.total_bytes' must be a finite number"),
    (lambda d: d["targets"]["android-nnapi"].update(why="a\nb"),
     "other.json: 'targets.android-nnapi.why' must be a string (at most 4000 characters, no control characters)"),
    (lambda d: d["targets"]["android-nnapi"]["budget_figures"].update({"max-bundle-mb": 3}),
     "'targets.android-nnapi.budget_figures.max-bundle-mb' must be [figure or null, basis]"),
    (lambda d: d.update(targets=[]), "other.json: 'targets' must be an object"),
    (lambda d: d.update(per_hour=108000.0), "they assume different inferences per hour (1000.0 in job-rpi4/report.json; "
     "108000.0 in "),
    (lambda d: d.update(merged_from=[{"file": "a/report.json"}]),
     "other.json is a merged report; merge the job reports it was made from"),
], ids=["edgepack-version", "onnxruntime-version", "other-model", "duplicate-target", "old-report", "wrong-type",
        "control-char", "figure-shape", "targets-list", "per-hour", "merged-report"])
def test_merge_refuses_mismatched_or_malformed_reports_with_one_error(jobs, cli, tmp_path, edit, message):
    other = _edited(jobs, tmp_path, "other.json", edit)
    code, out, err = cli("merge", jobs / "job-rpi4" / "report.json", other, "-o", tmp_path / "m")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("text", ["{", "[]", '"x"', "null"])
def test_merge_refuses_what_is_not_a_report(cli, tmp_path, text):
    (tmp_path / "r.json").write_text(text)
    code, _, err = cli("merge", tmp_path / "r.json", "-o", tmp_path / "m")
    assert code == 2 and err.count("\n") == 1 and str(tmp_path / "r.json") in err


def test_a_model_zoo_merges_by_model(jobs, measured, cli, tmp_path):
    tiny = tmp_path / "tiny_cnn.onnx"
    onnx.save(tiny_cnn(), str(tiny))
    code, _, err = _compare(cli, tmp_path / "tiny-rpi5", "rpi5-cpu", model=tiny, calib=None)
    assert code == 0, err
    reports = [jobs / "job-rpi4" / "report.json", jobs / "job-nnapi" / "report.json", tmp_path / "tiny-rpi5" / "report.json"]
    code, _, err = cli("merge", *reports, "-o", tmp_path / "refused")
    assert code == 2 and "they are of different models" in err and "--by-model" in err
    code, out, err = cli("merge", *reports, measured, "-o", tmp_path / "zoo", "--by-model", "--max-latency-ms", "1000")
    assert code == 0, err
    digits = json.loads((tmp_path / "zoo" / "digits_cnn" / "report.json").read_text())
    small = json.loads((tmp_path / "zoo" / "tiny_cnn" / "report.json").read_text())
    assert sorted(digits["targets"]) == ["android-nnapi", "rpi4-cpu"] and list(small["targets"]) == ["rpi5-cpu"]
    assert {b["target"] for b in small["budgets"]} == {"rpi5-cpu"}
    assert list(digits["measured"]) == ["rpi4-cpu"] and small["measured"] == {}  # matched by the model's sha256
    combined = (tmp_path / "zoo" / "report.md").read_text()
    assert "# digits_cnn.onnx (sha256 df5fa7f3ec2b)" in combined and "# tiny_cnn.onnx (sha256 " in combined


# ------------------------------------------------------------------------------------ measured where it lands


@pytest.fixture(scope="module")
def measured(jobs):
    """verify --measure --json of the rpi4-cpu bundle on this machine (a host-runnable bundle)."""
    from edgepack.cli import main
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["verify", str(jobs / "job-rpi4" / "rpi4-cpu"), "--measure", "--runs", "20", "--json"])
    assert code == 0
    path = jobs / "measure-rpi4.json"
    path.write_text(buf.getvalue())
    return path


def test_verify_measure_gives_a_labelled_measurement(measured):
    from edgepack.report_meta import host_info
    from edgepack.runtime.host import host_cpu

    doc = json.loads(measured.read_text())
    m = doc["measurement"]
    assert doc["ok"] is True and m["target"] == "rpi4-cpu"
    assert m["machine"] == host_info() and m["machine"]["cpu"] == host_cpu()
    assert m["runtime"].startswith("onnxruntime ") and m["provider"] == "CPUExecutionProvider" == m["requested"]
    lat = m["latency"]
    assert lat["runs"] == 20 and lat["threads"] >= 1 and 0 < lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    [check] = m["reference_check"]
    assert check.startswith("model.ort: passed: 1 output(s) match the reference (lowest cosine ")
    # the same check verify makes (same runtime, same reference input): the same words, the same cosine
    why = check.split(": passed: ", 1)[1]
    assert any(why in line for line in doc["checked"]), doc["checked"]
    assert m["estimated"]["latency_ms"]["value"] > 0 and m["models"][0]["file"] == "digits_cnn.onnx"


def test_the_merged_report_shows_the_measurement_beside_the_estimate(jobs, measured, cli, tmp_path):
    code, out, err = cli("merge", jobs / "job-rpi4" / "report.json", jobs / "job-nnapi" / "report.json", measured,
                         "-o", tmp_path / "m")
    assert code == 0, err
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    [m] = report["measured"]["rpi4-cpu"]
    assert m["file"] == f"{jobs.name}/measure-rpi4.json"
    line = next(x for x in out.splitlines() if x.startswith("| rpi4-cpu | ") and " on " in x and "[CPUExecutionProvider]" in x)
    assert f"on {m['machine']['cpu']}" in line and "estimated" not in line.split("|")[2]
    assert "for Raspberry Pi 4 Model B" in line.split("|")[3]
    assert "Measured where it lands" in (tmp_path / "m" / "report.html").read_text()


def test_measurements_of_another_target_or_model_are_refused(jobs, measured, cli, tmp_path):
    doc = json.loads(measured.read_text())
    doc["measurement"]["target"] = "rpi9-cpu"
    (tmp_path / "t.json").write_text(json.dumps(doc))
    code, _, err = cli("merge", jobs / "job-rpi4" / "report.json", tmp_path / "t.json", "-o", tmp_path / "a")
    assert code == 2 and "a measurement of target rpi9-cpu, which none of the reports holds" in err
    doc = json.loads(measured.read_text())
    doc["measurement"]["models"][0]["sha256"] = "f" * 64
    (tmp_path / "m.json").write_text(json.dumps(doc))
    code, _, err = cli("merge", jobs / "job-rpi4" / "report.json", tmp_path / "m.json", "-o", tmp_path / "b")
    assert code == 2 and f"measurements of a model none of the reports is about: {tmp_path.name}/m.json" in err
    doc = json.loads(measured.read_text())
    doc["measurement"]["latency"]["median_ms"] = "fast"
    (tmp_path / "x.json").write_text(json.dumps(doc))
    code, _, err = cli("merge", jobs / "job-rpi4" / "report.json", tmp_path / "x.json", "-o", tmp_path / "c")
    assert code == 2 and "'measurement.latency.median_ms' must be a finite number above 0" in err


def test_calibrate_check_says_whether_the_estimate_brackets_the_measurement(measured, cli, tmp_path):
    doc = json.loads(measured.read_text())
    med = doc["measurement"]["latency"]["median_ms"]
    inside = copy.deepcopy(doc)
    inside["measurement"]["estimated"]["latency_ms"].update(value=med, low=med / 2, high=med * 2)
    (tmp_path / "in.json").write_text(json.dumps(inside))
    code, out, _ = cli("calibrate", "--check", tmp_path / "in.json")
    assert code == 0 and "inside the band (measured/estimated 1.00x)" in out and "1/1 measurement(s) inside" in out
    outside = copy.deepcopy(doc)
    outside["measurement"]["estimated"]["latency_ms"].update(value=med * 10, low=med * 6, high=med * 16)
    (tmp_path / "out.json").write_text(json.dumps(outside))
    code, out, _ = cli("calibrate", "--check", tmp_path / "in.json", "--check", tmp_path / "out.json")
    assert code == 1 and "below the band (measured/estimated 0.10x)" in out and "calibrate it" in out
    code, _, err = cli("calibrate", "--check", tmp_path / "in.json", "-o", tmp_path / "x.toml")
    assert code == 2 and "give it without -o" in err


def test_verify_measure_falls_back_to_the_cpu_and_says_so(jobs, cli):
    code, out, _ = cli("verify", jobs / "job-nnapi" / "android-nnapi", "--measure", "--runs", "3")
    assert code == 0
    assert "note: NnapiExecutionProvider is not in this onnxruntime" in out and "measured on CPUExecutionProvider" in out
    assert "[CPUExecutionProvider] vs estimated" in out and "for Samsung Galaxy S23" in out


def test_verify_measure_measures_nothing_of_a_changed_bundle(jobs, cli, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(jobs / "job-rpi4" / "rpi4-cpu", bundle)
    (bundle / "README.md").write_text("changed")
    code, out, _ = cli("verify", bundle, "--measure")
    assert code == 1 and "not measured: the bundle has problems" in out and "\nmeasured:" not in out


@pytest.mark.parametrize("args", [("--runs", "5"), ("--measure", "--runs", "0"), ("--threads", "2")])
def test_measure_flags_need_measure_and_positive_values(jobs, cli, args):
    code, _, err = cli("verify", jobs / "job-rpi4" / "rpi4-cpu", *args)
    assert code == 2 and "needs --measure and a value of 1 or more" in err


def test_openvino_bundles_measure_with_their_runtime_config(cli, tmp_path):
    pytest.importorskip("openvino")
    code, _, err = _compare(cli, tmp_path / "ov", "intel-openvino")
    assert code == 0, err
    code, out, _ = cli("verify", tmp_path / "ov" / "intel-openvino", "--measure", "--runs", "5", "--threads", "1",
                       "--json")
    assert code == 0
    m = json.loads(out)["measurement"]
    assert m["provider"] == "OpenVINO CPU" and m["runtime"].startswith("openvino ") and m["latency"]["threads"] == 1
    assert m["reference_check"][0].startswith("model.xml: passed")


def test_the_python_api_merges_too(jobs, tmp_path):
    import edgepack

    [result] = edgepack.merge([jobs / "job-rpi4" / "report.json", jobs / "job-nnapi" / "report.json"], tmp_path / "m",
                              budgets={"max-bundle-mb": 1.6})
    assert isinstance(result, edgepack.CompareResult) and result.out == tmp_path / "m"
    assert sorted(result.rows) == ["android-nnapi", "rpi4-cpu"] and not result.ok
    with pytest.raises(edgepack.UsageError, match="no such file"):
        edgepack.merge([tmp_path / "nope.json"], tmp_path / "x")


@pytest.fixture(scope="module")
def qnn_bundle(tmp_path_factory):
    pytest.importorskip("onnxruntime_qnn")
    from edgepack.cli import main

    out = tmp_path_factory.mktemp("qnn")
    assert main(["build", str(SAMPLE_MODEL), "--target", "android-qnn", "--calibration", str(CALIB), "-o", str(out),
                 "--json"]) == 0
    return out / "android-qnn"


def test_qnn_bundles_are_not_measured_on_the_x86_simulator(qnn_bundle, cli):
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the refusal is for the x86_64 HTP simulator")
    code, out, err = cli("verify", qnn_bundle, "--measure", "--runs", "3")
    assert code == 1 and "\nmeasured " not in out
    assert "the QNN HTP backend on x86_64 is a simulator of the NPU: its timings are no latency of the phone" in err


def test_qnn_bundles_measure_on_the_htp_with_their_provider_options(qnn_bundle, monkeypatch):
    """On a Snapdragon host the HTP runs the context model with the manifest's provider options. Here the
    host is made to look like one (the simulator runs), to check the session, the labels and the reference
    check - not a latency."""
    import platform

    import edgepack

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    findings = edgepack.verify(qnn_bundle, measure=True, runs=2)
    m = findings.measurement
    assert findings.ok, findings.problems
    assert m["provider"] == m["requested"] == "QNNExecutionProvider (HTP)"
    assert m["runtime"].startswith("onnxruntime-qnn ") and "(QNN SDK " in m["runtime"]
    assert m["reference_check"][0].startswith("model_ctx.onnx: passed")
    assert m["latency"]["runs"] == 2 and m["target"] == "android-qnn"
