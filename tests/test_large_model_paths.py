"""The memory-lean paths large models take, checked on small models against the whole-model paths:
streamed dynamic int8 vs onnxruntime's quantize_dynamic, the memory-mapped operator config vs
create_config_from_models, and lean sessions vs default ones (same outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import TensorProto, helper, numpy_helper

from edgepack.runtime import ort as ort_runtime
from edgepack.runtime import timing
from edgepack.backends.onnxruntime import tools as _ort_tools
from edgepack.backends.onnxruntime.streamed import can_stream, quantize_dynamic_streamed


def _mlp(tmp_path: Path, external: bool = True) -> Path:
    """x[2, 64] -> MatMul -> Relu -> Gemm -> MatMul (shared input with a second MatMul) -> Add: weights external."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1, n)
             for n, s in (("w1", (64, 64)), ("w2", (64, 32)), ("b2", (32,)), ("w3", (32, 16)), ("w4", (32, 16)))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w3"], ["a"]),
        helper.make_node("MatMul", ["h2", "w4"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    m = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])], inits)
    path = tmp_path / "mlp.onnx"
    if external:
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="mlp.data", size_threshold=0)
    else:
        onnx.save_model(m, str(path))
    return path


def _quantize_one(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], per_channel=False,
                     weight_type=QuantType.QInt8)


@pytest.mark.parametrize("external", [True, False])
def test_streamed_dynamic_int8_matches_whole_model_quantization(tmp_path, external):
    src = _mlp(tmp_path, external=external)
    assert can_stream(onnx.load_model(str(src), load_external_data=False))
    (tmp_path / "whole").mkdir()
    (tmp_path / "streamed").mkdir()
    whole, streamed = tmp_path / "whole" / "q.onnx", tmp_path / "streamed" / "q.onnx"
    _quantize_one(src, whole)
    count = quantize_dynamic_streamed(src, streamed, ["MatMul", "Gemm"], _quantize_one)
    assert count == 4
    onnx.checker.check_model(str(streamed))
    stored = onnx.load_model(str(streamed), load_external_data=False)
    assert streamed.with_name("q.onnx.data").is_file()
    assert all(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    assert "w1" not in {t.name for t in stored.graph.initializer}  # the float weights are gone
    # the shared input h2 is quantized once, as onnxruntime's quantizer does it
    outs = [o for n in stored.graph.node for o in n.output]
    assert len(outs) == len(set(outs))
    feed = [{"x": np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)}]
    a = ort_runtime.run_model(whole, feed)[0]["y"]
    b = ort_runtime.run_model(streamed, feed)[0]["y"]
    np.testing.assert_array_equal(a, b)


def test_streaming_refused_when_a_type_is_unknown(tmp_path):
    m = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")])
    m.graph.input[0].type.tensor_type.elem_type = 0
    assert not can_stream(m)


def test_memory_mapped_operator_config_matches_onnxruntime(tmp_path, tiny_cnn_path):
    import subprocess
    import sys

    files = []
    for name, model in (("cnn", tiny_cnn_path), ("mlp", _mlp(tmp_path, external=False))):
        out = tmp_path / f"{name}_ort"
        subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(model),
                        "--output_dir", str(out), "--optimization_style", "Fixed"], check=True, capture_output=True)
        files += sorted(out.glob("*.ort"))
    create = _ort_tools.ort_format_model().create_config_from_models
    for reduction in (False, True):
        ref = tmp_path / f"ref{int(reduction)}.config"
        create(files, ref, reduction)
        expected = [x for x in ref.read_text().splitlines() if not x.startswith("#")]
        assert _ort_tools.required_ops_and_types(files, reduction) == expected


def test_lean_session_gives_the_same_outputs(tmp_path, monkeypatch):
    src = _mlp(tmp_path)
    feed = [{"x": np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)}]
    default = ort_runtime.run_model(src, feed)[0]["y"]
    monkeypatch.setattr(ort_runtime, "SEQUENTIAL_ABOVE_BYTES", 0)  # every model counts as large
    lean = ort_runtime.run_model(src, feed)[0]["y"]
    np.testing.assert_array_equal(default, lean)


def test_operator_config_falls_back_to_onnxruntimes_tool(tmp_path, tiny_cnn_path, monkeypatch):
    import subprocess
    import sys

    from edgepack.backends.onnxruntime import minimal_build as reduce

    out = tmp_path / "ort"
    subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(tiny_cnn_path),
                    "--output_dir", str(out), "--optimization_style", "Fixed"], check=True, capture_output=True)
    files = sorted(out.glob("*.ort"))
    lean = reduce.operator_config(files, tmp_path / "a" / "ops.config")

    def moved(*_a, **_k):
        raise AttributeError("OrtFormatModelProcessor has no attribute '_model'")

    monkeypatch.setattr(_ort_tools, "required_ops_and_types", moved)
    public = reduce.operator_config(files, tmp_path / "b" / "ops.config")
    assert public["lines"] == lean["lines"]
    assert (tmp_path / "a" / "ops.config").read_bytes() == (tmp_path / "b" / "ops.config").read_bytes()


def test_large_models_take_the_streamed_path_and_say_so(tmp_path, monkeypatch):
    from edgepack.backends.onnxruntime import quantize
    from edgepack.target import Recipe

    src = _mlp(tmp_path)
    monkeypatch.setattr(quantize, "STREAM_ABOVE_BYTES", 0)
    notes: list[str] = []
    (tmp_path / "q").mkdir()
    quantize._dynamic_int8(src, tmp_path / "q" / "q.onnx", Recipe("dynamic-int8", per_channel=False), notes)
    assert any("quantized on its own" in n and "quant_pre_process skipped" in n for n in notes)
    onnx.checker.check_model(str(tmp_path / "q" / "q.onnx"))


def test_types_sets_weights_aside_and_puts_them_back(tmp_path, monkeypatch):
    from edgepack.backends.onnxruntime import streamed as quantize_streamed

    model = onnx.load_model(str(_mlp(tmp_path, external=False)))
    before = [t.raw_data for t in model.graph.initializer]
    monkeypatch.setattr(quantize_streamed, "STASH_ABOVE_BYTES", 100)  # the 64 x 64 weights count as large
    types = quantize_streamed._types(model)
    assert [t.raw_data for t in model.graph.initializer] == before
    assert types["h1"].type.tensor_type.elem_type == TensorProto.FLOAT


def test_large_pairs_are_timed_with_the_same_lean_sessions(tmp_path, monkeypatch):
    src = _mlp(tmp_path)
    monkeypatch.setattr(ort_runtime, "SEQUENTIAL_ABOVE_BYTES", 0)
    seen = []
    real = ort_runtime._lean
    monkeypatch.setattr(ort_runtime, "_lean", lambda ort, so: (seen.append(True), real(ort, so)))
    lat = timing.compare_latency(src, src, {"x": np.zeros((2, 64), np.float32)}, runs=3)
    assert lat["lean"] is True and len(seen) == 2 and lat["ref"]["order"].startswith("sequential")


def test_fp16_of_an_external_data_model_streams_its_weights(tmp_path):
    from edgepack.backends.onnxruntime import quantize

    src = _mlp(tmp_path)
    (tmp_path / "h").mkdir()
    dst = tmp_path / "h" / "half.onnx"
    quantize._fp16(src, dst, [])
    stored = onnx.load_model(str(dst), load_external_data=False)
    external = [t for t in stored.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert external and all(t.data_type == TensorProto.FLOAT16 for t in external)
    offsets = [int({e.key: e.value for e in t.external_data}["offset"]) for t in external]
    assert all(o % 64 == 0 for o in offsets)
    assert dst.with_name("half.onnx.data").stat().st_size <= (tmp_path / "mlp.data").stat().st_size // 2 + 64 * len(external)
    feed = [{"x": np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)}]
    np.testing.assert_allclose(ort_runtime.run_model(dst, feed)[0]["y"], ort_runtime.run_model(src, feed)[0]["y"], rtol=0, atol=1e-2)
