"""The shape the code keeps: engine knowledge only in edgepack/backends/, no module over 500 lines,
and light imports where the command line and the profile loader need them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgepack"
MAX_LINES = 500
_ENGINE = r"""["'](?:openvino|onnxruntime)["']"""
ENGINE_COMPARISON = re.compile(rf"""(?:==|!=)\s*{_ENGINE}|{_ENGINE}\s*(?:==|!=)|\bengine\s*(?:==|!=|\bin\b)""")


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_engine_name_comparisons_outside_backends():
    found = []
    for path in _modules():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("backends/"):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ENGINE_COMPARISON.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert found == [], "engine names compared outside edgepack/backends/:\n" + "\n".join(found)


def test_the_grep_finds_what_it_looks_for():
    for line in ('if t.engine == "openvino":', "if 'onnxruntime' != name:", "key = lambda t: t.engine != x",
                 'if engine in ("openvino",):'):
        assert ENGINE_COMPARISON.search(line), line
    assert not ENGINE_COMPARISON.search('versions = {"onnxruntime": onnxruntime.__version__}')


def test_no_module_over_500_lines():
    long = {p.relative_to(PACKAGE).as_posix(): n for p in _modules()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_profiles_and_backends_table_import_nothing_heavy():
    code = ("import sys, edgepack.target, edgepack.backends; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'numpy', 'openvino', 'nncf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_every_profile_engine_has_a_backend_and_unknown_ones_are_named():
    import pytest

    from edgepack.backends import BACKENDS, backend_named
    from edgepack.errors import ProfileError
    from edgepack.target import builtin_names, load_target

    assert {load_target(n).engine for n in builtin_names()} <= set(BACKENDS)
    with pytest.raises(ProfileError, match="unknown engine 'tflite'; edgepack knows: onnxruntime, openvino"):
        backend_named("tflite")
