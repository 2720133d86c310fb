"""The Python API (edgepack.build / compare / verify): typed results, EdgepackError subclasses, the
CLI as a thin layer over it, and the README's example run as it stands."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import edgepack
from conftest import REPO, SAMPLE_MODEL
from edgepack import api
from edgepack.build import BuildResult
from edgepack.bundle_check import Findings
from edgepack.errors import OutputError, ProfileError, ShapeError, UsageError

CALIB = REPO / "sample_apps" / "model" / "calibration"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "out"
    return out, edgepack.build(SAMPLE_MODEL, ["rpi5-cpu", edgepack.load_target("android-nnapi")], out,
                               calibration=CALIB, shapes={"input": (1, 1, 8, 8)})


def test_build_returns_build_results(built):
    out, results = built
    assert [r.target for r in results] == ["rpi5-cpu", "android-nnapi"]
    for r in results:
        assert isinstance(r, BuildResult)
        assert r.bundle == out / r.target and (r.bundle / "manifest.json").is_file()
        assert r.manifest["models"][0]["quantization"]["recipe"] == "static-int8"
        assert r.record.is_file() and "host_latency" in r.measurements


def test_all_means_every_builtin_target():
    from edgepack.target import builtin_names

    assert [p.name for p in api.profiles("all")] == [p.name for p in api.profiles(["all"])] == list(builtin_names())
    assert len(builtin_names()) >= 5


def test_shapes_as_strings_or_mapping_are_the_same():
    assert api.shapes_of(["input=1x1x8x8"]) == api.shapes_of({"input": [1, 1, 8, 8]}) == {"input": (1, 1, 8, 8)}
    assert api.shapes_of("input=1x1x8x8") == {"input": (1, 1, 8, 8)}


def test_verify_returns_findings(built):
    out, _ = built
    findings = edgepack.verify(out / "rpi5-cpu")
    assert isinstance(findings, Findings) and findings.ok, findings.problems
    assert any("reference input" in line for line in findings.checked)


def test_verify_of_a_tampered_bundle_is_not_ok(built, tmp_path):
    out, _ = built
    copy = tmp_path / "b"
    shutil.copytree(out / "rpi5-cpu", copy)
    (copy / "README.md").write_text("changed")
    findings = edgepack.verify(copy)
    assert not findings.ok and findings.problems == ["changed file: README.md has 7 bytes, the manifest says "
                                                     f"{(out / 'rpi5-cpu' / 'README.md').stat().st_size}"]


def test_compare_returns_a_compare_result(tmp_path):
    result = edgepack.compare(SAMPLE_MODEL, ["rpi4-cpu", "rpi5-cpu"], tmp_path / "c", calibration=CALIB, jobs=1,
                              budgets={"max-bundle-mb": 50}, target_budgets={"rpi4-cpu": {"max-bundle-mb": 0.001}})
    assert isinstance(result, api.CompareResult)
    assert list(result.rows) == ["rpi4-cpu", "rpi5-cpu"]
    assert not result.ok and result.exit_code == 1
    assert [(b["target"], b["budget"]) for b in result.broken_budgets] == [("rpi4-cpu", "max-bundle-mb")]
    assert json.loads(result.paths["report.json"].read_text())["targets"].keys() == result.rows.keys()


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda o: edgepack.build(SAMPLE_MODEL, "rpi9-cpu", o), ProfileError, "rpi9-cpu"),
    (lambda o: edgepack.build(SAMPLE_MODEL, ["all", "rpi5-cpu"], o), UsageError, "'all' stands for every"),
    (lambda o: edgepack.build(SAMPLE_MODEL, [], o), UsageError, "no target given"),
    (lambda o: edgepack.build(SAMPLE_MODEL, [42], o), UsageError, "not int"),
    (lambda o: edgepack.build(SAMPLE_MODEL, "rpi5-cpu", o, shapes={"input": "1x1x8x8"}), UsageError,
     "sequence of dimensions"),
    (lambda o: edgepack.build(SAMPLE_MODEL, "rpi5-cpu", o, shapes={"input": [1, 1, 9, 9]}), ShapeError,
     "fixed to 8 in the model"),
    (lambda o: edgepack.build(SAMPLE_MODEL, "rpi5-cpu", o, shapes={"nope": [1]}), ShapeError, "unknown input 'nope'"),
    (lambda o: edgepack.build(SAMPLE_MODEL, "rpi5-cpu", o, per_hour=-1), UsageError, "per_hour"),
    (lambda o: edgepack.compare(SAMPLE_MODEL, "rpi5-cpu", o, budgets={"max-bundle-mbb": 3}), UsageError,
     "did you mean 'max-bundle-mb'"),
    (lambda o: edgepack.compare(SAMPLE_MODEL, "rpi5-cpu", o, target_budgets={"rpi4-cpu": {"max-bundle-mb": 3}}),
     UsageError, "not being compared"),
    (lambda o: edgepack.verify(o), OutputError, "bundle folder not found"),
], ids=["unknown-target", "all-and-more", "no-target", "wrong-type", "shape-string", "shape-mismatch",
        "shape-unknown-input", "negative-rate", "unknown-budget", "budget-other-target", "verify-missing"])
def test_bad_input_raises_an_edgepack_error_subclass(tmp_path, call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call(tmp_path / "o")
    assert issubclass(error, edgepack.EdgepackError)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_is_a_thin_layer_over_the_api(monkeypatch, tmp_path):
    """`edgepack build/compare/verify` hand their arguments to edgepack.api and only print the result."""
    calls = []

    def fake(name, result):
        def record(*args, **kwargs):
            calls.append((name, args, kwargs))
            if isinstance(result, Exception):
                raise result
            return result
        return record

    monkeypatch.setattr(api, "build", fake("build", []))
    monkeypatch.setattr(api, "verify", fake("verify", Findings(bundle="b", checked=["x"])))
    monkeypatch.setattr(api, "compare", fake("compare", api.CompareResult(
        {"targets": {}, "budgets": [], "failed_targets": {}, "baseline": None}, tmp_path)))
    from edgepack.cli import main

    assert main(["build", "m.onnx", "--target", "rpi5-cpu", "-o", str(tmp_path), "--shape", "x=1x2", "--json"]) == 0
    assert main(["compare", "m.onnx", "--targets", "rpi4-cpu,rpi5-cpu", "-o", str(tmp_path), "--budget",
                 "rpi4-cpu:max-bundle-mb=3", "--max-latency-ms", "9", "--json"]) == 0
    assert main(["verify", "b"]) == 0
    (b_name, b_args, b_kw), (c_name, c_args, c_kw), (v_name, v_args, _) = calls
    assert b_name == "build" and b_args == (["m.onnx"], ["rpi5-cpu"], str(tmp_path)) and b_kw["shapes"] == ["x=1x2"]
    assert c_name == "compare" and c_args[1] == ["rpi4-cpu", "rpi5-cpu"]
    assert c_kw["target_budgets"] == ["rpi4-cpu:max-bundle-mb=3"] and c_kw["budgets"]["max-latency-ms"] == "9"
    assert v_name == "verify" and v_args == ("b",)


def _readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path):
    (tmp_path / "sample_apps").symlink_to(REPO / "sample_apps")
    script = tmp_path / "example.py"
    script.write_text(_readme_example(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^rpi5-cpu out-api/rpi5-cpu static-int8$", proc.stdout, re.M), proc.stdout
    assert "budgets met out-api-compare/report.html" in proc.stdout
    assert "ShapeError: --shape input=1x1x9x9: dimension 2 is fixed to 8 in the model" in proc.stdout
    assert (tmp_path / "out-api" / "android-nnapi" / "manifest.json").is_file()
