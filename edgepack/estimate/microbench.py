"""Micro-benchmark graphs of ``edgepack calibrate``: single ops (or short chains of one op) built with
onnx.helper, each with the work the cost model counts for it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "bench", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgepack-calibrate")
    m.ir_version = 8
    return m


def _vi(name, dims, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, dims)


def gemm_model(n: int, *, int8: bool = False) -> tuple[onnx.ModelProto, float]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, n)).astype(np.float32)
    flops = 2.0 * n * n * n
    if not int8:
        return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [n, n])], [_vi("y", [n, n])],
                      [numpy_helper.from_array(w, "w")]), flops
    return _qdq(["MatMul"], [n, n], [n, n], w, {}), flops


def conv_model(c: int, hw: int, *, depthwise: bool = False, int8: bool = False,
               stride: int = 1) -> tuple[onnx.ModelProto, float]:
    rng = np.random.default_rng(1)
    cin_g = 1 if depthwise else c
    w = rng.standard_normal((c, cin_g, 3, 3)).astype(np.float32) * 0.1
    attrs = {"pads": [1, 1, 1, 1], "group": c if depthwise else 1, "strides": [stride, stride]}
    out = (hw - 1) // stride + 1
    flops = 2.0 * c * out * out * cin_g * 9
    if int8:
        return _qdq(["Conv"], [1, c, hw, hw], [1, c, out, out], w, attrs), flops
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], [_vi("x", [1, c, hw, hw])],
                  [_vi("y", [1, c, out, out])], [numpy_helper.from_array(w, "w")]), flops


def depthwise_model(c: int, h: int, w: int, k: int, stride: int = 1) -> onnx.ModelProto:
    """One depthwise k x k Conv (same padding) on [1, c, h, w]."""
    rng = np.random.default_rng(4)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32) * 0.1
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=c, pads=[k // 2] * 4, strides=[stride, stride],
                            kernel_shape=[k, k])
    return _model([node], [_vi("x", [1, c, h, w])], [_vi("y", [1, c, oh, ow])], [numpy_helper.from_array(wt, "w")])


# (channels, height, width, kernel, stride): square maps from few channels at 112 px to many at 7 px,
# and wide strips (text-line shapes), with 3x3 and 5x5 kernels
DEPTHWISE_GRID = ((16, 112, 112, 3, 1), (64, 56, 56, 3, 2), (128, 28, 28, 3, 1), (512, 7, 7, 3, 1),
                  (256, 14, 14, 5, 1), (64, 56, 56, 5, 1), (64, 4, 128, 5, 1), (128, 8, 64, 3, 1),
                  (32, 16, 256, 3, 2))


def fit_depthwise(samples: list[tuple[int, int, int, int, int, float]]) -> tuple[float, float, float]:
    """Fit t = C k^2 (a Ho Win + b Ho + c) to (channels, height, width, kernel, stride, us) samples.

    Returns (a, b, c) in microseconds: per multiply-accumulate (width stride is not skipped by the
    kernels, height stride is), per output row and per channel, each per kernel tap. Least squares
    on relative error, so small and large kernels weigh the same; negative terms are dropped.
    """
    x = np.array([[c * k * k * ((h - 1) // s + 1) * w, c * k * k * ((h - 1) // s + 1), c * k * k]
                  for c, h, w, k, s, _ in samples], float)
    y = np.array([max(us, 1e-3) for *_, us in samples])
    keep = [0, 1, 2]
    while True:
        coef, *_ = np.linalg.lstsq(x[:, keep] / y[:, None], np.ones(len(y)), rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            break
        keep.pop(int(np.argmin(coef[1:])) + 1 if (coef[1:] < 0).any() else 0)
    full = [0.0, 0.0, 0.0]
    for i, v in zip(keep, coef):
        full[i] = max(float(v), 0.0)
    return full[0], full[1], full[2]


def unary_model(op: str, n: int, **attrs) -> onnx.ModelProto:
    """y = op(x) over n floats (Div by a constant for 'Div')."""
    if op == "Div":
        return _model([helper.make_node("Div", ["x", "d"], ["y"])], [_vi("x", [n])], [_vi("y", [n])],
                      [numpy_helper.from_array(np.array([3.0], np.float32), "d")])
    if op == "Where":  # a mask broadcast over heads, as attention masks are: [1, n/64, 64] from [1, 1, 64]
        m = numpy_helper.from_array(np.arange(64).reshape(1, 1, 64) % 3 == 0, "m")
        return _model([helper.make_node("Reshape", ["x", "s"], ["x3"]), helper.make_node("Where", ["m", "v", "x3"], ["y"])],
                      [_vi("x", [n])], [_vi("y", [1, n // 64, 64])],
                      [m, numpy_helper.from_array(np.array(-1e4, np.float32), "v"),
                       numpy_helper.from_array(np.array([1, n // 64, 64], np.int64), "s")])
    return _model([helper.make_node(op, ["x"], ["y"], **attrs)], [_vi("x", [n])], [_vi("y", [n])])


# elementwise ops whose arithmetic, not memory traffic, sets their time (priced per element)
ELEMENT_OPS = ("Relu", "HardSigmoid", "HardSwish", "Div", "Reciprocal", "Sigmoid", "Tanh", "Exp", "Log",
               "Softplus", "Erf", "Sqrt", "Where")


def resize_model(n: int, mode: str) -> onnx.ModelProto:
    """2x Resize of [1, n/256, 16, 16] to [1, n/256, 32, 32] (``mode`` nearest or linear)."""
    c = max(n // 256, 1)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
    return _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode=mode)], [_vi("x", [1, c, 16, 16])],
                  [_vi("y", [1, c, 32, 32])], [scales])


def layernorm_model(rows: int, hidden: int, *, skip: bool = False) -> onnx.ModelProto:
    """LayerNormalization over the last axis of [1, rows, hidden]; with ``skip``, of (x + r): the pair
    onnxruntime's extended level fuses into one SkipLayerNormalization kernel."""
    dims = [1, rows, hidden]
    inits = [numpy_helper.from_array(np.ones(hidden, np.float32), "g"),
             numpy_helper.from_array(np.zeros(hidden, np.float32), "b")]
    nodes = [helper.make_node("Add", ["x", "r"], ["s"])] if skip else []
    nodes.append(helper.make_node("LayerNormalization", ["s" if skip else "x", "g", "b"], ["y"], axis=-1, epsilon=1e-5))
    inputs = [_vi("x", dims)] + ([_vi("r", dims)] if skip else [])
    return _model(nodes, inputs, [_vi("y", dims)], inits)


def _qdq(op, in_dims, out_dims, w: np.ndarray, attrs: dict) -> onnx.ModelProto:
    """x -Q-DQ-> op(DQ(w int8 per-tensor)) -Q-DQ-> y: the QDQ form ORT fuses into an int8 kernel."""
    scale_w = float(np.abs(w).max() / 127.0)
    wq = np.clip(np.round(w / scale_w), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.array(scale_w, np.float32), "sw"),
        numpy_helper.from_array(np.array(0, np.int8), "zw"),
        numpy_helper.from_array(np.array(0.05, np.float32), "sx"), numpy_helper.from_array(np.array(128, np.uint8), "zx"),
        numpy_helper.from_array(np.array(0.5, np.float32), "sy"), numpy_helper.from_array(np.array(128, np.uint8), "zy"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"]),
        helper.make_node(op[0], ["xd", "wd"], ["yf"], **attrs),
        helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"]),
    ]
    return _model(nodes, [_vi("x", in_dims)], [_vi("y", out_dims)], inits)


def lstm_model(seq: int, hidden: int) -> tuple[onnx.ModelProto, float]:
    """One forward LSTM over ``seq`` steps (input size = hidden); FLOPs as edgepack.flops counts them."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((1, 4 * hidden, hidden)) * 0.1).astype(np.float32)
    r = (rng.standard_normal((1, 4 * hidden, hidden)) * 0.1).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=hidden)
    flops = 2.0 * seq * 4 * hidden * (hidden + hidden)
    return _model([node], [_vi("x", [seq, 1, hidden])], [_vi("y", [seq, 1, 1, hidden])],
                  [numpy_helper.from_array(w, "w"), numpy_helper.from_array(r, "r")]), flops


def add_model(n: int) -> tuple[onnx.ModelProto, float]:
    """y = a + b over n floats: 3 x 4n bytes moved."""
    return _model([helper.make_node("Add", ["a", "b"], ["y"])], [_vi("a", [n]), _vi("b", [n])], [_vi("y", [n])]), 12.0 * n


def chain_model(k: int) -> onnx.ModelProto:
    """k small nodes in a row on a [4, 8] tensor, cycling Add, Mul, Sigmoid, Transpose, Reshape, Slice
    (the mix of small ops real graphs have): their time is the per-node dispatch overhead."""
    inits = [numpy_helper.from_array(np.ones((4, 8), np.float32), "one"),
             numpy_helper.from_array(np.array([4, 8], np.int64), "shape"),
             numpy_helper.from_array(np.array([0, 0], np.int64), "starts"),
             numpy_helper.from_array(np.array([4, 8], np.int64), "ends")]
    nodes, cur, dims = [], "x", [4, 8]
    for i in range(k):
        dst = f"t{i + 1}" if i < k - 1 else "y"
        kind = i % 6 if i < k - 1 else 0
        if kind == 3 and dims == [4, 8]:
            nodes.append(helper.make_node("Transpose", [cur], [dst], perm=[1, 0]))
            dims = [8, 4]
        elif kind == 4 or dims != [4, 8]:
            nodes.append(helper.make_node("Reshape", [cur, "shape"], [dst]))
            dims = [4, 8]
        else:
            op = {0: "Add", 1: "Mul", 2: "Sigmoid", 3: "Add", 5: "Slice"}[kind]
            ins = {"Add": [cur, "one"], "Mul": [cur, "one"], "Sigmoid": [cur], "Slice": [cur, "starts", "ends"]}[op]
            nodes.append(helper.make_node(op, ins, [dst]))
        cur = dst
    return _model(nodes, [_vi("x", [4, 8])], [_vi("y", [4, 8])], inits)


def if_chain_model(k: int) -> onnx.ModelProto:
    """k If nodes in a row on a bool input, each branch one tiny Add: their time beyond dispatch is the
    cost of running a control-flow subgraph."""
    one = numpy_helper.from_array(np.ones(8, np.float32), "one")
    nodes: list = []
    for i in range(k):
        src, dst = ("x" if i == 0 else f"t{i}"), (f"t{i + 1}" if i < k - 1 else "y")
        branch = lambda tag: helper.make_graph(  # noqa: E731
            [helper.make_node("Add", [src, "one"], [f"{tag}{i}"])], f"{tag}{i}", [], [_vi(f"{tag}{i}", [8])])
        nodes.append(helper.make_node("If", ["c"], [dst], then_branch=branch("a"), else_branch=branch("b")))
    return _model(nodes, [_vi("x", [8]), _vi("c", [], TensorProto.BOOL)], [_vi("y", [8])], [one])


def conv_chain_model(c: int, hw: int, k: int = 3, stride: int = 1, groups: int = 1,
                     depth: int = 3) -> tuple[onnx.ModelProto, float]:
    """``depth`` identical k x k Convs in a row (the first with ``stride``, channels kept): in a chain,
    layout changes onnxruntime inserts around convs (x86 NCHWc reorders) are paid once, as in a model.
    Returns the model and the FLOPs of its convs."""
    rng = np.random.default_rng(5)
    inits, nodes, cur, size, flops = [], [], "x", hw, 0.0
    for i in range(depth):  # a weight per conv: onnxruntime's NCHWc rewrite skips convs sharing one
        w = rng.standard_normal((c, c // groups, k, k)).astype(np.float32) * 0.05
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        s = stride if i == 0 else 1
        out = (size - 1) // s + 1
        dst = "y" if i == depth - 1 else f"t{i}"
        nodes.append(helper.make_node("Conv", [cur, f"w{i}"], [dst], pads=[k // 2] * 4, strides=[s, s], group=groups,
                                      kernel_shape=[k, k]))
        flops += 2.0 * c * out * out * (c // groups) * k * k
        cur, size = dst, out
    return _model(nodes, [_vi("x", [1, c, hw, hw])], [_vi("y", [1, c, size, size])], inits), flops
