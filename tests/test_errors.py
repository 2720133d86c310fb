"""The error boundary: a bug of ours is reported as a bug (exit 70, one line, the traceback with
--debug), never as bad input; foreign tools' output is captured without losing the CLI's stderr
when targets build in threads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from conftest import REPO, SAMPLE_MODEL

CALIB = REPO / "sample_apps" / "model" / "calibration"


def _errors(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if not line.startswith("... ")]  # progress lines aside


def _plant_key_error(monkeypatch):
    """A KeyError deep inside a stage: the ONNX Runtime backend's packaging looks up a missing key."""
    from edgepack.backends.onnxruntime import OnnxRuntimeBackend

    def broken(self, ctx, decisions):
        return {}["planted"]

    monkeypatch.setattr(OnnxRuntimeBackend, "package", broken)


def test_a_bug_in_a_stage_is_reported_as_a_bug_not_as_bad_input(cli, tiny_cnn_path, tmp_path, monkeypatch):
    _plant_key_error(monkeypatch)
    code, out, err = cli("build", tiny_cnn_path, "--target", "rpi4-cpu", "-o", tmp_path / "out")
    assert code == 70
    assert _errors(err) == ["error: internal error in rpi4-cpu: reduce: KeyError: 'planted' — this is a bug in edgepack; "
                     "rerun with --debug for the traceback and please report it"]
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "rpi4-cpu").exists()  # no half-written bundle


def test_debug_prints_the_traceback_of_the_bug(cli, tiny_cnn_path, tmp_path, monkeypatch):
    import os

    before = os.environ.get("EDGEPACK_DEBUG")
    _plant_key_error(monkeypatch)
    code, _, err = cli("--debug", "build", tiny_cnn_path, "--target", "rpi4-cpu", "-o", tmp_path / "out")
    assert code == 70
    assert "Traceback (most recent call last)" in err and 'return {}["planted"]' in err
    assert err.strip().splitlines()[-1].startswith("error: internal error in rpi4-cpu: reduce: KeyError")
    code, _, err = cli("build", tiny_cnn_path, "--target", "rpi4-cpu", "-o", tmp_path / "out2", "--debug")
    assert code == 70 and "Traceback" in err  # also accepted after the command
    assert os.environ.get("EDGEPACK_DEBUG") == before  # --debug lasts one command, not the rest of the process


def test_compare_does_not_file_a_bug_as_one_more_failed_target(cli, tiny_cnn_path, tmp_path, monkeypatch):
    _plant_key_error(monkeypatch)
    code, _, err = cli("compare", tiny_cnn_path, "--targets", "rpi4-cpu,rpi5-cpu", "-o", tmp_path / "out", "--jobs", "1")
    assert code == 70 and "internal error in rpi4-cpu: reduce: KeyError" in err
    assert "target not built" not in err


def test_a_foreign_tools_error_in_a_stage_stays_a_stage_error(cli, tiny_cnn_path, tmp_path, monkeypatch):
    """onnxruntime's own exception types (here its Fail) are the tool refusing the input: the target is not
    built (exit 1, one line naming the target and stage), never a bug."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from edgepack.backends.onnxruntime import OnnxRuntimeBackend

    def refuses(self, ctx, decisions):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : cannot do that\nsecond line")

    monkeypatch.setattr(OnnxRuntimeBackend, "package", refuses)
    code, _, err = cli("build", tiny_cnn_path, "--target", "rpi4-cpu", "-o", tmp_path / "out")
    assert code == 1
    assert _errors(err) == ["target not built: rpi4-cpu: reduce: Fail: [ONNXRuntimeError] : 1 : FAIL : cannot do that"]


def test_a_bug_outside_any_stage_is_a_bug_too(cli, monkeypatch):
    import edgepack.target

    monkeypatch.setattr(edgepack.target, "builtin_names", lambda: [][0])
    code, _, err = cli("targets")
    assert code == 70 and err.startswith("error: internal error in edgepack targets: IndexError")


def test_captures_from_threads_restore_the_streams():
    from edgepack.runtime.capture import captured_output

    before = (sys.stdout, sys.stderr)
    barrier = threading.Barrier(4)
    got: list[list[str]] = []

    def noisy(i: int) -> None:
        barrier.wait()
        with captured_output() as lines:
            print(f"stdout {i}")
            print(f"stderr {i}", file=sys.stderr)
        got.append(lines)

    threads = [threading.Thread(target=noisy, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (sys.stdout, sys.stderr) == before
    assert sorted(tuple(sorted(g)) for g in got) == [(f"stderr {i}", f"stdout {i}") for i in range(4)]


def test_compare_in_threads_with_capturing_stages_keeps_stderr(tmp_path):
    """Two OpenVINO targets quantize with NNCF (its progress bars captured) in parallel threads, and a
    third fails late: its `target not built` line must still reach the real stderr at the end."""
    pytest.importorskip("nncf")
    (tmp_path / "ov-two.toml").write_text('extends = "intel-openvino"\nname = "ov-two"\n')
    (tmp_path / "late-failure.toml").write_text('extends = "rpi4-cpu"\nname = "late-failure"\nfamily = "intel"\n')
    targets = f"intel-openvino,{tmp_path / 'ov-two.toml'},{tmp_path / 'late-failure.toml'}"
    r = subprocess.run([sys.executable, "-m", "edgepack", "compare", str(SAMPLE_MODEL), "--targets", targets,
                        "--calibration", str(CALIB), "-o", str(tmp_path / "out"), "--jobs", "2"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if not line.startswith("... ")]
    assert errors == ["target not built: late-failure: reduce: no runtime build recipe for family 'intel'; "
                      "choose one of: android, ios, linux-arm"], r.stderr
    assert "Traceback" not in r.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["targets"]) == ["intel-openvino", "ov-two"]
    # both built; which recipe passed the host speed gate is not this test's business (it varies with load)
    assert all(row["recipes"]["model"] in ("static-int8", "fp16", "none") for row in report["targets"].values())
