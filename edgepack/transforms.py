"""Model-in/model-out graph transforms shared by ``inspect`` (what-if analysis) and the prepare stage.

Each transform returns a new model (or writes a new file) and leaves its input untouched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .cleanup import tmp_prefix
from .errors import StageError, first_line

log = logging.getLogger("edgepack")

LARGE_MODEL_BYTES = 1_500_000_000  # above this, ORT writes initializers to an external file


def ort_optimize(
    model: onnx.ModelProto,
    external_data_dir: Path,
    dst: Path,
    level: str = "basic",
    weight_bytes: int = 0,
) -> None:
    """Run onnxruntime's graph optimizations at ``level`` and save the result to ``dst``.

    ``external_data_dir`` is where the model's external data lives (its original folder): the
    runtime reads the weights from there directly, so they are loaded once.
    """
    from .runtime import ort as ort_runtime

    config = [("session.model_external_initializers_file_folder_path", str(external_data_dir))]
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    if weight_bytes > LARGE_MODEL_BYTES or external:
        # write the weights next to dst: references to the source's data file would break in the work folder
        config.append(("session.optimized_model_external_initializers_file_name", dst.name + ".data"))
    so = ort_runtime.session_options(level_name=level, optimized_path=dst, threads=1, config=config)
    try:
        ort_runtime.inference_session(model.SerializeToString(), so)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises Fail/InvalidGraph/RuntimeException...
        first = first_line(exc)
        msg = f"onnxruntime cannot load the model for {level} optimization: {first}"
        raise StageError(msg) from exc


def prepare_graph(model: onnx.ModelProto, external_data_dir: Path, dst: Path, *,
                  shapes: dict[str, tuple[int, ...]] | None = None, decompose_ops: frozenset[str] = frozenset(),
                  weight_bytes: int = 0) -> dict[str, int]:
    """The prepared graph, written to ``dst``: input ``shapes`` fixed, ``decompose_ops`` rewritten into
    ops the accelerator has (see DECOMPOSITIONS), then onnxruntime's basic optimizations (constant
    folding, BatchNormalization folding). Returns the decompositions made, per op.

    The one way a graph is prepared: the prepare stage checks what this writes against the original,
    ``inspect`` analyses it (what-if coverage) and the estimates price it, so all three see the same graph.
    """
    from .shapes import fix_input_shapes

    if shapes:
        model = fix_input_shapes(model, shapes)
    model, counts = decompose(model, set(decompose_ops)) if decompose_ops else (model, {})
    ort_optimize(model, external_data_dir, dst, "basic", weight_bytes)
    return counts


def load_for_analysis(path: Path, notes: list[str] | None = None) -> onnx.ModelProto:
    """A model file, without its weights, with inferred shapes: what analyses and estimates read.
    A shape inference failure is recorded in ``notes``."""
    return infer_shapes(onnx.load_model(str(path), load_external_data=False), notes)


def analysis_graph(path: str | Path, shapes: dict[str, tuple[int, ...]] | None = None,
                   notes: list[str] | None = None, decompose_ops: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """:func:`prepare_graph` of a model file (shapes fixed if given, ``decompose_ops`` rewritten),
    shape-inferred; only a temporary folder is written. A shape inference failure is recorded in ``notes``."""
    import tempfile

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("analysis")) as tmp:
        dst = Path(tmp) / "basic.onnx"
        model = onnx.load_model(str(path), load_external_data=False)
        try:
            prepare_graph(model, path.parent.resolve(), dst, shapes=shapes, decompose_ops=decompose_ops)
        except StageError as exc:
            if not shapes or "cannot load" not in str(exc):
                raise
            # e.g. an If whose other branch only type-checks for other input sizes: the prepare stage keeps
            # such a model's dynamic dimensions, and so does its analysis
            prepare_graph(model, path.parent.resolve(), dst, decompose_ops=decompose_ops)
            if notes is not None:
                notes.append("onnxruntime rejects the input shapes fixed to the samples' (shape inference of a "
                             "subgraph fails), so the graph was analysed with its own dynamic dimensions: nodes "
                             "whose shapes stay unknown count only their dispatch overhead")
        return load_for_analysis(dst, notes)


def _inference_errors() -> tuple[type[BaseException], ...]:
    # onnx's own errors; ValueError: a proto beyond protobuf's 2 GB; RuntimeError: other C++ failures
    return (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError, RuntimeError)


def infer_shapes(model: onnx.ModelProto, notes: list[str] | None = None) -> onnx.ModelProto:
    """ONNX shape inference as onnxruntime's usability checker runs it (no data propagation), so
    partition counts agree with it. Strict mode first; where it fails, the lenient mode (partial shape
    information is still useful). Where that fails too, the model is returned as it is and the
    failure recorded: a note in ``notes`` (when given) and a warning in edgepack's log."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except _inference_errors() as exc:
        log.debug("strict shape inference failed (%s); lenient mode", first_line(exc))
    try:
        return onnx.shape_inference.infer_shapes(model)
    except _inference_errors() as exc:
        note = f"shape inference failed ({type(exc).__name__}: {first_line(exc)}); analysed without inferred shapes"
        log.warning(note)
        if notes is not None:
            notes.append(note)
        return model


# ----------------------------------------------------------------------------- decompositions

# op -> the ops its decomposition uses. A decomposition is applied only when the target's
# accelerator lacks the op but has every replacement op.
DECOMPOSITIONS: dict[str, tuple[str, ...]] = {
    "HardSigmoid": ("Mul", "Add", "Clip"),
    "HardSwish": ("Mul", "Add", "Clip"),
    "Flatten": ("Reshape",),  # axis 0 or 1 only: Reshape(x, [1, -1]) / Reshape(x, [0, -1])
}


def _const(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def decompose(model: onnx.ModelProto, ops: set[str]) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Replace HardSigmoid/HardSwish by Mul/Add/Clip and Flatten by Reshape (when in ``ops``). Returns (model, counts).

    HardSigmoid(x) = clip(alpha*x + beta, 0, 1); HardSwish(x) = x * HardSigmoid(x, 1/6, 1/2).
    Only float32 tensors in the main graph are rewritten.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    counts: dict[str, int] = {}
    new_nodes: list[onnx.NodeProto] = []
    consts: dict[tuple[str, float], str] = {}

    def const(value: float) -> str:
        key = ("c", float(value))
        if key not in consts:
            name = f"edgepack_const_{len(consts)}"
            g.initializer.append(_const(name, value))
            consts[key] = name
        return consts[key]

    def shape_const(first: int) -> str:
        key = ("shape", float(first))
        if key not in consts:
            name = f"edgepack_shape_{len(consts)}"
            g.initializer.append(numpy_helper.from_array(np.array([first, -1], dtype=np.int64), name))
            consts[key] = name
        return consts[key]

    for i, node in enumerate(g.node):
        if node.op_type not in ops or node.domain not in ("", "ai.onnx") or node.op_type not in DECOMPOSITIONS:
            new_nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Flatten":
            axis = attrs.get("axis", 1)
            if axis not in (0, 1):
                new_nodes.append(node)
                continue
            new_nodes.append(helper.make_node("Reshape", [node.input[0], shape_const(1 if axis == 0 else 0)],
                                              list(node.output), name=f"edgepack_flatten_{i}"))
            counts["Flatten"] = counts.get("Flatten", 0) + 1
            continue
        if node.op_type == "HardSigmoid":
            alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
        else:
            alpha, beta = 1.0 / 6.0, 0.5
        x, y = node.input[0], node.output[0]
        base = f"edgepack_{node.op_type.lower()}_{i}"
        hs = y if node.op_type == "HardSigmoid" else f"{base}_hs"
        new_nodes += [
            helper.make_node("Mul", [x, const(alpha)], [f"{base}_mul"], name=f"{base}_mul"),
            helper.make_node("Add", [f"{base}_mul", const(beta)], [f"{base}_add"], name=f"{base}_add"),
            helper.make_node("Clip", [f"{base}_add", const(0.0), const(1.0)], [hs], name=f"{base}_clip"),
        ]
        if node.op_type == "HardSwish":
            new_nodes.append(helper.make_node("Mul", [x, hs], [y], name=f"{base}_out"))
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if not counts:
        return model, counts
    del g.node[:]
    g.node.extend(new_nodes)
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:  # Clip takes min/max as inputs from opset 11
        return model, {}
    return out, counts


# ----------------------------------------------------------------------------- weight-only int8

_INT8_TYPES = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)


def protect_weight_only_int8(model: onnx.ModelProto, *, tables_only: bool = False) -> tuple[onnx.ModelProto, int]:
    """Turn ``Mul(Cast(int8 W), scale)`` into ``DequantizeLinear(W, scale)``. Returns (model, count).

    Weight-only int8 models (a common size-saving export) dequantize with Cast + Mul. Constant
    folding would bake those into fp32 initializers and quadruple the model's bytes; onnxruntime
    keeps DequantizeLinear of initializers unfolded, so the int8 weights stay int8.
    Only per-tensor scales and per-axis scales of shape [N, 1] / [1, N] (matching W) are rewritten.
    Embedding tables read by Gather dequantize only the gathered rows; ``tables_only`` leaves every
    other weight to be folded (dequantizing a MatMul weight on every inference costs time).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    graph_outputs = {o.name for o in g.output}
    replace: dict[int, list[onnx.NodeProto]] = {}
    drop: set[int] = set()
    new_inits: list[onnx.TensorProto] = []
    for cast in g.node:
        if cast.op_type != "Cast" or cast.input[0] not in inits or cast.output[0] in graph_outputs:
            continue
        w = inits[cast.input[0]]
        to = next((a.i for a in cast.attribute if a.name == "to"), None)
        users = consumers.get(cast.output[0], [])
        if w.data_type not in _INT8_TYPES or to != onnx.TensorProto.FLOAT or len(users) != 1 or users[0].op_type != "Mul":
            continue
        mul = users[0]
        other = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
        scale = inits.get(other)
        if scale is None or scale.data_type != onnx.TensorProto.FLOAT:
            continue
        sdims, wdims = list(scale.dims), list(w.dims)
        values = numpy_helper.to_array(scale)
        if values.size == 1:
            axis, flat = None, values.reshape(())
        elif len(sdims) == len(wdims) == 2 and sdims == [wdims[0], 1]:
            axis, flat = 0, values.reshape(-1)
        elif len(sdims) == len(wdims) == 2 and sdims == [1, wdims[1]]:
            axis, flat = 1, values.reshape(-1)
        else:
            continue
        if not np.all(np.isfinite(flat)) or np.any(flat == 0):
            continue
        gathers = consumers.get(mul.output[0], [])
        if (axis == 0 and gathers and mul.output[0] not in graph_outputs
                and all(n.op_type == "Gather" and n.input[0] == mul.output[0]
                        and next((a.i for a in n.attribute if a.name == "axis"), 0) == 0 for n in gathers)):
            # an embedding table: gather the int8 rows and their scales, then dequantize only those rows
            # (dequantizing the whole table on every inference would cost more than the lookup)
            for k, gather in enumerate(gathers):
                base = f"edgepack_gq_{len(new_inits)}_{k}"
                rows, srows, frows = f"{base}_rows", f"{base}_scales", f"{base}_float"
                replace[id(gather)] = [
                    helper.make_node("Gather", [w.name, gather.input[1]], [rows], name=f"{base}_rows", axis=0),
                    helper.make_node("Gather", [scale.name, gather.input[1]], [srows], name=f"{base}_scales", axis=0),
                    helper.make_node("Cast", [rows], [frows], name=f"{base}_cast", to=onnx.TensorProto.FLOAT),
                    helper.make_node("Mul", [frows, srows], [gather.output[0]], name=f"{base}_mul"),
                ]
            drop.update({id(cast), id(mul)})
            new_inits.append(None)  # count, keeps names unique
            continue
        if tables_only:
            continue
        base = f"edgepack_dq_{len(new_inits)}"
        s_name = f"{base}_scale"
        new_inits.append(numpy_helper.from_array(flat.astype(np.float32), s_name))
        zp_name = f"{base}_zero_point"
        zp_dtype = np.int8 if w.data_type == onnx.TensorProto.INT8 else np.uint8
        new_inits.append(numpy_helper.from_array(np.zeros(flat.shape, zp_dtype), zp_name))
        kwargs = {"axis": axis} if axis is not None else {}
        dq = helper.make_node("DequantizeLinear", [w.name, s_name, zp_name], [mul.output[0]], name=f"{base}", **kwargs)
        replace[id(cast)] = [dq]
        drop.add(id(mul))
    if not replace:
        return model, 0
    nodes = [x for n in g.node if id(n) not in drop for x in replace.get(id(n), [n])]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(t for t in new_inits if t is not None)
    return out, sum(1 for t in new_inits if t is None) + sum(1 for v in replace.values() if v[0].op_type == "DequantizeLinear")


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its main graph's nodes in topological order (some converters append nodes
    out of order, e.g. the fp16 converter's input Casts); the input is returned if already sorted."""
    g = model.graph
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    produced_by_nodes = {o for n in g.node for o in n.output}

    def needs(node: onnx.NodeProto) -> set[str]:
        """Inputs, plus the outer-scope values its subgraphs read (If/Loop/Scan implicit inputs)."""
        names = set(node.input)
        for attr in node.attribute:
            graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in graphs:
                for sg in _all_graphs(sub):
                    for n in sg.node:
                        names.update(n.input)
        return names

    def ready(node: onnx.NodeProto) -> bool:
        return all(i in available or i not in produced_by_nodes for i in needs(node))

    pending = list(g.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if ready(node):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle: leave the order alone, the checker reports it
            return model
        pending = rest
    if [id(n) for n in ordered] == [id(n) for n in g.node]:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(ordered)
    return out


def _all_graphs(graph: onnx.GraphProto):
    from .model import iter_graphs

    return iter_graphs(graph)
