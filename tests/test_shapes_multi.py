"""--shape for several models: ``NAME=DIMS`` for every model with that input, ``MODEL:NAME=DIMS`` for one."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import TensorProto, helper

from edgepack.errors import ShapeError
from edgepack.shapes import ShapeTarget, parse_shape_args, shapes_per_model

TRIO = [ShapeTarget("det", "det.onnx", ("x",)), ShapeTarget("rec", "rec.onnx", ("x",)),
        ShapeTarget("cls", "cls.onnx", ("x", "mask"))]


def _resolve(*args: str, models=TRIO):
    return shapes_per_model(parse_shape_args(list(args)), models)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["x=1x3x8x8"], [{"x": (1, 3, 8, 8)}] * 3),
        (["det:x=1x3x64x64", "rec:x=1x3x48x320", "cls:x=1x3x48x192"],
         [{"x": (1, 3, 64, 64)}, {"x": (1, 3, 48, 320)}, {"x": (1, 3, 48, 192)}]),
        (["det:x=1x3x64x64", "mask=1x4"], [{"x": (1, 3, 64, 64)}, {}, {"mask": (1, 4)}]),
        # both forms mixed: the same shape twice is no conflict
        (["x=1x3x48x192", "cls:x=1x3x48x192"], [{"x": (1, 3, 48, 192)}] * 3),
    ],
    ids=["plain-for-all", "qualified", "mixed", "same-twice"],
)
def test_shapes_per_model(args, expected):
    assert _resolve(*args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x=1x3x8x8", "det:x=1x3x64x64"], r"--shape x=1x3x8x8 and --shape det:x=1x3x64x64 give input 'x' of det.onnx "
                                            r"two shapes; keep one"),
        (["dte:x=1x3x8x8"], r"--shape 'dte:x': 'dte' is not the file stem of a model given \(det, rec, cls\) "
                            r"\(did you mean 'det:x'\?\); inputs: det.onnx: x; rec.onnx: x; cls.onnx: x, mask"),
        (["det:mask=1x4"], r"--shape 'det:mask': no model given has that input"),
        (["x=1x3x8x8", "x=1x3x8x8"], r"--shape given twice for 'x'"),
    ],
    ids=["conflict", "unknown-model", "input-of-another-model", "duplicate"],
)
def test_shape_errors_name_the_model(args, message):
    with pytest.raises(ShapeError, match=message):
        _resolve(*args)


def test_input_names_with_colons_read_as_what_the_models_have():
    tf = [ShapeTarget("nmp", "nmp.onnx", ("serving_default_input_2:0",))]
    assert _resolve("serving_default_input_2:0=1x43844x1", models=tf) == [{"serving_default_input_2:0": (1, 43844, 1)}]
    assert _resolve("nmp:serving_default_input_2:0=1x43844x1", models=tf) == [{"serving_default_input_2:0": (1, 43844, 1)}]
    clash = [ShapeTarget("a", "a.onnx", ("a:b", "b"))]
    with pytest.raises(ShapeError, match=r"--shape 'a:b' is ambiguous: it is an input name of a.onnx and also reads "
                                         r"as MODEL:INPUT for a.onnx input 'b'; rename a file"):
        _resolve("a:b=1x2", models=clash)


def test_one_model_keeps_its_message():
    one = [ShapeTarget("digits", "digits.onnx", ("input",))]
    with pytest.raises(ShapeError, match=r"unknown input 'inptu' \(did you mean 'input'\?\); the model's inputs are: input"):
        _resolve("inptu=1x1x8x8", models=one)
    assert _resolve("digits:input=1x1x8x8", models=one) == [{"input": (1, 1, 8, 8)}]


# ---------------------------------------------------------------- the CLI, several models that share an input name


def _relu_model(path, channels: int):
    m = make_model([helper.make_node("Relu", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, "H", "W"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, "H", "W"])])
    onnx.save(m, str(path))
    return path


def test_two_models_with_input_x_build_as_one_bundle(tmp_path, cli):
    a, b = _relu_model(tmp_path / "det.onnx", 3), _relu_model(tmp_path / "rec.onnx", 1)
    out = tmp_path / "out"
    code, _, err = cli("build", a, b, "--target", "android-nnapi", "-o", out, "--json",
                       "--shape", "det:x=1x3x16x16", "--shape", "rec:x=1x1x8x32")
    assert code == 0, err
    manifest = json.loads((out / "android-nnapi" / "manifest.json").read_text())
    assert manifest["recipe"]["shapes"] == {"det": {"x": [1, 3, 16, 16]}, "rec": {"x": [1, 1, 8, 32]}}


def test_multi_model_errors_name_the_model(tmp_path, cli):
    a, b = _relu_model(tmp_path / "det.onnx", 3), _relu_model(tmp_path / "rec.onnx", 1)
    code, _, err = cli("build", a, b, "--target", "android-nnapi", "-o", tmp_path / "o1", "--shape", "x=1x3x16x16")
    assert code == 2 and err.startswith("error: rec.onnx: --shape x=1x3x16x16: dimension 1 is fixed to 1"), err
    code, _, err = cli("build", a, b, "--target", "android-nnapi", "-o", tmp_path / "o2", "--shape", "det:x=1x3x16x16")
    assert code == 2 and "android-nnapi needs fixed input shapes (rec.onnx)" in err, err
    calib = tmp_path / "calib"
    (calib / "det").mkdir(parents=True)
    np.save(calib / "det" / "x.npy", np.zeros((4, 1, 3, 16, 16), np.float32))
    np.save(calib / "x.npy", np.zeros((4, 1, 3, 16, 16), np.float32))  # the shared folder: det's shape, not rec's
    code, _, err = cli("build", a, b, "--target", "android-nnapi", "-o", tmp_path / "o3", "--calibration", calib,
                       "--shape", "det:x=1x3x16x16", "--shape", "rec:x=1x1x8x32")
    assert code == 2 and err.startswith("error: rec.onnx: calibration x.npy has shape [4, 1, 3, 16, 16]"), err
    assert "give each its own folder: calib/rec/ for rec.onnx" in err


def test_inspect_takes_the_qualified_form(tmp_path, cli):
    p = _relu_model(tmp_path / "det.onnx", 3)
    code, out, err = cli("inspect", p, "--shape", "det:x=1x3x32x32", "--json")
    assert code == 0, err
    assert json.loads(out)["shapes"]["used_for_flops"] == {"x": [1, 3, 32, 32]}
    code, _, err = cli("inspect", p, "--shape", "rec:x=1x3x32x32")
    assert code == 2 and "unknown input 'rec:x'" in err
