"""Issue #14, items 3, 4 and 8: what a build writes and deletes.

--force replaces only edgepack bundles, never a folder that holds an input; writes in OUT never go
through a planted symlink; leftovers of killed builds are reclaimed; a multi-target build that fails
says which bundles it already wrote.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
import pytest

from conftest import REPO, SAMPLE_MODEL, tiny_cnn

CALIB = REPO / "sample_apps" / "model" / "calibration"


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (symlinks not followed) with its content hash or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def _ext_model(folder: Path) -> Path:
    """tiny_cnn with its weights in an external data file beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ext.onnx"
    onnx.save(tiny_cnn(batch=1), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    return path


# --------------------------------------------------------------------- item 3: --force


def _case_model_in_dest(tmp: Path):
    (tmp / "proj" / "rpi4-cpu").mkdir(parents=True)
    shutil.copy(SAMPLE_MODEL, tmp / "proj" / "rpi4-cpu" / "model.onnx")
    (tmp / "proj" / "rpi4-cpu" / "notes.txt").write_text("my notes")
    return [tmp / "proj" / "rpi4-cpu" / "model.onnx", "--target", "rpi4-cpu", "-o", tmp / "proj",
            "--calibration", CALIB], "is not an edgepack bundle"


def _case_model_in_old_bundle(tmp: Path):
    """A real earlier bundle, with the user's model copied into it: still refused."""
    from edgepack.cli import main

    assert main(["build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", str(tmp / "OUT"), "--calibration",
                 str(CALIB), "--json"]) == 0
    shutil.copy(SAMPLE_MODEL, tmp / "OUT" / "rpi4-cpu" / "mine.onnx")
    return [tmp / "OUT" / "rpi4-cpu" / "mine.onnx", "--target", "rpi4-cpu", "-o", tmp / "OUT", "--calibration",
            CALIB], "holds more than it lists \\(extra file not in the manifest: mine.onnx\\)|mine.onnx lies inside"


def _case_external_data_in_dest(tmp: Path):
    from edgepack.cli import main

    assert main(["build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", str(tmp / "OUT"), "--calibration",
                 str(CALIB), "--json"]) == 0
    model = _ext_model(tmp / "m")
    shutil.move(model.with_name("ext.onnx.data"), tmp / "OUT" / "rpi4-cpu" / "ext.onnx.data")
    os.symlink(tmp / "OUT" / "rpi4-cpu" / "ext.onnx.data", model.with_name("ext.onnx.data"))
    return [model, "--target", "rpi4-cpu", "-o", tmp / "OUT", "--shape", "x=1x3x8x8"], \
        "holds more than it lists|external data of ext.onnx .* lies inside the output|resolves outside the model's folder"


def _case_calibration_in_dest(tmp: Path):
    (tmp / "OUT" / "rpi4-cpu" / "calib").mkdir(parents=True)
    shutil.copy(CALIB / "input.npy", tmp / "OUT" / "rpi4-cpu" / "calib" / "input.npy")
    return [SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp / "OUT", "--calibration", tmp / "OUT" / "rpi4-cpu" / "calib"], \
        "is not an edgepack bundle"


def _case_calibration_in_old_bundle(tmp: Path):
    from edgepack.cli import main

    assert main(["build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", str(tmp / "OUT"), "--calibration",
                 str(CALIB), "--json"]) == 0
    shutil.copytree(CALIB, tmp / "OUT" / "rpi4-cpu" / "calib")
    return [SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp / "OUT", "--calibration", tmp / "OUT" / "rpi4-cpu" / "calib"], \
        "holds more than it lists|calibration folder .* lies inside the output"


def _case_profile_in_dest(tmp: Path):
    (tmp / "OUT" / "mine").mkdir(parents=True)
    (tmp / "OUT" / "mine" / "mine.toml").write_text('extends = "rpi4-cpu"\nname = "mine"\n')
    return [SAMPLE_MODEL, "--target", tmp / "OUT" / "mine" / "mine.toml", "-o", tmp / "OUT", "--calibration", CALIB], \
        "is not an edgepack bundle"


def _case_base_profile_in_old_bundle(tmp: Path):
    from edgepack.cli import main

    assert main(["build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o", str(tmp / "OUT"), "--calibration",
                 str(CALIB), "--json"]) == 0
    (tmp / "OUT" / "rpi4-cpu" / "base.toml").write_text('extends = "rpi4-cpu"\nname = "base"\n')
    (tmp / "child.toml").write_text('extends = "OUT/rpi4-cpu/base.toml"\nname = "rpi4-cpu"\n')
    return [SAMPLE_MODEL, "--target", tmp / "child.toml", "-o", tmp / "OUT", "--calibration", CALIB], \
        "holds more than it lists|profile of target rpi4-cpu .*base.toml lies inside the output"


def _case_not_a_bundle(tmp: Path):
    (tmp / "OUT" / "rpi4-cpu").mkdir(parents=True)
    (tmp / "OUT" / "rpi4-cpu" / "thesis.tex").write_text("years of work")
    return [SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp / "OUT", "--calibration", CALIB], "is not an edgepack bundle"


def _case_fake_manifest(tmp: Path):
    (tmp / "OUT" / "rpi4-cpu").mkdir(parents=True)
    (tmp / "OUT" / "rpi4-cpu" / "manifest.json").write_text('{"artifacts": []}')
    (tmp / "OUT" / "rpi4-cpu" / "thesis.tex").write_text("years of work")
    return [SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp / "OUT", "--calibration", CALIB], "is not an edgepack bundle"


def _case_symlink_dest(tmp: Path):
    (tmp / "user" / "elsewhere").mkdir(parents=True)
    (tmp / "user" / "elsewhere" / "keep.txt").write_text("mine")
    (tmp / "OUT").mkdir()
    os.symlink(tmp / "user" / "elsewhere", tmp / "OUT" / "rpi4-cpu")
    return [SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp / "OUT", "--calibration", CALIB], "is a symlink, not a bundle"


def _case_file_dest(tmp: Path):
    (tmp / "OUT").mkdir()
    (tmp / "OUT" / "rpi4-cpu").write_text("a file")
    return [SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp / "OUT", "--calibration", CALIB], "is a file, not a bundle"


FORCE = [_case_model_in_dest, _case_model_in_old_bundle, _case_external_data_in_dest, _case_calibration_in_dest,
         _case_calibration_in_old_bundle, _case_profile_in_dest, _case_base_profile_in_old_bundle, _case_not_a_bundle,
         _case_fake_manifest, _case_symlink_dest, _case_file_dest]


@pytest.mark.parametrize("case", FORCE, ids=[f.__name__[6:] for f in FORCE])
def test_force_deletes_nothing_but_edgepack_bundles(cli, tmp_path, monkeypatch, case):
    import re

    monkeypatch.chdir(tmp_path)
    argv, message = case(tmp_path)
    before = _tree(tmp_path)
    code, _, err = cli("build", *argv, "--force")
    assert code == 2, err
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of the user's changed or went
    assert not [k for k in after if Path(k).name.startswith(".")]  # no staging or .old left


def test_an_input_that_is_a_file_the_build_replaces_is_refused(cli, tmp_path):
    from edgepack.errors import OutputError
    from edgepack.safe_io import refuse_inputs_under

    (tmp_path / "OUT").mkdir()
    shutil.copy(SAMPLE_MODEL, tmp_path / "OUT" / "rpi4-cpu.build.json")  # a model where the build record goes
    before = _tree(tmp_path)
    code, _, err = cli("build", tmp_path / "OUT" / "rpi4-cpu.build.json", "--target", "rpi4-cpu", "-o", tmp_path / "OUT",
                       "--calibration", CALIB, "--force")
    # refused by the older rule (OUT is the model's folder) or by the new one (the input is replaced)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "is the folder of the model rpi4-cpu.build.json" in err or "lies inside the output" in err
    assert _tree(tmp_path) == before
    with pytest.raises(OutputError, match="lies inside the output"):
        refuse_inputs_under([tmp_path / "OUT" / "t"], [("calibration folder", tmp_path / "OUT" / "t" / "a" / "b")])
    refuse_inputs_under([tmp_path / "OUT" / "t"], [("model", tmp_path / "OUT" / "t2" / "m.onnx")])  # a sibling is fine


def test_force_refuses_a_bundle_holding_the_users_files(cli, tmp_path):
    args = ("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "OUT", "--calibration", CALIB)
    assert cli(*args)[0] == 0
    (tmp_path / "OUT" / "rpi4-cpu" / "notes.txt").write_text("mine")
    code, _, err = cli(*args, "--force")
    assert code == 2 and "holds more than it lists (extra file not in the manifest: notes.txt)" in err
    assert (tmp_path / "OUT" / "rpi4-cpu" / "notes.txt").read_text() == "mine"


def test_force_replaces_a_bundle_and_an_empty_folder(cli, tmp_path):
    (tmp_path / "OUT" / "rpi4-cpu").mkdir(parents=True)
    args = ("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "OUT", "--calibration", CALIB)
    assert cli(*args)[0] == 0  # an empty folder is taken without --force
    assert cli(*args, "--force")[0] == 0  # an edgepack bundle is replaced
    assert not [p for p in (tmp_path / "OUT").iterdir() if p.name.startswith(".")]


def test_leftover_cleaning_escapes_glob_characters(tmp_path):
    from edgepack.bundle import clean_leftovers

    dead = 4_000_000  # above any pid_max: never alive
    mine = tmp_path / f".mine.keep-{dead}-x"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    ours = tmp_path / f".[a].staging-{dead}-abcdef123456"
    ours.mkdir()
    clean_leftovers(tmp_path, "*")
    clean_leftovers(tmp_path, "[a]")
    assert (mine / "notes.txt").exists()  # '*' matched nothing but a folder literally named for it
    assert not ours.exists()


# --------------------------------------------------------------------- item 4: planted symlinks


@pytest.mark.parametrize("planted", ["rpi4-cpu.build.json", "report.md", "report.json", "report.html"])
def test_writes_never_follow_a_symlink_planted_in_out(cli, tmp_path, planted):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "OUT").mkdir()
    os.symlink(victim, tmp_path / "OUT" / planted)
    code, _, err = cli("compare", SAMPLE_MODEL, "--targets", "rpi4-cpu", "-o", tmp_path / "OUT",
                       "--calibration", CALIB, "--config", tmp_path / "none.toml")
    assert code == 0, err
    assert victim.read_text() == "precious"
    assert not (tmp_path / "OUT" / planted).is_symlink() and (tmp_path / "OUT" / planted).is_file()
    assert not [p for p in (tmp_path / "OUT").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("slot", ["rpi4-cpu.build.json", "report.md"])
def test_a_folder_where_a_file_goes_is_refused_before_any_work(cli, tmp_path, slot):
    (tmp_path / "OUT" / slot).mkdir(parents=True)
    code, _, err = cli("compare", SAMPLE_MODEL, "--targets", "rpi4-cpu", "-o", tmp_path / "OUT",
                       "--calibration", CALIB, "--config", tmp_path / "none.toml")
    assert code == 2 and f"{slot} is a folder" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "OUT" / "rpi4-cpu").exists()  # refused before the bundle was written


def test_write_file_replaces_a_symlink_and_leaves_no_temp(tmp_path):
    from edgepack.safe_io import write_file

    victim = tmp_path / "victim"
    victim.write_text("x")
    os.symlink(victim, tmp_path / "f")
    write_file(tmp_path / "f", "new")
    assert victim.read_text() == "x" and (tmp_path / "f").read_text() == "new" and not (tmp_path / "f").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "victim"]


# --------------------------------------------------------------------- item 8: leftovers


def test_swap_onto_a_symlink_or_file_leaves_no_old_folder(tmp_path):
    from edgepack.errors import OutputError
    from edgepack.safe_io import swap_into_place

    for kind in ("symlink", "file"):
        root = tmp_path / kind
        (root / "elsewhere").mkdir(parents=True)
        (root / "elsewhere" / "keep.txt").write_text("mine")
        (root / "OUT").mkdir()
        dest = root / "OUT" / "rpi4-cpu"
        if kind == "symlink":
            os.symlink(root / "elsewhere", dest)
        else:
            dest.write_text("a file")
        staging = root / "OUT" / ".rpi4-cpu.staging-1-abc"
        staging.mkdir()
        with pytest.raises(OutputError):
            swap_into_place(staging, dest)
        assert (root / "elsewhere" / "keep.txt").read_text() == "mine"
        assert os.path.lexists(dest) and not list((root / "OUT").glob(".rpi4-cpu.old-*"))


def test_dead_processes_temp_folders_are_swept(tmp_path, monkeypatch, cli):
    from edgepack.cleanup import sweep_temp

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "edgepack-4000000-rpi4-cpu-abc"
    alive = tmp_path / f"edgepack-{os.getppid()}-shared-abc"
    other = tmp_path / "edgepack-inspect-abc"  # no pid: not ours to judge
    link = tmp_path / "edgepack-4000001-x"
    for d in (dead, alive, other):
        d.mkdir()
        (d / "f").write_text("x")
    (tmp_path / "keep").mkdir()
    os.symlink(tmp_path / "keep", link)
    assert sorted(sweep_temp()) == ["edgepack-4000000-rpi4-cpu-abc"]
    assert alive.exists() and other.exists() and (tmp_path / "keep").exists() and link.is_symlink()
    dead.mkdir()
    code, _, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "OUT", "--calibration", CALIB)
    assert code == 0, err
    assert not dead.exists()  # the next build swept it
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f"edgepack-{os.getpid()}-")]


def _env(tmp: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}


def _loop(path: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from hostile_cli import loop_model

    return loop_model(path)


@pytest.mark.slow
def test_sigterm_stops_a_run_at_once_and_cleans_up(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "edgepack", "build", str(_loop(tmp_path / "loop.onnx")), "--target", "rpi4-cpu",
           "-o", str(tmp_path / "OUT"), "--time-limit", "600"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(tmp))
    time.sleep(3)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert time.perf_counter() - sent < 10
    assert proc.returncode == 143 and err.splitlines() == ["error: terminated"], err
    assert not list(tmp.iterdir()) or not [p for p in tmp.iterdir() if p.name.startswith("edgepack-")]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.8, 1.2, 1.6])
def test_sigterm_during_a_build_leaves_nothing_behind(tmp_path, delay):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "edgepack", "build", str(SAMPLE_MODEL), "--target", "rpi4-cpu", "-o",
           str(tmp_path / "OUT"), "--calibration", str(CALIB)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(tmp))
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    # 143: stopped and cleaned up; 0: it had finished; -15: SIGTERM came before main() installed its
    # handler (a slow start on a loaded machine: nothing written yet) or after it gave the default
    # handler back on the way out (the bundle is then complete)
    assert proc.returncode in (0, 143, -signal.SIGTERM), err
    if proc.returncode == -signal.SIGTERM and (tmp_path / "OUT" / "rpi4-cpu").exists():
        from edgepack.bundle_check import check_bundle as verify_bundle

        assert verify_bundle(tmp_path / "OUT" / "rpi4-cpu").ok
    if proc.returncode == 143:
        assert [line for line in err.splitlines() if not line.startswith("... ")] == ["error: terminated"]
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("edgepack-")]
    if (tmp_path / "OUT").exists():
        assert not [p.name for p in (tmp_path / "OUT").iterdir() if p.name.startswith(".")]


def test_a_failed_multi_target_build_says_which_bundles_it_wrote(cli, tmp_path):
    strict = tmp_path / "strict.toml"
    strict.write_text('extends = "rpi4-cpu"\nname = "strict"\n\n[[quantization]]\nname = "static-int8"\n'
                      'activation_type = "uint8"\nweight_type = "int8"\ntolerance = { cosine_min = 1.0 }\n')
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "--target", strict, "-o", tmp_path / "OUT",
                         "--calibration", CALIB, "--output-kind", "logits=embedding")  # so cosine_min applies
    assert code == 1  # a target failed; the other was built
    lines = [line for line in err.splitlines() if not line.startswith("... ")]
    assert len(lines) == 1 and lines[0].startswith("target not built: strict: quantize: model: no quantization recipe"), err
    assert f"rpi4-cpu: {tmp_path / 'OUT' / 'rpi4-cpu'}" in out and "strict: NOT BUILT - failed at quantize" in out
    assert (tmp_path / "OUT" / "rpi4-cpu" / "manifest.json").is_file() and not (tmp_path / "OUT" / "strict").exists()
