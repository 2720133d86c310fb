"""Reliability: killed builds, concurrent builds, and fuzzed models and profiles."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, SAMPLE_MODEL, tiny_cnn
from edgepack.errors import EdgepackError
from edgepack.model import load_model
from edgepack.target import load_target
from edgepack.bundle_check import check_bundle

pytestmark = pytest.mark.slow


def _build_cmd(out):
    return [sys.executable, "-m", "edgepack", "build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", str(out),
            "--force", "--calibration", str(REPO / "sample_apps" / "model" / "calibration")]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("delay", [0.4, 0.9, 1.4, 1.9, 2.4, 3.0])
def test_sigkill_leaves_the_previous_bundle_or_none(tmp_path, delay):
    out = tmp_path / "out"
    subprocess.run(_build_cmd(out), check=True, capture_output=True, env=_env())
    before = (out / "rpi4-cpu" / "manifest.json").read_bytes()
    proc = subprocess.Popen(_build_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    bundle = out / "rpi4-cpu"
    if bundle.exists():
        findings = check_bundle(bundle)
        assert findings.ok, findings.problems  # complete: the previous bundle or the new one, never a mix
        assert (bundle / "manifest.json").read_bytes() == before  # same inputs: the same bytes either way
    visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    assert set(visible) <= {"rpi4-cpu", "rpi4-cpu.build.json"}
    # the next build cleans what the killed one left behind
    subprocess.run(_build_cmd(out), check=True, capture_output=True, env=_env())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert check_bundle(out / "rpi4-cpu").ok


def test_two_builds_into_one_output_at_once(tmp_path):
    out = tmp_path / "out"
    cmd = [c for c in _build_cmd(out) if c != "--force"]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    b = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    results = [(p.wait(), p.communicate()[1]) for p in (a, b)]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 1], [0, 2]), results  # 2: refused before work; 1: found when writing the bundle
    for code, err in results:
        if code:
            errors = [line for line in err.splitlines() if not line.startswith("... ")]  # progress lines aside
            assert len(errors) == 1 and "Traceback" not in err
            assert errors[0].startswith("error: " if code == 2 else "target not built: rpi4-cpu: bundle: ")
            assert "already exists" in errors[0] or "another build" in errors[0]
    assert check_bundle(out / "rpi4-cpu").ok
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------------- fuzzing

_VALID = tiny_cnn().SerializeToString()


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.integers(0, len(_VALID)))
def test_fuzzed_models_raise_only_edgepack_errors(tmp_path, edits, cut):
    data = bytearray(_VALID[:max(cut, 1)])
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    path = tmp_path / "fuzz.onnx"
    path.write_bytes(bytes(data))
    try:
        load_model(path)
    except EdgepackError:
        pass


_PROFILE_LINES = [
    'extends = "rpi4-cpu"', 'name = "fuzz"', 'family = "linux-arm"', "[runtime]", 'engine = "onnxruntime"',
    'execution_provider = "CPU"', 'op_table = "cpu"', "max_rank = 0", "[shapes]", 'policy = "fixed"',
    "default_batch = -1", "[[quantization]]", 'name = "fp16"', 'name = "static-int8"', 'activation_type = "int8"',
    "tolerance = { cosine_min = 2.0 }", "[device]", 'name = "x"', "idle_w = 1.0", "[device.units.cpu]",
    'kind = "cpu"', "peak_gops = { fp32 = 1.0 }", "[device.sources]", '"idle_w" = "a source"', "[conversion]",
    'format = "openvino-ir"', "[minimal_build]", 'level = "none"', "extends = 3", "x = [1, 2", "= =", "[[device.anchors]]",
]


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_PROFILE_LINES), min_size=0, max_size=12), st.binary(max_size=16))
def test_fuzzed_profiles_raise_only_profile_errors(tmp_path, lines, noise):
    path = tmp_path / "fuzz.toml"
    path.write_bytes("\n".join(lines).encode() + b"\n" + noise)
    try:
        load_target(str(path))
    except EdgepackError:
        pass


def test_fuzz_corpus_has_real_models():
    # the fuzzers start from a valid model that loads, so mutations explore near-valid inputs
    assert load_model_bytes_ok()


def load_model_bytes_ok() -> bool:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.onnx"
        p.write_bytes(_VALID)
        return load_model(p).info.nodes == 6


# ----------------------------------------------------------- fuzzing profile strings and manifests (#14)

_SLOTS = {  # where a fuzzed string goes in rpi4-cpu's profile, and how the line looks
    "name": 'name = "rpi4-cpu"',
    "description": 'description = "Raspberry Pi 4',
    "stock_package": 'stock_package = "onnxruntime"',
    "flag": '"--parallel",',
    "source": '"idle_w" = "geerlingguy',
    "config": '"--config", "MinSizeRel"',
}


def _fuzzed_profile(slot: str, text: str) -> str:
    import json

    base = (REPO / "targets" / "rpi4-cpu.toml").read_text(encoding="utf-8")
    quoted = json.dumps(text, ensure_ascii=False)
    line = {
        "name": f"name = {quoted}",
        "description": f"description = {quoted[:-1]}",
        "stock_package": f"stock_package = {quoted}",
        "flag": f'"--parallel", {quoted},',
        "source": f'"idle_w" = {quoted[:-1]}',
        "config": f'"--config", {quoted}',
    }[slot]
    return base.replace(_SLOTS[slot], line, 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(_SLOTS)), st.text(min_size=1, max_size=40))
def test_fuzzed_profile_strings_are_refused_or_quoted(tmp_path, slot, text):
    import shutil

    from edgepack.backends.onnxruntime.minimal_build import build_script, ci_workflow

    path = tmp_path / "fuzz.toml"
    path.write_text(_fuzzed_profile(slot, text), encoding="utf-8")
    try:
        profile = load_target(str(path))
    except EdgepackError:
        return
    script = build_script(profile, ort_version="1.32.0", uses_ml_ops=False)
    if shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
        lines = script.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("./build.sh"))
        end = next(i for i in range(start, len(lines)) if not lines[i].endswith("\\"))
        command = "\n".join(lines[start:end + 1]).replace("./build.sh", "printf '%s\\n'", 1)
        words = subprocess.run(["bash", "-c", "BUNDLE_DIR=/b; EXTRA_ARGS=()\n" + command], capture_output=True,
                               text=True, check=True, cwd=tmp_path).stdout.split("\n")
        for flag in profile.minimal_build_flags:  # every flag arrives as itself, one word, unexpanded
            assert flag in words
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.toml"]  # nothing ran
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(ci_workflow(profile, "1.32.0"))
    assert doc.get("on", doc.get(True))["workflow_dispatch"]["inputs"]["bundle"]["default"] == profile.name


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


def _bundle_once(cache={}):  # noqa: B006 - one real bundle for all examples
    if "b" not in cache:
        import tempfile
        from pathlib import Path

        from edgepack.cli import main

        out = Path(tempfile.mkdtemp(prefix="fuzz-manifest-")) / "OUT"
        assert main(["build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", str(out), "--calibration",
                     str(REPO / "sample_apps" / "model" / "calibration"), "--json"]) == 0
        cache["b"] = out / "rpi4-cpu"
        cache["doc"] = (cache["b"] / "manifest.json").read_text()
    return cache["b"], cache["doc"]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzzed_manifests_give_findings_never_crashes(data):
    import json

    from edgepack.errors import OutputError

    bundle, text = _bundle_once()
    doc = json.loads(text)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        where = data.draw(st.sampled_from(paths))
        value = data.draw(_JSON)
        if not where:
            doc = value
            break
        node = doc
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = value
    (bundle / "manifest.json").write_text(json.dumps(doc))
    try:
        findings = check_bundle(bundle)
        assert isinstance(findings.problems, list)
    except OutputError:
        pass  # not a bundle at all (no artifacts list, not an object): one line, exit 2
    finally:
        (bundle / "manifest.json").write_text(text)
