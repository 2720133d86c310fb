"""Transformer fusions for CPU targets: ``onnxruntime.transformers`` BERT fusions, kept only where they help.

``fuse_transformer(src, dst, reference_inputs, reference_outputs, host=...)`` first decides from the
graph alone whether the model looks like a transformer encoder (a normalization, a
MatMul -> Softmax -> MatMul attention core, optionally a Gather embedding on an integer input);
CNNs and other models return at once with ``applied: False`` and the reason. For an encoder it runs
``onnxruntime.transformers.optimizer.optimize_model(model_type="bert", opt_level=0)`` - pattern
fusions only, no onnxruntime session, so nothing host-specific (x86 NCHWc, AVX kernels) is baked
into the file - then checks the fused model numerically against the reference outputs and times
both models on the host with the target's session settings. The fused file is kept only if it
is at least ``min_speedup`` times faster; otherwise ``dst`` is removed and the caller goes on with
``src``.

The record is JSON-able. ``why`` never contains measured numbers (it goes into a byte-reproducible
manifest); the measurements are under the keys in :data:`MEASURED_KEYS`, which a caller keeps out
of deterministic output.

The fused ops (com.microsoft Attention, SkipLayerNormalization, BiasGelu, ...) are CPU contrib
kernels: a minimal build keeps them as long as it is not built with ``--disable_contrib_ops``
(the operator config lists them). Accelerator EPs (NNAPI, CoreML) cannot take them: callers
apply this stage to CPU targets only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from ...errors import StageError, first_line
from ...gates import compare_outputs, round_metrics
from ...model import iter_tensors
from ...runtime.capture import captured_output, one_at_a_time
from ...runtime.ort import run_model
from ...runtime.timing import compare_latency
from ...transforms import LARGE_MODEL_BYTES

__all__ = ["FUSION_COSINE_MIN", "FUSION_MAX_REL_ERR", "MEASURED_KEYS", "detect_transformer", "fuse_transformer"]

#: fusions reorder float arithmetic (e.g. LayerNorm in one kernel), so outputs are close, not equal
FUSION_COSINE_MIN = 0.9999
FUSION_MAX_REL_ERR = 1e-3
#: record keys holding host measurements: never write these into a byte-reproducible manifest
MEASURED_KEYS = ("latency_ratio", "host_latency")

_NORM_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
             "SkipSimplifiedLayerNormalization")
_MATMUL_OPS = ("MatMul", "FusedMatMul", "MatMulInteger", "Einsum")
_INT_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)
_ATTENTION_HOPS = 4  # Softmax to its score MatMul / value MatMul: Add(mask), Div/Mul(scale), Where, IsNaN, Cast
_LOGGER = "onnxruntime.transformers"


# ------------------------------------------------------------------------------ detection


class _Graph:
    """Producer/consumer maps of a graph's main body (fusions work on the top level only)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def parents(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [self.producer[i] for i in node.input if i in self.producer]

    def children(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [c for o in node.output for c in self.consumers.get(o, [])]

    def reaches(self, start: onnx.NodeProto, ops: tuple[str, ...], *, up: bool, hops: int) -> bool:
        """Whether a node of type ``ops`` is within ``hops`` steps of ``start`` (upstream or downstream)."""
        frontier, seen = [start], {id(start)}
        for _ in range(hops):
            nxt = []
            for node in frontier:
                for other in (self.parents(node) if up else self.children(node)):
                    if other.op_type in ops:
                        return True
                    if id(other) not in seen:
                        seen.add(id(other))
                        nxt.append(other)
            frontier = nxt
        return False


def _attention_cores(g: _Graph) -> int:
    """Softmax nodes fed by a MatMul (scores) and feeding a MatMul (weighted values)."""
    return sum(
        1 for n in g.nodes
        if n.op_type == "Softmax"
        and g.reaches(n, _MATMUL_OPS, up=True, hops=_ATTENTION_HOPS)
        and g.reaches(n, _MATMUL_OPS, up=False, hops=_ATTENTION_HOPS)
    )


def _norms(g: _Graph) -> int:
    """LayerNormalization-like nodes, or decomposed ones: ReduceMean and Pow within two steps (LN / RMSNorm)."""
    fused = sum(1 for n in g.nodes if n.op_type in _NORM_OPS)
    decomposed = sum(1 for n in g.nodes if n.op_type == "Pow"
                     and (g.reaches(n, ("ReduceMean",), up=True, hops=2)
                          or g.reaches(n, ("ReduceMean",), up=False, hops=2)))
    return fused + decomposed


def _embeddings(g: _Graph, graph: onnx.GraphProto) -> list[str]:
    """Integer graph inputs used as Gather indices (token / position / segment ids)."""
    int_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type in _INT_TYPES}
    return sorted({n.input[1] for n in g.nodes if n.op_type == "Gather" and len(n.input) > 1
                   and n.input[1] in int_inputs})


def detect_transformer(model: onnx.ModelProto) -> dict[str, Any]:
    """{"transformer": bool, "model_type": "bert" or None, "evidence": {...}, "why": str} from the graph alone.

    A BERT-like encoder has attention cores (MatMul -> Softmax -> MatMul) and normalizations;
    embedding Gathers on integer inputs are recorded as evidence but not required (ViT-style
    encoders take float patches).
    """
    g = _Graph(model.graph)
    ops = Counter(n.op_type for n in g.nodes)
    evidence = {
        "attention_cores": _attention_cores(g),
        "normalizations": _norms(g),
        "embedding_inputs": _embeddings(g, model.graph),
        "conv_nodes": ops.get("Conv", 0) + ops.get("ConvTranspose", 0),
        "matmul_nodes": sum(ops.get(op, 0) for op in _MATMUL_OPS) + ops.get("Gemm", 0),
    }
    if not evidence["attention_cores"]:
        kind = "a convolutional model" if evidence["conv_nodes"] else "not a transformer"
        why = f"{kind}: no MatMul -> Softmax -> MatMul attention core, so no transformer fusion applies"
        return {"transformer": False, "model_type": None, "evidence": evidence, "why": why}
    if not evidence["normalizations"]:
        why = "attention cores but no LayerNormalization (or ReduceMean/Pow) pattern: not a BERT-like encoder"
        return {"transformer": False, "model_type": None, "evidence": evidence, "why": why}
    why = "BERT-like encoder: MatMul -> Softmax -> MatMul attention cores and LayerNormalization patterns"
    if evidence["embedding_inputs"]:
        why += ", token embeddings gathered from integer inputs"
    return {"transformer": True, "model_type": "bert", "evidence": evidence, "why": why}


# ------------------------------------------------------------------------------ running the optimizer


def _weight_bytes(model: onnx.ModelProto) -> int:
    """Initializer bytes, counting external data by its recorded length (model loaded without it)."""
    total = 0
    for _, t in iter_tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            total += int({e.key: e.value for e in t.external_data}.get("length", 0) or 0)
        else:
            total += t.ByteSize()
    return total


def _has_external(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for _, t in iter_tensors(model.graph))


@contextlib.contextmanager
def _quiet(messages: list[str]):
    """Silence onnxruntime.transformers: its log records and prints are collected into ``messages``.
    One fusion at a time (its logger is process-wide, like the output streams)."""

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.levelname.lower()}: {record.getMessage()}")

    with one_at_a_time():
        logger = logging.getLogger(_LOGGER)
        handler = _Collect(logging.WARNING)
        saved = (logger.level, logger.propagate)
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
        printed: list[str] = []
        try:
            with captured_output() as printed:
                yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            messages.extend(printed)


def _remove(dst: Path) -> None:
    for path in (dst, dst.with_name(dst.name + ".data")):
        path.unlink(missing_ok=True)


def _optimize(src: Path, dst: Path, model_type: str, external: bool) -> dict[str, int]:
    """Run the fusions, save to ``dst``, return the optimizer's fused-operator statistics."""
    from onnxruntime.transformers.optimizer import optimize_model

    messages: list[str] = []
    _remove(dst)  # onnx appends to an existing external data file
    try:
        with _quiet(messages):
            optimized = optimize_model(str(src), model_type=model_type, num_heads=0, hidden_size=0, opt_level=0,
                                       use_gpu=False, only_onnxruntime=False)
            stats = optimized.get_fused_operator_statistics()
            optimized.save_model_to_file(str(dst), use_external_data_format=external)
    except Exception as exc:  # noqa: BLE001 - the optimizer raises assorted errors on unusual graphs
        _remove(dst)
        detail = f" ({messages[-1]})" if messages else ""
        msg = f"onnxruntime.transformers {model_type} fusion failed on {src.name}: {first_line(exc)}{detail}"
        raise StageError(msg) from exc
    return stats


# ------------------------------------------------------------------------------ public


def _within_tolerance(metrics: dict) -> bool:
    return all(
        not m.get("nonfinite_values") and m["max_rel_err"] is not None
        and m["cosine_min"] >= FUSION_COSINE_MIN and m["max_rel_err"] <= FUSION_MAX_REL_ERR
        for m in metrics.values()
    )


def _percent(x: float) -> str:
    return f"{x * 100:.2f}".rstrip("0").rstrip(".") + "%"


def _speed_phrase(min_speedup: float) -> str:
    """The setting, in words (not a measurement): 1.05 -> 'at least 5% faster'."""
    if min_speedup > 1.0:
        return f"at least {_percent(min_speedup - 1.0)} faster"
    if min_speedup == 1.0:
        return "no slower"
    return f"at most {_percent(1.0 / min_speedup - 1.0)} slower"


def fuse_transformer(
    src: Path,
    dst: Path,
    reference_inputs: list[dict],
    reference_outputs: list[dict],
    *,
    host: dict,
    min_speedup: float = 1.05,
    timed: bool = True,
    timed_why: str = "",
) -> dict[str, Any]:
    """Apply onnxruntime.transformers BERT fusions to ``src``, write ``dst`` if they pay off, return the record.

    ``timed`` False (the build host cannot stand in for the target's processor, ``timed_why`` says why):
    the speed-up cannot be measured for the target, so the unfused model is kept - a decision that does
    not depend on the machine that builds.

    ``reference_outputs`` are ``src``'s outputs on ``reference_inputs``; ``host`` is the session
    settings of :func:`edgepack.runtime.ort.host_settings` (e.g. ``{"level": "extended",
    "disabled_optimizers": []}``). The fused model is kept when its outputs are within
    ``FUSION_COSINE_MIN`` / ``FUSION_MAX_REL_ERR`` and its host latency is at most ``1 / min_speedup``
    times the original's; otherwise ``dst`` does not exist afterwards.

    Record keys: ``applied``, ``why`` (no measured numbers), ``model_type``, ``detection``,
    ``fused_ops`` (fused op type -> count), ``nodes_before``/``nodes_after``, ``metrics`` (per output,
    from :func:`compare_outputs`), ``latency_ratio`` and ``host_latency`` (measured; see MEASURED_KEYS).
    """
    src, dst = Path(src), Path(dst)
    if not min_speedup > 0:
        msg = f"fusion: min_speedup must be a positive number, got {min_speedup!r}"
        raise StageError(msg)
    if not reference_inputs or len(reference_inputs) != len(reference_outputs):
        msg = "fusion: needs reference inputs and the original model's outputs on them (same number of samples)"
        raise StageError(msg)
    try:
        model = onnx.load_model(str(src), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        msg = f"fusion: cannot read {src.name}: {first_line(exc)}"
        raise StageError(msg) from exc
    detection = detect_transformer(model)
    record: dict[str, Any] = {
        "applied": False, "why": detection["why"], "model_type": detection["model_type"],
        "detection": detection["evidence"], "fused_ops": {}, "metrics": None,
        "latency_ratio": None, "host_latency": None,
    }
    if not detection["transformer"]:
        return record
    if importlib.util.find_spec("sympy") is None:
        # the bert optimizer's symbolic shape inference needs sympy; the core install stays light
        record["why"] = "onnxruntime.transformers fusions need sympy, which is not installed (pip install sympy)"
        return record

    before = Counter(n.op_type for n in model.graph.node)
    external = _has_external(model) or _weight_bytes(model) > LARGE_MODEL_BYTES
    stats = _optimize(src, dst, detection["model_type"], external)
    fused = onnx.load_model(str(dst), load_external_data=False)
    # the statistics count every node of those types; a fusion is an increase over the source
    fused_ops = {op: n for op, n in sorted(stats.items()) if n > before.get(op, 0)}
    record.update(fused_ops=fused_ops, nodes_before=sum(before.values()), nodes_after=len(fused.graph.node),
                  external_data=external)
    if not fused_ops:
        _remove(dst)
        record["why"] = "onnxruntime.transformers bert fusions matched no pattern in this graph"
        return record
    names = ", ".join(f"{n} {op}" for op, n in fused_ops.items())

    metrics = round_metrics(compare_outputs(list(reference_outputs), run_model(dst, list(reference_inputs))))
    record["metrics"] = metrics
    if not _within_tolerance(metrics):
        _remove(dst)
        record["why"] = (f"fusions ({names}) changed outputs beyond cosine {FUSION_COSINE_MIN} / relative error "
                         f"{FUSION_MAX_REL_ERR}: kept the unfused model")
        return record

    if not timed:  # the build host cannot stand in for the target: no evidence of a speed-up there
        _remove(dst)
        record["why"] = (f"fusions matched ({names}) and outputs stay within tolerance, but whether they are "
                         f"{_speed_phrase(min_speedup)} on the target is not measured here ({timed_why}): kept the "
                         "unfused model")
        return record
    lat = compare_latency(src, dst, reference_inputs[0], clear_of=1.0 / min_speedup, **host)
    ratio = lat["ratio"]
    record["latency_ratio"] = ratio
    record["host_latency"] = {"session": dict(host), "unfused": lat["ref"], "fused": lat["cand"], "ratio": ratio}
    wanted = _speed_phrase(min_speedup)
    if ratio is not None and ratio <= 1.0 / min_speedup:
        record["applied"] = True
        record["why"] = f"fused {names}; outputs within fusion tolerance; fused model {wanted} on the host"
    else:
        _remove(dst)
        record["why"] = (f"fusions matched ({names}) and outputs stay within tolerance, but the fused model "
                         f"is not {wanted} on the host: kept the unfused model")
    return record
