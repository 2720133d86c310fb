"""edgepack inspect: summary, FLOPs, and partition counts that agree with onnxruntime's checker."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agreement import edgepack_counts, ort_checker_counts
from conftest import SAMPLE_MODEL, make_model
from edgepack import inspect
from edgepack.flops import model_work
from edgepack.transforms import infer_shapes


def test_help_imports_nothing_heavy():
    code = "import sys, edgepack.cli; edgepack.cli._build_parser(); print(sorted(m for m in ('onnx','onnxruntime','numpy','openvino') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_inspect_json_on_sample_model(cli):
    code, out, err = cli("inspect", SAMPLE_MODEL, "--target", "all", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"]["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert report["work"]["total_flops"] > 0 and report["work"]["nodes_with_unknown_shapes"] == 0
    assert set(report["targets"]) == {"android-nnapi", "android-qnn", "android-qnn-8elite", "android-qnn-8gen2",
                                      "ios-coreml", "intel-openvino", "rpi4-cpu", "rpi5-cpu"}
    nnapi = {c["scenario"]: c for c in report["targets"]["android-nnapi"]["coverage"]}
    # dynamic batch blocks NNAPI as-is; prepare (fixed shapes, folding, HardSwish decomposition) reaches every node
    assert nnapi["as-is"]["nodes_supported"] == 0
    assert nnapi["after prepare"]["fraction"] == 1.0 and nnapi["after prepare"]["partitions"] == 1
    coreml = {c["scenario"]: c for c in report["targets"]["ios-coreml"]["coverage"]}
    assert coreml["after prepare"]["partitions"] == 1
    assert report["targets"]["rpi4-cpu"]["coverage"][0]["fraction"] == 1.0


@pytest.mark.parametrize("target,ep", [("android-nnapi", "NNAPI"), ("ios-coreml", "CoreML MLProgram")])
def test_counts_agree_with_onnxruntime_checker_on_sample(target, ep):
    report = inspect(SAMPLE_MODEL, [target])
    assert edgepack_counts(report, target) == ort_checker_counts(SAMPLE_MODEL)[ep]


def test_text_output_names_remedies(cli):
    code, out, _ = cli("inspect", SAMPLE_MODEL, "--target", "android-nnapi")
    assert code == 0
    assert "after prepare" in out and "HardSigmoid" in out and "decompose" in out


def test_shape_argument_errors(cli):
    code, _, err = cli("inspect", SAMPLE_MODEL, "--shape", "inptu=1x1x8x8")
    assert code == 2 and "unknown input 'inptu'" in err and "did you mean 'input'" in err
    code, _, err = cli("inspect", SAMPLE_MODEL, "--shape", "input=1x2x8x8")
    assert code == 2 and "dimension 1 is fixed to 1" in err
    code, _, err = cli("inspect", SAMPLE_MODEL, "--shape", "input=1xAx8")
    assert code == 2 and "is not a positive whole number" in err


def test_dynamic_spatial_dims_need_shape(tmp_path, cli):
    m = make_model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    p = tmp_path / "dyn.onnx"
    onnx.save(m, str(p))
    code, out, _ = cli("inspect", p, "--target", "android-nnapi")
    assert code == 0 and "pass --shape" in out
    code, out, _ = cli("inspect", p, "--target", "android-nnapi", "--shape", "x=1x3x32x32", "--json")
    after = [c for c in json.loads(out)["targets"]["android-nnapi"]["coverage"] if c["scenario"] == "after prepare"]
    assert after[0]["nodes_supported"] == after[0]["nodes_total"] == 1


# ---------------------------------------------------------------- FLOPs, exact on hand-computable graphs


def _work(model):
    return model_work(infer_shapes(model))


def test_flops_single_conv():
    w = numpy_helper.from_array(np.zeros((16, 3, 3, 3), np.float32), "w")
    m = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])], [w])
    work = _work(m)
    # every output element: 3*3*3 multiply-adds
    assert work.total_flops == 2 * (16 * 32 * 32) * (3 * 3 * 3)
    node = work.nodes[0]
    assert node.bytes_in == 4 * (3 * 32 * 32 + 16 * 27) and node.bytes_out == 4 * 16 * 32 * 32
    assert node.weight_bytes == 4 * 16 * 27


def test_flops_single_matmul():
    w = numpy_helper.from_array(np.zeros((64, 32), np.float32), "w")
    m = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 10, 64])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10, 32])], [w])
    assert _work(m).total_flops == 2 * 2 * 10 * 32 * 64


def test_flops_grouped_conv_and_unknown_shapes():
    w = numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.float32), "w")
    m = make_model([helper.make_node("Conv", ["x", "w"], ["y"], group=8, pads=[1, 1, 1, 1])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], [w])
    assert _work(m).total_flops == 2 * (8 * 4 * 4) * 9  # depthwise: 9 MACs per output
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    m.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "H"
    assert _work(m).unknown_nodes == 1


def test_openvino_coverage_from_query_model():
    pytest.importorskip("openvino")
    report = inspect(SAMPLE_MODEL, ["intel-openvino"])
    cov = report["targets"]["intel-openvino"]["coverage"][0]
    assert cov["available"] and cov["fraction"] == 1.0 and cov["partitions"] == 1
    assert cov["nodes_total"] > 0


def test_openvino_error_summary_is_one_line():
    from edgepack.backends.openvino.coverage import openvino_error_summary

    text = ("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'false' failed at x.cpp:1:\n"
            "FrontEnd API failed with OpConversionFailure:\nThe input data tensor's rank has to be known (static)\n"
            "Summary:\n-- Conversion is failed for: Conv-16, ReduceMean-16\n")
    line = openvino_error_summary(RuntimeError(text))
    assert "\n" not in line and line.startswith("Conversion is failed for: Conv-16")
