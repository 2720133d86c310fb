"""Issue #14, items 2 and 9 (and the manifest parts of 6): a bundle given to `edgepack verify` is untrusted.

verify never imports what a manifest names, type-checks every field it reads (a wrong one is a
finding, exit 1), reports whatever is not a regular file, refuses to pass a bundle that ran nothing,
and can pin the manifest itself with --manifest-sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_MODEL
from edgepack.cli import main

CALIB = REPO / "sample_apps" / "model" / "calibration"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify") / "OUT"
    assert main(["build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", str(out), "--calibration", str(CALIB),
                 "--json"]) == 0
    return out / "rpi4-cpu"


@pytest.fixture()
def bundle(built, tmp_path) -> Path:
    b = tmp_path / "b"
    shutil.copytree(built, b)
    return b


def _edit(b: Path, fn) -> None:
    path = b / "manifest.json"
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def fn(doc):
        node = doc
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return fn


# --------------------------------------------------------------------- item 2: nothing is imported


def test_verify_never_imports_the_engine_a_manifest_names(bundle, tmp_path):
    (bundle / "evil.py").write_text("open('PWNED', 'w').write('ran')\n")
    _edit(bundle, _set("target", "engine", "evil"))
    # as the issue ran it: from inside the bundle, where `evil` would be importable
    p = subprocess.run([sys.executable, "-m", "edgepack", "verify", "."], cwd=bundle, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 1, p.stderr
    assert not (bundle / "PWNED").exists() and not (tmp_path / "PWNED").exists()
    assert "target.engine 'evil' is not a runtime edgepack packages" in p.stdout
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("verify failed: ")


WRONG = [
    # (manifest edit, expected finding)
    (_set("target", "engine", "os"), "target.engine 'os' is not a runtime edgepack packages"),
    (_set("target", "engine", 3), "target.engine 3 is not a runtime"),
    (_set("target", "engine", ["onnxruntime"]), "target.engine ['onnxruntime'] is not a runtime"),  # found by the fuzzer
    (_set("target", "rpi4-cpu"), "target.engine none (no 'target' object)"),
    (_set("artifacts", [1]), "artifacts[0] is not an object"),
    (_set("artifacts", [{"path": 3, "bytes": 1, "sha256": "0" * 64}]), "artifacts[0] path 3 is not a plain path"),
    (_set("artifacts", [{"path": "../x", "bytes": 1, "sha256": "0" * 64}]), "path '../x' is not a plain path"),
    (_set("artifacts", [{"path": "/etc/passwd", "bytes": 1, "sha256": "0" * 64}]), "path '/etc/passwd' is not a plain path"),
    (_set("artifacts", [{"path": "model\u0000.ort", "bytes": 1, "sha256": "0" * 64}]), "is not a plain path"),
    (_set("artifacts", [{"path": "model.ort", "bytes": "1", "sha256": "0" * 64}]), "needs 'bytes' (an integer)"),
    (_set("artifacts", [{"path": "model.ort", "bytes": 1, "sha256": "xyz"}]), "and 'sha256' (64 hex digits)"),
    (_set("models", []), "the manifest lists no models"),
    (_set("models", "model.ort"), "the manifest lists no models"),
    (_set("models", [7]), "models[0] is not an object"),
    (_set("models", 0, "artifact", "README.md"), "artifact README.md is not a .ort file"),
    (_set("models", 0, "artifact", {"a": 1}), "is not a file listed in 'artifacts'"),
    (_set("models", 0, "source_model", "x"), "'source_model.inputs' is not a list of objects"),
    (_set("models", 0, "source_model", "inputs", [{"name": "input", "dtype": "object", "shape": [1]}]),
     "unknown dtype 'object'"),
    (_set("models", 0, "source_model", "inputs", [{"name": "input", "dtype": "float32", "shape": [2**40]}]),
     "has a malformed shape"),
    (_set("models", 0, "source_model", "inputs", [{"name": "input", "dtype": "float32", "shape": [2**20, 2**20]}]),
     "verify feeds at most"),
    (_set("models", 0, "shipped_inputs", {"input": [1, "x", {"a": 1}]}), "has a malformed shape"),
    (_set("runtime", "session_config", {"ep.context_enable": "1", "ep.context_file_path": "/tmp/x"}),
     "runtime.session_config 'ep.context_enable' = '1' is not a setting edgepack writes; not applied"),
    (_set("runtime", "session_config", [1]), "runtime.session_config is not an object"),
    (_set("toolchain", "onnxruntime", 3), "toolchain.onnxruntime is not a version string"),
]


@pytest.mark.parametrize(("edit", "finding"), WRONG, ids=[w[1][:40] for w in WRONG])
def test_wrong_typed_manifest_fields_are_findings(bundle, cli, edit, finding):
    _edit(bundle, edit)
    code, out, err = cli("verify", bundle)
    assert code == 1, err
    assert finding in out, out
    assert len(err.splitlines()) == 1 and "Traceback" not in err


# --------------------------------------------------------------------- item 9: what is in the folder


def _fifo(b: Path) -> str:
    os.mkfifo(b / "fifo")
    return "fifo is a FIFO; a bundle holds regular files only"


def _folder(b: Path) -> str:
    (b / "extra_dir").mkdir()
    return "extra folder not in the manifest: extra_dir/"


def _link_out(b: Path) -> str:
    os.symlink("/etc/passwd", b / "out_link")
    return "out_link is a symlink to '/etc/passwd'"


def _dangling(b: Path) -> str:
    os.symlink(b / "missing", b / "dangling")
    return "(dangling)"


def _link_in(b: Path) -> str:
    os.symlink("README.md", b / "readme_again")
    return "readme_again is a symlink to 'README.md'"


def _artifact_swapped_for_a_link(b: Path) -> str:
    target = b.parent / "elsewhere.md"
    shutil.move(b / "README.md", target)
    os.symlink(target, b / "README.md")
    return "README.md is a symlink to"


def _artifact_swapped_for_a_fifo(b: Path) -> str:
    (b / "README.md").unlink()
    os.mkfifo(b / "README.md")
    return "missing file: README.md (what is there is not a regular file)"


def _folder_link(b: Path) -> str:
    os.symlink(b.parent, b / "ci2")
    return "ci2 is a symlink to"


ODD = [_fifo, _folder, _link_out, _dangling, _link_in, _artifact_swapped_for_a_link, _artifact_swapped_for_a_fifo,
       _folder_link]


@pytest.mark.parametrize("plant", ODD, ids=[f.__name__.strip("_") for f in ODD])
def test_entries_that_are_not_regular_files_are_findings(bundle, cli, plant):
    finding = plant(bundle)
    code, out, err = cli("verify", bundle)
    assert code == 1, out
    assert finding in out, out
    assert len(err.splitlines()) == 1


def test_a_manifest_that_is_not_a_regular_file_is_not_a_bundle(bundle, cli):
    (bundle / "manifest.json").unlink()
    os.mkfifo(bundle / "manifest.json")  # reading it would block forever
    code, _, err = cli("verify", bundle)
    assert code == 2 and "non-regular" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, '{"artifacts": ' + "[" * 5000 + "]" * 5000 + "}"])
def test_deeply_nested_manifests_are_one_line(bundle, cli, text):
    (bundle / "manifest.json").write_text(text)
    code, _, err = cli("verify", bundle)
    assert code in (1, 2) and len(err.splitlines()) == 1 and "Traceback" not in err, err


# --------------------------------------------------------------------- --manifest-sha256


def test_manifest_sha256_pin(bundle, cli):
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    code, out, err = cli("verify", bundle, "--manifest-sha256", digest.upper())
    assert code == 0 and "manifest.json matches the pinned sha256" in out, err
    _edit(bundle, lambda doc: doc["recipe"]["decisions"].append("edited"))
    code, out, err = cli("verify", bundle, "--manifest-sha256", digest)
    assert code == 1 and f"not the pinned {digest}: the manifest was changed" in out
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "0" * 63, "0" * 65])
def test_manifest_sha256_must_look_like_one(bundle, cli, bad):
    code, _, err = cli("verify", bundle, "--manifest-sha256", bad)
    assert code == 2 and "must be 64 hexadecimal digits" in err and len(err.splitlines()) == 1


def test_build_prints_the_manifest_digest(cli, tmp_path):
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "OUT", "--calibration", CALIB,
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    digest = hashlib.sha256((tmp_path / "OUT" / "rpi4-cpu" / "manifest.json").read_bytes()).hexdigest()
    assert doc[0]["manifest_sha256"] == digest
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "OUT", "--calibration", CALIB,
                         "--force")
    assert code == 0 and f"manifest sha256: {digest}" in out
    assert cli("verify", tmp_path / "OUT" / "rpi4-cpu", "--manifest-sha256", digest)[0] == 0
