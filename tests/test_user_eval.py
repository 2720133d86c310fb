"""The user's own metric: --eval FILE.py:FUNCTION (and [tool.edgepack] eval), gated by --max-accuracy-drop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_MODEL

CALIB = SAMPLE_MODEL.parent / "calibration"
EVALUATE = REPO / "sample_apps" / "model" / "evaluate.py"

# negative log-likelihood of the true digit: lower is better, and int8 moves it a little (+0.00045)
NLL = f'''
import sys
import numpy as np
sys.path.insert(0, {str(EVALUATE.parent)!r})
from evaluate import DEFAULT_DATA, _scores

def nll(runner):
    with np.load(DEFAULT_DATA) as d:
        x, y = d["input"].astype(np.float32), d["label"]
    s = _scores(runner, x).astype(np.float64)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))

nll.lower_is_better = True
'''


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("... ")]


def _quant(out: Path, target: str) -> tuple[dict, dict]:
    m = json.loads((out / target / "manifest.json").read_text())["models"][0]
    return m["quantization"], m["verification"]


@pytest.fixture
def nll_file(tmp_path) -> Path:
    (tmp_path / "metric.py").write_text(NLL)
    return tmp_path / "metric.py"


def test_eval_gates_the_build_a_stricter_drop_limit_drops_int8_a_looser_one_keeps_it(cli, tmp_path, nll_file):
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi5-cpu", "-o", tmp_path / "strict", "--calibration", CALIB,
                         "--eval", f"{nll_file}:nll", "--max-accuracy-drop", "0.0001")
    assert code == 0, err
    q, ver = _quant(tmp_path / "strict", "rpi5-cpu")
    int8 = next(a for a in q["attempts"] if a["recipe"] == "static-int8")
    if q["recipe"] == "none":
        assert int8["outcome"] == "dropped" and "metric.py:nll dropped by" in int8["reason"]
        assert "> 0.0001 allowed" in int8["reason"]
    else:  # mixed precision (#13.4) kept the nodes responsible float: full int8 failed the user's metric
        why = q["settings"]["mixed_precision"]["why"]
        assert q["recipe"] == "static-int8" and int8["reason"].startswith("mixed precision, attempt")
        assert "metric.py:nll dropped by" in why and "> 0.0001 allowed" in why
    assert ver["user_metric"]["function"] == "metric.py:nll" and ver["user_metric"]["better"] == "lower"
    assert ver["user_metric"]["drop"] <= 1e-4  # what ships keeps the user's metric within the limit
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi5-cpu", "-o", tmp_path / "loose", "--calibration", CALIB,
                         "--eval", f"{nll_file}:nll", "--max-accuracy-drop", "0.01")
    assert code == 0, err
    q, ver = _quant(tmp_path / "loose", "rpi5-cpu")
    assert q["recipe"] == "static-int8"
    um = ver["user_metric"]
    assert 0.0001 < um["drop"] < 0.01 and um["max_drop"] == 0.01 and um["value"] > um["fp32"]  # lower is better
    assert um["drop"] == pytest.approx(um["value"] - um["fp32"], rel=1e-3)


def test_the_sample_evaluate_function_runs_on_every_bundle_kind(cli, tmp_path):
    targets = ["rpi5-cpu", "android-nnapi"]
    try:
        import openvino  # noqa: F401

        targets.append("intel-openvino")
    except ImportError:
        pass
    code, out, err = cli("build", SAMPLE_MODEL, *[a for t in targets for a in ("--target", t)], "-o", tmp_path / "o",
                         "--calibration", CALIB, "--eval", f"{EVALUATE}:evaluate")
    assert code == 0, err
    for t in targets:
        _, ver = _quant(tmp_path / "o", t)
        um = ver["user_metric"]
        assert um["fp32"] == pytest.approx(0.9778, abs=1e-3) and um["better"] == "higher"
        assert abs(um["value"] - um["fp32"]) <= 0.01 and um["max_drop"] == 0.01  # the int8 recipe's own bar
        artifact = json.loads((tmp_path / "o" / t / "manifest.json").read_text())["models"][0]["artifact"]
        cmd = [sys.executable, str(EVALUATE), str(tmp_path / "o" / t / artifact)]
        line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout  # its command line too
        assert line.startswith(f"top-1 accuracy: {um['value']:.4f}")


def test_eval_from_pyproject_is_relative_to_that_file(cli, tmp_path, nll_file):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "m.py").write_text(nll_file.read_text())
    (project / "pyproject.toml").write_text('[tool.edgepack]\neval = "m.py:nll"\noutput_kinds = { logits = "classes" }\n'
                                            'max-bundle-mb = 50\n')
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi5-cpu", "-o", tmp_path / "o", "--calibration", CALIB,
                         "--config", project / "pyproject.toml")
    assert code == 0, err
    _, ver = _quant(tmp_path / "o", "rpi5-cpu")
    assert ver["user_metric"]["function"] == "m.py:nll"
    assert ver["outputs"]["logits"]["kind_from"].startswith("you: pyproject.toml [tool.edgepack] output_kinds.logits")


@pytest.mark.parametrize("spec,message", [
    ("nofile.py:f", "--eval 'nofile.py:f': nofile.py is not a Python file"),
    ("{metric}", "must look like FILE.py:FUNCTION"),
    ("{metric}:nl", "metric.py has no function 'nl' (did you mean 'nll'?)"),
    ("{broken}:f", "loading broken.py raised SyntaxError"),
    ("{exits}:f", "loading exits.py raised SystemExit"),
    ("{fails}:f", "raised ZeroDivisionError on the fp32 original of digits_cnn"),
    ("{words}:f", "must return a finite number (or None), got 'good'"),
])
def test_eval_errors_are_one_line_and_exit_2_before_any_work(cli, tmp_path, nll_file, spec, message):
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "fails.py").write_text("def f(runner):\n    return 1 / 0\n")
    (tmp_path / "words.py").write_text("def f(runner):\n    return 'good'\n")
    files = {k: tmp_path / f"{k}.py" for k in ("broken", "exits", "fails", "words")}
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi5-cpu", "-o", tmp_path / "o",
                         "--eval", spec.format(metric=nll_file, **files))
    assert code == 2
    lines = _errors(err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "o").exists()


def test_max_accuracy_drop_without_eval_is_a_usage_error(cli, tmp_path):
    code, _, err = cli("build", SAMPLE_MODEL, "--target", "rpi5-cpu", "-o", tmp_path / "o", "--max-accuracy-drop", "0.1")
    assert code == 2 and "--max-accuracy-drop gates your own metric: give it with --eval" in err


def test_a_metric_that_fails_on_a_candidate_drops_that_candidate(cli, tmp_path):
    (tmp_path / "picky.py").write_text(
        "def f(runner):\n"
        "    if 'int8' in runner.what:\n"
        "        raise RuntimeError('cannot read int8 outputs')\n"
        "    return 1.0\n")
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi5-cpu", "-o", tmp_path / "o", "--calibration", CALIB,
                         "--eval", f"{tmp_path / 'picky.py'}:f")
    assert code == 0, err
    q, ver = _quant(tmp_path / "o", "rpi5-cpu")
    int8 = next(a for a in q["attempts"] if a["recipe"] == "static-int8")
    assert "--eval picky.py:f raised RuntimeError on the static-int8 artifact model.ort of digits_cnn" in int8["reason"]
    assert q["recipe"] == "none" and ver["user_metric"]["value"] == 1.0
