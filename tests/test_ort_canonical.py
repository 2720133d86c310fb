"""Byte-identical .ort files (edgepack.backends.onnxruntime.ort_format)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from real_models import find_real_model

from edgepack.errors import StageError
from edgepack.backends.onnxruntime import tools as _ort_tools
from edgepack.backends.onnxruntime.convert import check_ort_loads, ort_summary, to_ort
from edgepack.backends.onnxruntime.ort_format import canonicalize_ort

DIGITS = Path(__file__).parents[1] / "sample_apps" / "model" / "digits_cnn.onnx"
STYLES = {"runtime": ("basic", None), "fixed": ("extended", "arm")}
RUNS = 3


# ---------------------------------------------------------------------------------------- models


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def if_model(path: Path) -> Path:
    """y = If(cond, then: Relu(x) + 1, else: Sigmoid(x) * 2) on an outer-scope x."""
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    f = TensorProto.FLOAT
    then_g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "one"], ["t_out"])],
        "then", [], [helper.make_tensor_value_info("t_out", f, [2, 3])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["s", "two"], ["e_out"])],
        "else", [], [helper.make_tensor_value_info("e_out", f, [2, 3])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []), helper.make_tensor_value_info("x", f, [2, 3])],
        [helper.make_tensor_value_info("y", f, [2, 3])],
        [one, two],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def lstm_model(path: Path) -> Path:
    """A single-direction LSTM (seq 5, batch 'N', input 4, hidden 3) followed by Relu."""
    rng = np.random.default_rng(3)
    hidden, size = 3, 4
    inits = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, size)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.standard_normal((1, 8 * hidden)).astype(np.float32), "B"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden),
            helper.make_node("Relu", ["Y_h"], ["out"]),
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, "N", size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "N", hidden])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _real(key: str, tmp_path: Path) -> Path:
    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{key} not installed")
    return Path(path)


MODELS = {
    "digits": lambda tmp: DIGITS,
    "if": lambda tmp: if_model(tmp / "if.onnx"),
    "lstm": lambda tmp: lstm_model(tmp / "lstm.onnx"),
    "nudenet_yolov8n": lambda tmp: _real("nudenet_yolov8n", tmp),
    "ppocrv2_rec_lstm": lambda tmp: _real("ppocrv2_rec_lstm", tmp),
}
#: fixed sizes for symbolic dims, per model and input (other symbolic dims become 1)
SHAPES = {
    "nudenet_yolov8n": {"images": (1, 3, 320, 320)},
    "ppocrv2_rec_lstm": {"x": (1, 3, 32, 100)},
}
REAL = {"nudenet_yolov8n", "ppocrv2_rec_lstm"}
CASES = [
    pytest.param(model, style, marks=[pytest.mark.integration] if model in REAL else [])
    for model in MODELS
    for style in STYLES
]


# --------------------------------------------------------------------------------------- helpers


def _convert(src: Path, dst: Path, style: str) -> Path:
    level, platform = STYLES[style]
    to_ort(src, dst, optimization_style=style, optimization_level=level, target_platform=platform)
    return dst


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.load_model_format", "ORT")
    so.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _feed(session: ort.InferenceSession, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for inp in session.get_inputs():
        shape = shapes.get(inp.name) or tuple(d if isinstance(d, int) and d > 0 else 1 for d in inp.shape)
        if inp.type == "tensor(bool)":
            feed[inp.name] = np.array(rng.random() < 0.5) if not shape else rng.random(shape) < 0.5
        elif inp.type == "tensor(float)":
            feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            raise AssertionError(f"test feed: no generator for {inp.type}")
    return feed


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("model", "style"), CASES)
def test_canonical_ort_is_byte_identical_and_equivalent(tmp_path, model, style):
    src = MODELS[model](tmp_path)
    raw = [_convert(src, tmp_path / f"raw{i}.ort", style) for i in range(RUNS)]
    canon = []
    for i, path in enumerate(raw):
        out = tmp_path / f"canon{i}.ort"
        record = canonicalize_ort(path, out)
        assert set(record) == {"bytes_before", "bytes_after", "resolver_entries", "sha256"}
        assert record["bytes_before"] == path.stat().st_size
        assert record["bytes_after"] == out.stat().st_size
        assert record["sha256"] == _sha(out)
        assert record["resolver_entries"] > 0
        canon.append(out)
    assert len({_sha(p) for p in canon}) == 1, "canonical files differ between conversions"

    # idempotent, also in place
    again = tmp_path / "again.ort"
    assert canonicalize_ort(canon[0], again)["sha256"] == _sha(canon[0])
    in_place = canonicalize_ort(canon[1], canon[1])
    assert in_place["sha256"] == _sha(canon[0]) == _sha(canon[1])

    # same content, loads, same outputs as the file onnxruntime wrote
    assert ort_summary(canon[0]) == ort_summary(raw[0])
    check_ort_loads(canon[0])
    before, after = _session(raw[0]), _session(canon[0])
    feed = _feed(before, SHAPES.get(model, {}))
    for want, got in zip(before.run(None, feed), after.run(None, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_canonical_resolver_is_sorted_and_complete(tmp_path):
    raw = _convert(DIGITS, tmp_path / "raw.ort", "runtime")
    out = tmp_path / "canon.ort"
    canonicalize_ort(raw, out)
    fbs = _ort_tools.fbs()

    def resolver(path):
        buf = bytearray(path.read_bytes())
        res = fbs.InferenceSession.InferenceSession.GetRootAs(buf, 0).KernelTypeStrResolver()
        entries = {}
        for i in range(res.OpKernelTypeStrArgsLength()):
            op = res.OpKernelTypeStrArgs(i)
            strs = {}
            for j in range(op.KernelTypeStrArgsLength()):
                ts = op.KernelTypeStrArgs(j)
                strs[ts.KernelTypeStr()] = [(ts.Args(k).ArgType(), ts.Args(k).Index()) for k in range(ts.ArgsLength())]
            assert list(strs) == sorted(strs)
            entries[op.OpId()] = strs
        assert list(entries) == sorted(entries)
        return entries

    assert resolver(out) == resolver(raw)


def test_not_an_ort_file(tmp_path):
    bad = tmp_path / "bad.ort"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(StageError, match="not an ORT format model"):
        canonicalize_ort(bad, tmp_path / "out.ort")
    with pytest.raises(StageError, match="not found"):
        canonicalize_ort(tmp_path / "missing.ort", tmp_path / "out.ort")
