"""Issue #14, items 6 and 7: untrusted input ends in ONE line on stderr, never a traceback, never
onnxruntime's or numpy's own lines; genuine bugs stay visible as bugs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SAMPLE_MODEL

CALIB = REPO / "sample_apps" / "model" / "calibration"
sys.path.insert(0, str(Path(__file__).parent))
from hostile_cli import reshape_model  # noqa: E402


def _compare(cli, tmp_path, *extra):
    return cli("compare", SAMPLE_MODEL, "--targets", "rpi4-cpu", "-o", tmp_path / "OUT", "--calibration", CALIB, *extra)


# --------------------------------------------------------------------- item 6: wrong-typed, deep, NUL

PYPROJECTS = [
    ("tool = 1\n", "[tool.edgepack] must be a table of budgets"),
    ('[tool]\nedgepack = "fast"\n', "[tool.edgepack] must be a table of budgets"),
    ("[tool.edgepack]\nbudgets = 3\n", "'budgets' must be a table of targets"),
    ('[tool.edgepack.budgets]\nrpi4-cpu = "x"\n', "'budgets.rpi4-cpu' must be a table"),
    ("[tool.edgepack]\nmax-bundle-mb = [1]\n", "budget 'max-bundle-mb' must be a number"),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", "invalid TOML: nested too deeply"),
    ("[tool.edgepack]\nmax-bundle-mb = nan\n", "budget 'max-bundle-mb' must be zero or more"),
]


@pytest.mark.parametrize(("text", "message"), PYPROJECTS, ids=[p[1][:30] for p in PYPROJECTS])
def test_wrong_pyproject_tables_are_one_line(cli, tmp_path, text, message):
    (tmp_path / "pyproject.toml").write_text(text)
    code, _, err = _compare(cli, tmp_path, "--config", tmp_path / "pyproject.toml")
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "OUT").exists()


BASELINES = [
    ([1, 2], "'<root>' must be an object"),
    ({"targets": [1]}, "'targets' must be an object keyed by target"),
    ({"targets": {"rpi4-cpu": 3}}, "'targets.rpi4-cpu' must be an object"),
    ({"targets": {"rpi4-cpu": {"model_bytes": "x", "bundle_bytes": 1}}}, "'targets.rpi4-cpu.model_bytes' must be a number"),
    ({"targets": {"rpi4-cpu": {"model_bytes": 1, "bundle_bytes": 1, "host_latency": {"shipped_ms": 0}}}},
     "'targets.rpi4-cpu.host_latency' must be null or an object with shipped_ms above 0"),
    ({"targets": {"rpi4-cpu": {"model_bytes": 1, "bundle_bytes": 1, "estimates": {"latency_ms": {"value": "7"}}}}},
     "'targets.rpi4-cpu.estimates.latency_ms.value' must be a number"),
    ({"targets": {"rpi4-cpu": {"model_bytes": 1, "bundle_bytes": 1, "accuracy": "good"}}},
     "'targets.rpi4-cpu.accuracy' must be an object"),
    ("deep", "cannot read a report.json (RecursionError)"),
]


@pytest.mark.parametrize(("doc", "message"), BASELINES, ids=[b[1][:40] for b in BASELINES])
def test_wrong_baseline_reports_are_one_line(cli, tmp_path, doc, message):
    text = "[" * 100000 + "]" * 100000 if doc == "deep" else json.dumps(doc)
    (tmp_path / "old.json").write_text(text)
    code, _, err = _compare(cli, tmp_path, "--baseline", tmp_path / "old.json", "--config", tmp_path / "none.toml")
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "OUT").exists()  # refused before any work


def test_a_real_baseline_still_works(cli, tmp_path):
    code, _, err = _compare(cli, tmp_path, "--config", tmp_path / "none.toml")
    assert code == 0, err
    code, _, err = _compare(cli, tmp_path, "--baseline", tmp_path / "OUT" / "report.json", "--force",
                            "--config", tmp_path / "none.toml")
    assert code == 0, err
    assert json.loads((tmp_path / "OUT" / "report.json").read_text())["baseline"]["rpi4-cpu"]["model_kb"] == 0


NUL_ARGS = [
    ("build", "model\0.onnx", "--target", "rpi4-cpu", "-o", "OUT"),
    ("build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", "OUT\0x"),
    ("build", str(SAMPLE_MODEL), "--target", "x\0.toml", "-o", "OUT"),
    ("build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", "OUT", "--calibration", "c\0d"),
    ("inspect", "model\0.onnx"),
    ("verify", "b\0x"),
    ("compare", str(SAMPLE_MODEL), "--targets", "rpi4-cpu", "-o", "OUT", "--baseline", "r\0.json"),
    ("calibrate", "-o", "p\0.toml", "--quick"),
]


@pytest.mark.parametrize("argv", NUL_ARGS, ids=[" ".join(a[:1] + a[-2:]).replace("\0", "NUL") for a in NUL_ARGS])
def test_a_nul_in_any_path_is_one_line(cli, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*argv)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err


def test_last_resort_names_user_failures_and_leaves_bugs_alone():
    from edgepack.last_resort import user_failure

    assert "nested too deeply" in user_failure(RecursionError())
    assert "out of memory" in user_failure(MemoryError())
    assert "not valid UTF-8" in user_failure(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    assert "NUL" in user_failure(ValueError("embedded null byte"))
    assert user_failure(ValueError("too many values to unpack")) is None  # a bug: re-raised, not hidden
    assert user_failure(KeyError("x")) is None


@pytest.mark.parametrize(("exc", "code"), [(RecursionError(), 2), (MemoryError(), 2), (ValueError("embedded null byte"), 2)])
def test_the_cli_turns_user_failures_into_one_line(cli, monkeypatch, exc, code):
    import edgepack.cli as cli_mod

    def boom(args):
        raise exc

    monkeypatch.setitem(cli_mod._COMMANDS, "targets", boom)
    rc, _, err = cli("targets")
    assert rc == code and len(err.splitlines()) == 1 and err.startswith("error: ")


def test_a_genuine_bug_is_not_swallowed(cli, monkeypatch):
    import edgepack.cli as cli_mod

    def bug(args):
        raise ValueError("too many values to unpack (expected 2)")

    monkeypatch.setitem(cli_mod._COMMANDS, "targets", bug)
    code, _, err = cli("targets")  # reported as a bug (exit 70), never as bad input
    assert code == 70
    assert err.startswith("error: internal error in edgepack targets: ValueError: too many values") and "bug" in err


# --------------------------------------------------------------------- item 7: one line, not theirs


def _run(args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "EDGEPACK_DEBUG"}
    env.update({"PYTHONPATH": str(REPO), **(env_extra or {})})
    return subprocess.run([sys.executable, "-m", "edgepack", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_onnxruntime_log_lines_do_not_leak(tmp_path):
    model = reshape_model(tmp_path / "bad.onnx")
    p = _run(["build", model, "--target", "rpi4-cpu", "-o", tmp_path / "OUT"])
    assert p.returncode == 2
    assert p.stderr.splitlines() == [p.stderr.splitlines()[0]] and p.stderr.startswith("error: the fp32 model bad.onnx"), p.stderr
    assert "\x1b[" not in p.stderr and "onnxruntime:" not in p.stderr.split("FAIL", 1)[0]


def test_edgepack_debug_keeps_them(tmp_path):
    model = reshape_model(tmp_path / "bad.onnx")
    p = _run(["build", model, "--target", "rpi4-cpu", "-o", tmp_path / "OUT"], {"EDGEPACK_DEBUG": "1"})
    assert p.returncode == 2
    assert "[E:onnxruntime:" in p.stderr and p.stderr.splitlines()[-1].startswith("error: ")


def test_metrics_on_inf_outputs_warn_nothing_and_fail_the_gate():
    from edgepack.gates import compare_outputs
    from edgepack.judge import judge
    from edgepack.metrics.kinds import OutputKind
    from edgepack.target import Tolerance

    ref = [{"y": np.array([[np.inf, 1.0]], np.float32)}]
    cand = [{"y": np.array([[1.0, 1.0]], np.float32)}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would raise here
        metrics = compare_outputs(ref, cand)
        j = judge(ref, cand, {"y": OutputKind("embedding", "test")}, Tolerance(cosine_min=0.99))
    assert metrics["y"]["cosine_min"] != metrics["y"]["cosine_min"]  # NaN
    assert j.status == "failed" and "cosine_min nan < 0.99" in j.reason  # NaN is not a passing cosine


NOISY = """
import sys, warnings
import numpy as np
sys.path.insert(0, {repo!r})
import edgepack.cli as c

def noisy(args):
    warnings.warn("library noise")                  # a UserWarning from some library
    np.float32(1e38) * np.float32(1e38)             # numpy: RuntimeWarning: overflow encountered
    return 0

c._COMMANDS["targets"] = noisy
sys.exit(c.main(["targets"]))
"""


@pytest.mark.parametrize("debug", [False, True])
def test_python_warnings_stay_off_stderr_unless_debugging(debug):
    env = {k: v for k, v in os.environ.items() if k != "EDGEPACK_DEBUG"}
    if debug:
        env["EDGEPACK_DEBUG"] = "1"
    p = subprocess.run([sys.executable, "-c", NOISY.format(repo=str(REPO))], capture_output=True, text=True, env=env)
    assert p.returncode == 0
    if debug:
        assert "library noise" in p.stderr and "RuntimeWarning" in p.stderr
    else:
        assert p.stderr == ""
