"""Node rules of the latency model: NCHWc padding, pointwise convs, the elementwise-op key, and the
pairs onnxruntime's extended level fuses (Add + LayerNormalization, x * Sigmoid(x))."""

from __future__ import annotations

import math

import onnx

from ..partition import node_key


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _weight_input(node: onnx.NodeProto) -> str | None:
    """The name of a conv's weight input (QLinearConv keeps it at index 3)."""
    i = 3 if node.op_type == "QLinearConv" else 1
    return node.input[i] if len(node.input) > i else None


def nchwc_padding(n: onnx.NodeProto, cls: str, weight_dims: dict, block: float) -> float:
    """Work factor of a conv in the NCHWc layout: its channels padded to whole blocks (input channels
    with fewer than a block stay unblocked, as onnxruntime's NCHWc transformer leaves them)."""
    w = weight_dims.get(_weight_input(n)) if _weight_input(n) else None
    if not w or len(w) < 3:
        return 1.0
    up = lambda c: math.ceil(c / block) * block / c if c > 0 else 1.0  # noqa: E731
    if cls == "conv-depthwise":
        return up(int(w[0]))
    group = int(_attr(n, "group", 1))
    cin = int(w[1]) * group
    return up(int(w[0])) * (up(cin) if cin >= block else 1.0)


def pointwise(n: onnx.NodeProto, weight_dims: dict) -> bool:
    """A plain (group 1) Conv with a 1 x 1 kernel."""
    w = weight_dims.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
    return bool(w) and math.prod(w[2:]) == 1 and int(_attr(n, "group", 1)) == 1


def element_op(n: onnx.NodeProto) -> str:
    """The ELEMENT_OPS key of a node: its op type, with Resize's interpolation mode."""
    if n.op_type == "Resize":
        mode = _attr(n, "mode", b"nearest")
        return "Resize-" + (mode.decode() if isinstance(mode, bytes) else str(mode))
    return n.op_type


def skip_layernorms(g: onnx.GraphProto, producers: dict[str, onnx.NodeProto], consumers: dict[str, int],
                     shapes: dict) -> dict[tuple, tuple]:
    """{LayerNormalization key: Add key} for the Add -> LayerNormalization pairs onnxruntime's extended
    level fuses into SkipLayerNormalization (3-D input, the Add's output used only by the norm);
    ``producers`` and ``consumers`` are the graph's own."""
    out = {}
    for n in g.node:
        if n.op_type != "LayerNormalization" or not n.input:
            continue
        add = producers.get(n.input[0])
        if add is None or add.op_type != "Add" or consumers.get(n.input[0], 0) != 1:
            continue
        dims = shapes.get(n.input[0])
        if dims is not None and len(dims) == 3 and all(shapes.get(i) == dims for i in add.input):
            out[node_key(n)] = node_key(add)
    return out


def swish_muls(g: onnx.GraphProto, producers: dict[str, onnx.NodeProto], consumers: dict[str, int]) -> set[tuple]:
    """Keys of the Mul nodes of x * Sigmoid(x) (SiLU/Swish), which onnxruntime's extended level fuses
    with the Sigmoid into one QuickGelu kernel costing about what the Sigmoid alone does."""
    out = set()
    for n in g.node:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        for a, b in (n.input, n.input[::-1]):
            sig = producers.get(b)
            if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == a and consumers.get(b, 0) == 1:
                out.add(node_key(n))
    return out


def hardswish_pairs(g: onnx.GraphProto, producers: dict[str, onnx.NodeProto],
                    consumers: dict[str, int]) -> dict[tuple, tuple]:
    """{Mul key: HardSigmoid key} of x * HardSigmoid(x) (alpha 1/6, beta 0.5: HardSwish) on a Conv's output,
    which onnxruntime's x86 NCHWc level fuses into the conv as its HardSwish activation (seen on real
    MobileNetV3-style models: 28 of 30 such pairs became NCHWc Convs with activation HardSwish)."""
    out = {}
    for n in g.node:
        if n.op_type != "Mul" or len(n.input) != 2:
            continue
        for a, b in (n.input, n.input[::-1]):
            sig, conv = producers.get(b), producers.get(a)
            if (sig is not None and sig.op_type == "HardSigmoid" and sig.input[0] == a and consumers.get(b, 0) == 1
                    and conv is not None and conv.op_type == "Conv" and consumers.get(a, 0) == 2
                    and abs(_float_attr(sig, "alpha", 0.2) - 1 / 6) < 1e-4 and abs(_float_attr(sig, "beta", 0.5) - 0.5) < 1e-4):
                out[node_key(n)] = node_key(sig)
    return out


def _float_attr(n: onnx.NodeProto, name: str, default: float) -> float:
    return next((a.f for a in n.attribute if a.name == name), default)


NCHWC_POOLS = {"MaxPool", "AveragePool"}
NCHWC_FUSED = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh"}  # applied by the NCHWc conv


def nchwc_reorders(graph: onnx.GraphProto, shapes: dict, block: float) -> list[tuple[str, str]]:
    """(ReorderInput | ReorderOutput, tensor) onnxruntime's NCHWc transformer inserts in ``graph``: NCHWc
    nodes are 2-D Convs, Max/AveragePools and residual Adds of NCHWc tensors, and the activations a conv
    takes in; a tensor crossing to or from any other node (or a graph output) is reordered once per
    direction. A conv reading fewer channels than a block reads NCHW directly (no reorder)."""
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name for t in graph.initializer}
    blocked: set[str] = set()  # tensors held in NCHWc
    counts = {k: len(v) for k, v in consumers.items()}
    hswish = hardswish_pairs(graph, producers, counts)
    fused_sigs = set(hswish.values())
    for n in graph.node:  # topological order
        dims = shapes.get(n.output[0]) if n.output else None
        if not dims or len(dims) != 4:
            continue
        ins = [i for i in n.input if i and i not in inits]
        if node_key(n) in hswish or node_key(n) in fused_sigs:  # x * HardSigmoid(x): the conv's HardSwish
            if any(i in blocked for i in ins):
                blocked.add(n.output[0])
            continue
        if (n.op_type == "Conv" or (n.op_type in NCHWC_POOLS and ins and ins[0] in blocked)
                or (n.op_type in ("Add", "Sum") and ins and all(i in blocked and shapes.get(i) == dims for i in ins))
                or (n.op_type in NCHWC_FUSED and ins and ins[0] in blocked and producers.get(ins[0]) is not None
                    and producers[ins[0]].op_type == "Conv" and len(consumers.get(ins[0], [])) == 1)):
            blocked.add(n.output[0])
    outputs = {o.name for o in graph.output}
    out: list[tuple[str, str]] = []
    for t in blocked:
        users = consumers.get(t, [])
        if t in outputs or any(u.output and u.output[0] not in blocked and u.op_type != "Conv" for u in users):
            out.append(("ReorderOutput", t))
    for n in graph.node:
        if n.op_type != "Conv" or not n.input or n.input[0] in blocked:
            continue
        x = shapes.get(n.input[0])
        if x and len(x) == 4 and x[1] is not None and x[1] >= block:
            out.append(("ReorderInput", n.input[0]))
    return sorted(set(out))
