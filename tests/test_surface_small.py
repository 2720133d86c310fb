"""The small things a new user trips on (issue #18): verify pointed at OUT, inspect's remedies after
prepare, the FLOPs line, a wrong --shape, evaluate.py on an OpenVINO bundle."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO, SAMPLE_MODEL, make_model

CALIB = REPO / "sample_apps" / "model" / "calibration"


def test_verify_of_an_output_folder_lists_its_bundles(cli, tmp_path):
    code, _, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "--target", "rpi5-cpu", "-o", tmp_path / "OUT")
    assert code == 0, err
    code, out, err = cli("verify", tmp_path / "OUT")
    assert code == 2 and out == ""
    assert err == (f"error: {tmp_path / 'OUT'} is an output folder, not a bundle; it holds 2 bundle(s): "
                   f"{tmp_path / 'OUT' / 'rpi4-cpu'}, {tmp_path / 'OUT' / 'rpi5-cpu'} - verify one of them\n")
    code, _, err = cli("verify", tmp_path)  # a folder with no bundle in it: the plain message
    assert code == 2 and "is not an edgepack bundle" in err


def _equal_where(path):
    z = numpy_helper.from_array(np.zeros((1, 4), np.float32), "z")
    nodes = [helper.make_node("Equal", ["x", "z"], ["c"]), helper.make_node("Where", ["c", "z", "x"], ["w"]),
             helper.make_node("Relu", ["w"], ["y"])]
    onnx.save(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [z]), str(path))
    return path


def test_inspect_does_not_claim_prepare_removes_data_equal_where(cli, tmp_path):
    code, out, _ = cli("inspect", _equal_where(tmp_path / "eq.onnx"), "--target", "android-nnapi")
    assert code == 0
    after = out.split("after prepare", 1)[1]
    assert "Equal x1) -> still there after prepare: it computes on data, not only on shapes" in after
    assert "(prepare does this)" not in after
    before = out.split("as-is", 1)[1].split("after prepare", 1)[0]
    assert "constant-folded by prepare once shapes are fixed, if it only computes shapes" in before


def test_summary_spaces_its_units_and_says_when_nothing_was_counted(cli, tmp_path):
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    path = tmp_path / "id.onnx"
    onnx.save(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]), str(path))
    code, out, _ = cli("inspect", path)
    assert code == 0 and "0FLOPs" not in out
    assert "work      0 FLOPs (0 MACs) (no node with countable arithmetic) at x=[1, 4]" in out
    code, out, _ = cli("inspect", SAMPLE_MODEL)
    assert "0FLOPs" not in out and "KFLOPs (" in out and " KMACs)" in out


def test_a_wrong_shape_is_named_without_onnxruntimes_dump_or_a_calibration_hint(cli, tmp_path):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    path = tmp_path / "mm.onnx"
    onnx.save(make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                         [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c"])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w]), str(path))
    code, out, err = cli("build", path, "--target", "rpi5-cpu", "-o", tmp_path / "o", "--shape", "x=1x5")
    assert code == 2
    assert err == ("error: mm.onnx does not run with --shape x=1x5: MatMul dimension mismatch; the model declares "
                   "x [n, c] - check the dimensions it expects\n")
    for noise in ("--calibration", "ONNXRuntimeError", "Status Message", ".h:", "\033["):
        assert noise not in err


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs the openvino extra")
def test_evaluate_py_on_an_openvino_bundle(cli, tmp_path):
    code, _, err = cli("build", SAMPLE_MODEL, "--target", "intel-openvino", "-o", tmp_path / "o", "--calibration", CALIB)
    assert code == 0, err
    script = REPO / "sample_apps" / "model" / "evaluate.py"
    for arg in (tmp_path / "o" / "intel-openvino", tmp_path / "o" / "intel-openvino" / "model.xml"):
        proc = subprocess.run([sys.executable, str(script), str(arg)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        accuracy = float(proc.stdout.split("top-1 accuracy: ")[1].split()[0])
        assert accuracy > 0.95  # the digits CNN: 97.8% in fp32; int8 within a point
