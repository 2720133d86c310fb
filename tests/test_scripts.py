"""The README's two commands (scripts/demo, scripts/test) and CI's use of them.

The environment logic is exercised against a stand-in venv whose ``python`` logs pip calls instead
of installing, so the tests see exactly when the scripts would (re)install without touching the
real environment.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def _fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "$@" >> "' + str(log) + '"; exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    edgepack = shutil.which("edgepack", path=str(Path(sys.executable).parent)) or shutil.which("edgepack")
    if edgepack:
        (venv / "bin" / "edgepack").symlink_to(edgepack)
    return venv, log


def _digest() -> str:
    return hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()


def _env_only(venv: Path, extras: str) -> subprocess.CompletedProcess:
    """Source scripts/_env the way scripts/demo and scripts/test do, then stop."""
    return subprocess.run(["bash", "-c", f'. "{SCRIPTS / "_env"}" {extras}; echo ready'],
                          env={**os.environ, "EDGEPACK_VENV": str(venv)}, capture_output=True, text=True)


@pytest.mark.parametrize("script", ["_env", "demo", "test"])
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(SCRIPTS / script)]).returncode == 0


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "\nscripts/test" in ci
    readme = (REPO / "README.md").read_text()
    assert "scripts/demo" in readme and "scripts/test" in readme


@pytest.mark.parametrize(("stamp", "want", "installs"), [
    (None, "dev", True),                      # fresh venv: install
    ("{digest}\ndev", "dev", False),          # nothing changed: no reinstall
    ("{digest}\ndev", "demo", False),         # dev includes what the demo needs
    ("{digest}\ndemo", "demo", False),
    ("{digest}\ndemo", "dev", True),          # the tests need more than the demo installed
    ("0000\ndev", "dev", True),               # pyproject.toml changed
])
def test_install_only_when_something_changed(tmp_path, stamp, want, installs):
    venv, log = _fake_venv(tmp_path)
    if stamp is not None:
        (venv / ".edgepack-install").write_text(stamp.format(digest=_digest()) + "\n")
    r = _env_only(venv, want)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ready")
    calls = log.read_text() if log.exists() else ""
    assert (f'install --quiet -e .[{want}]' in calls) is installs
    assert ("--no-deps -r tests/requirements-nodeps.txt" in calls) is (installs and want == "dev")
    stamp_lines = (venv / ".edgepack-install").read_text().splitlines()
    assert stamp_lines[0] == _digest()
    if installs:
        assert want in stamp_lines[1].split()
    # a second run right after never installs again
    log.unlink(missing_ok=True)
    assert _env_only(venv, want).returncode == 0
    assert not log.exists()


def test_too_old_python_is_one_clear_line(tmp_path):
    old = tmp_path / "python-old"
    old.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "import sys; sys.exit(1)"\n')
    old.chmod(0o755)
    r = subprocess.run(["bash", str(SCRIPTS / "demo")],
                       env={**os.environ, "EDGEPACK_VENV": str(tmp_path / "none"), "PYTHON": str(old)},
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "3.10" in r.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_demo_writes_the_report_and_points_at_it(tmp_path):
    venv, log = _fake_venv(tmp_path)
    (venv / ".edgepack-install").write_text(f"{_digest()}\ndev\n")
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(SCRIPTS / "demo"), str(out)], env={**os.environ, "EDGEPACK_VENV": str(venv)},
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not log.exists()  # nothing reinstalled
    assert (out / "report.html").is_file()
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith(f"report: {out / 'report.html'}")
    targets = ("android-nnapi", "android-qnn", "android-qnn-8elite", "android-qnn-8gen2", "ios-coreml", "intel-openvino",
               "rpi4-cpu", "rpi5-cpu")
    for target in targets:
        assert any(line.strip().startswith(f"{target}: ") for line in lines[-len(targets) - 1:-1]), lines[-10:]
