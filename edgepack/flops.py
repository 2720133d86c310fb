"""Per-node work: FLOPs (a multiply-add counts 2), bytes read and written, and an op class.

Computed from a shape-inferred model. A node whose shapes are unknown (dynamic dims that
were not fixed) is counted as unknown, never guessed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import onnx

from .model import dtype_size, iter_graphs

CONV_OPS = {"Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "FusedConv"}
MATMUL_OPS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "FusedGemm", "MatMulNBits"}
RECURRENT_OPS = {"LSTM", "GRU", "RNN"}
POOL_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "QLinearAveragePool"}
REDUCE_OPS = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1", "ArgMax", "ArgMin"}
NORM_OPS = {"BatchNormalization", "LayerNormalization", "InstanceNormalization", "GroupNormalization", "Softmax", "LogSoftmax"}
MOVE_OPS = {"Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "Squeeze", "Unsqueeze", "Flatten", "Pad",
            "Resize", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "GatherElements", "GatherND", "ScatterND",
            "Identity", "Cast", "Shape", "Size", "ConstantOfShape", "Range", "Constant", "QuantizeLinear",
            "DequantizeLinear", "NonZero", "TopK", "Where"}

OP_CLASSES = ("conv", "matmul", "recurrent", "elementwise", "pool", "reduce", "norm", "data-movement", "control-flow", "other")


@dataclass(frozen=True)
class NodeWork:
    name: str
    op_type: str
    op_class: str
    flops: float | None  # None = shapes unknown
    bytes_in: float | None
    bytes_out: float | None
    weight_bytes: float


@dataclass(frozen=True)
class WorkSummary:
    nodes: tuple[NodeWork, ...]
    flops_by_class: dict[str, float]
    total_flops: float
    unknown_nodes: int

    def to_json(self) -> dict:
        return {
            "total_flops": self.total_flops,
            "total_macs": self.total_flops / 2,
            "flops_by_class": {k: v for k, v in sorted(self.flops_by_class.items()) if v},
            "nodes_with_unknown_shapes": self.unknown_nodes,
        }


def op_class(op_type: str) -> str:
    if op_type in CONV_OPS:
        return "conv"
    if op_type in MATMUL_OPS or op_type in ("Attention", "MultiHeadAttention"):
        return "matmul"
    if op_type in RECURRENT_OPS:
        return "recurrent"
    if op_type in POOL_OPS:
        return "pool"
    if op_type in REDUCE_OPS:
        return "reduce"
    if op_type in NORM_OPS:
        return "norm"
    if op_type in MOVE_OPS:
        return "data-movement"
    if op_type in ("If", "Loop", "Scan"):
        return "control-flow"
    return "elementwise"


def _shape_map(model: onnx.ModelProto) -> dict[str, tuple[list[int | None], int]]:
    out: dict[str, tuple[list[int | None], int]] = {}
    for g in iter_graphs(model.graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            tt = vi.type.tensor_type
            if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
                continue
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
            out[vi.name] = (dims, tt.elem_type)
        for t in g.initializer:
            out[t.name] = (list(t.dims), t.data_type)
    return out


def _numel(dims: list[int | None] | None) -> int | None:
    if dims is None or any(d is None for d in dims):
        return None
    return math.prod(dims)  # type: ignore[arg-type]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_flops(node: onnx.NodeProto, shapes: dict) -> float | None:  # noqa: C901 - one case per op family
    def dims(i: int, outputs: bool = False):
        names = node.output if outputs else node.input
        if i >= len(names) or not names[i]:
            return None
        return shapes.get(names[i], (None, 0))[0]

    op = node.op_type
    out = dims(0, outputs=True)
    n_out = _numel(out)
    if op in ("Conv", "ConvInteger", "QLinearConv", "FusedConv"):
        w = dims(3 if op == "QLinearConv" else 1)
        if n_out is None or w is None or any(d is None for d in w):
            return None
        return 2.0 * n_out * math.prod(w[1:])  # Cin/group * kernel per output element
    if op == "ConvTranspose":
        x, w = dims(0), dims(1)
        if _numel(x) is None or w is None or any(d is None for d in w):
            return None
        # W: [Cin, Cout/group, k...]: every input element feeds Cout/group x kernel outputs
        return 2.0 * _numel(x) * w[1] * math.prod(w[2:])  # type: ignore[operator]
    if op in ("MatMul", "MatMulInteger", "FusedMatMul", "QLinearMatMul"):
        a = dims(0)
        if n_out is None or a is None or a[-1] is None:
            return None
        return 2.0 * n_out * a[-1]
    if op in ("Gemm", "FusedGemm"):
        a = dims(0)
        if n_out is None or a is None or None in a:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return 2.0 * n_out * k
    if op in RECURRENT_OPS:
        x, w, r = dims(0), dims(1), dims(2)
        if x is None or w is None or r is None or None in x or None in w or None in r:
            return None
        seq, batch = x[0], x[1]
        # W: [dirs, gates*H, I], R: [dirs, gates*H, H]
        return 2.0 * seq * batch * w[0] * w[1] * (w[2] + r[2])  # type: ignore[operator]
    if op in ("MaxPool", "AveragePool", "LpPool"):
        k = _attr(node, "kernel_shape", [1])
        return None if n_out is None else float(n_out * math.prod(k))
    if op in ("GlobalAveragePool", "GlobalMaxPool") or op in REDUCE_OPS:
        n_in = _numel(dims(0))
        return None if n_in is None else float(n_in)
    if op in ("BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization"):
        return None if n_out is None else 5.0 * n_out
    if op in ("Softmax", "LogSoftmax"):
        return None if n_out is None else 5.0 * n_out
    if op in MOVE_OPS or op in ("If", "Loop", "Scan"):
        return 0.0
    if op in ("Erf", "Gelu", "Tanh", "Sigmoid", "Exp", "Log", "HardSwish", "HardSigmoid", "Softplus", "Mish", "Elu",
              "Selu", "Pow", "Sqrt", "Reciprocal", "Sin", "Cos"):
        return None if n_out is None else 4.0 * n_out
    return None if n_out is None else float(n_out)


def model_work(model: onnx.ModelProto) -> WorkSummary:
    """Per-node FLOPs and bytes of a shape-inferred model (all graphs)."""
    shapes = _shape_map(model)
    init_names = {t.name for g in iter_graphs(model.graph) for t in g.initializer}
    nodes: list[NodeWork] = []
    by_class: Counter[str] = Counter()
    unknown = 0
    for g in iter_graphs(model.graph):
        for node in g.node:
            flops = node_flops(node, shapes)
            cls = op_class(node.op_type)

            def tensor_bytes(name: str) -> float | None:
                dims, et = shapes.get(name, (None, 0))
                n = _numel(dims)
                return None if n is None else n * dtype_size(et)

            ins = [tensor_bytes(i) for i in node.input if i]
            outs = [tensor_bytes(o) for o in node.output if o]
            w = sum(b or 0.0 for i, b in zip([i for i in node.input if i], ins) if i in init_names)
            b_in = None if any(b is None for b in ins) else float(sum(ins))  # type: ignore[arg-type]
            b_out = None if any(b is None for b in outs) else float(sum(outs))  # type: ignore[arg-type]
            if flops is None:
                unknown += 1
            else:
                by_class[cls] += flops
            nodes.append(NodeWork(node.name or node.op_type, node.op_type, cls, flops, b_in, b_out, w))
    return WorkSummary(tuple(nodes), dict(by_class), float(sum(by_class.values())), unknown)


# ------------------------------------------------------------------------------ model class

HEAVY_SHARE = 0.5  # a class of ops doing at least this share of the FLOPs names the model


def _with_unit_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose non-fixed input dims are 1, so shape inference can size every node (shares only)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if not (d.HasField("dim_value") and d.dim_value > 0):
                d.Clear()
                d.dim_value = 1
    return out


def classify(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[str, str]:
    """(class, evidence) from the FLOPs share of conv vs matmul ops; node counts if shapes are unknown.

    ``shapes``: the input shapes the model is run on (the build's verification samples). The class is
    computed at them whether or not the graph itself keeps dynamic dimensions, so fixing shapes with
    --shape never changes it; dims still unknown are taken as 1.
    """
    from .transforms import infer_shapes

    at = ""
    if shapes:
        from .shapes import fix_input_shapes

        names = {i.name for i in model.graph.input}
        given = {k: tuple(int(d) for d in v) for k, v in shapes.items() if k in names}
        model = fix_input_shapes(model, given)
        at = " at the inputs' shapes " + ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in sorted(given.items()))
    work = model_work(infer_shapes(_with_unit_dims(model)))
    heavy_unknown = any(n.flops is None and n.op_class in ("conv", "matmul") for n in work.nodes)
    if work.total_flops > 0 and not heavy_unknown:
        conv = work.flops_by_class.get("conv", 0.0) / work.total_flops
        mm = work.flops_by_class.get("matmul", 0.0) / work.total_flops
        evidence = f"FLOPs share{at}: conv {conv:.0%}, matmul {mm:.0%} of {work.total_flops:.3g}"
        if conv >= HEAVY_SHARE and conv >= mm:
            return "conv-heavy", evidence
        if mm >= HEAVY_SHARE:
            return "matmul-heavy", evidence
        return "other", evidence
    counts = Counter(n.op_class for n in work.nodes)
    conv, mm = counts.get("conv", 0), counts.get("matmul", 0)
    evidence = f"shapes unknown{at}, node counts: conv {conv}, matmul {mm} of {len(work.nodes)}"
    if conv == mm == 0:
        return "other", evidence
    return ("conv-heavy" if conv >= mm else "matmul-heavy"), evidence


def sample_shapes(inputs) -> dict[str, tuple[int, ...]]:
    """The input shapes of the first of ``inputs`` (a list of {input name: array} feeds)."""
    if not inputs:
        return {}
    return {name: tuple(int(d) for d in getattr(arr, "shape", ())) for name, arr in inputs[0].items()}


def classify_model(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None) -> str:
    """"matmul-heavy", "conv-heavy" or "other": which op class does most of the model's work."""
    return classify(model, shapes)[0]
