"""Safe model intake: every broken or hostile model gives one line and exit code 2."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import make_model, tiny_cnn
from edgepack.errors import ModelError
from edgepack.model import load_model


def _matmul_model(external_location: str | None = None, length: int | None = None):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    if external_location is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        entries = {"location": external_location, "offset": "0"}
        if length is not None:
            entries["length"] = str(length)
        for k, v in entries.items():
            e = w.external_data.add()
            e.key, e.value = k, v
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )


def _save(tmp_path, model, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def case_random_bytes(tmp_path):
    p = tmp_path / "random.onnx"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def case_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    return p


def case_truncated(tmp_path):
    data = tiny_cnn().SerializeToString()
    p = tmp_path / "truncated.onnx"
    p.write_bytes(data[: len(data) // 2])
    return p


def case_other_protobuf(tmp_path):
    p = tmp_path / "tensor.onnx"
    p.write_bytes(numpy_helper.from_array(np.ones(8, np.float32), "t").SerializeToString())
    return p


def case_text_file(tmp_path):
    p = tmp_path / "readme.onnx"
    p.write_text("this is not a model\n" * 20)
    return p


def case_empty_graph(tmp_path):
    return _save(tmp_path, make_model([], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])]))


def case_unknown_domain(tmp_path):
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    return _save(tmp_path, make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                                      domains=[("com.example", 1)]))


def case_unknown_op(tmp_path):
    node = helper.make_node("NotAnOnnxOp", ["x"], ["y"])
    return _save(tmp_path, make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))


def case_opset_too_old(tmp_path):
    m = tiny_cnn()
    m.opset_import[0].version = 5
    return _save(tmp_path, m)


def case_opset_too_new(tmp_path):
    m = tiny_cnn()
    m.opset_import[0].version = 99
    return _save(tmp_path, m)


def case_external_dotdot(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    sub = tmp_path / "model"
    sub.mkdir()
    return _save(sub, _matmul_model("../secret.bin", 64))


def case_external_absolute(tmp_path):
    return _save(tmp_path, _matmul_model("/etc/passwd", 64))


def case_external_symlink_escape(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 64)
    sub = tmp_path / "model"
    sub.mkdir()
    os.symlink(outside, sub / "weights.bin")
    return _save(sub, _matmul_model("weights.bin", 64))


def case_external_missing(tmp_path):
    return _save(tmp_path, _matmul_model("weights.bin", 64))


def case_external_short(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 10)
    return _save(tmp_path, _matmul_model("weights.bin", 64))


def case_initializer_wrong_length(tmp_path):
    m = _matmul_model()
    m.graph.initializer[0].raw_data = b"\0" * 12
    return _save(tmp_path, m)


def case_absurd_dims(tmp_path):
    m = _matmul_model()
    t = m.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([2**40, 4])
    return _save(tmp_path, m)


def case_undefined_input(tmp_path):
    node = helper.make_node("Relu", ["nowhere"], ["y"])
    return _save(tmp_path, make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))


def case_duplicate_output(tmp_path):
    n1 = helper.make_node("Relu", ["x"], ["y"])
    n2 = helper.make_node("Neg", ["x"], ["y"])
    return _save(tmp_path, make_model([n1, n2], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))


def case_cycle(tmp_path):
    n1 = helper.make_node("Add", ["x", "b"], ["a"])
    n2 = helper.make_node("Relu", ["a"], ["b"])
    return _save(tmp_path, make_model([n1, n2], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])]))


def case_directory(tmp_path):
    d = tmp_path / "adir.onnx"
    d.mkdir()
    return d


def case_missing_file(tmp_path):
    return tmp_path / "nope.onnx"


BAD_MODELS = [
    (case_random_bytes, "not a valid ONNX model|not an ONNX model"),
    (case_empty_file, "empty file"),
    (case_truncated, "not a valid ONNX model|not an ONNX model|invalid ONNX"),
    (case_other_protobuf, "not a valid ONNX model|not an ONNX model"),
    (case_text_file, "not a valid ONNX model|not an ONNX model"),
    (case_empty_graph, "the graph has no nodes"),
    (case_unknown_domain, "unknown operator domain 'com.example'"),
    (case_unknown_op, "NotAnOnnxOp"),
    (case_opset_too_old, "opset 5 is too old"),
    (case_opset_too_new, "opset 99 is newer"),
    (case_external_dotdot, "leaves the model's folder"),
    (case_external_absolute, "absolute external-data path"),
    (case_external_symlink_escape, "resolves outside the model's folder"),
    (case_external_missing, "external-data file 'weights.bin' is missing"),
    (case_external_short, "but the file has 10"),
    (case_initializer_wrong_length, r"\(64 bytes\) but 12 bytes of data"),
    (case_absurd_dims, "absurd shape"),
    (case_undefined_input, "nowhere"),
    (case_duplicate_output, "produced more than once"),
    (case_cycle, "invalid ONNX graph"),
    (case_directory, "not a file"),
    (case_missing_file, "model file not found"),
]


@pytest.mark.parametrize(("make", "expected"), BAD_MODELS, ids=[m.__name__[5:] for m, _ in BAD_MODELS])
def test_bad_model_raises_model_error(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(ModelError, match=expected):
        load_model(path)


@pytest.mark.parametrize(("make", "expected"), BAD_MODELS, ids=[m.__name__[5:] for m, _ in BAD_MODELS])
def test_bad_model_cli_one_line_exit_2(tmp_path, cli, make, expected):
    path = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = cli("inspect", path, "--target", "android-nnapi")
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_external_data_inside_folder_loads_without_reading_weights(tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.ones((4, 4), np.float32).tobytes())
    loaded = load_model(_save(tmp_path, _matmul_model("weights.bin", 64)))
    assert loaded.info.external_data_bytes == 64
    t = loaded.proto.graph.initializer[0]
    assert t.data_location == TensorProto.EXTERNAL and not t.raw_data  # not loaded into memory


def test_model_info_of_tiny_cnn(tiny_cnn_path):
    info = load_model(tiny_cnn_path).info
    assert info.inputs[0].shape == ("N", 3, 8, 8) and info.inputs[0].dynamic_dims == [0]
    assert info.op_histogram["Conv"] == 1 and info.nodes == 6
    assert info.params == 4 * 3 * 3 * 3 + 4 * 4 + 5 * 4 + 5
    assert info.weight_bytes_by_dtype == {"float32": 4 * info.params}
    assert len(info.sha256) == 64


def test_control_flow_counted(tmp_path):
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1])])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)]
    m = make_model(nodes, [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    info = load_model(_save(tmp_path, m)).info
    assert info.control_flow == {"If": 1} and info.nodes == 1 and info.nodes_total == 3
