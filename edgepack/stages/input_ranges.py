"""Valid value ranges for integer inputs, read from the graph, so generated inputs are meaningful.

An integer input that (through Cast/Unsqueeze/Reshape/...) indexes a Gather over a table of V rows
must stay in [0, V): token ids, token-type ids, position ids. An input whose name says it is a
mask is all ones. Anything else keeps the generic range.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..model import iter_graphs

_DEQUANT = {"Cast", "Mul", "DequantizeLinear", "Identity", "Sub"}
_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"}


def int_input_ranges(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """{input name: (low, high exclusive)} for integer inputs whose valid range the graph tells."""
    shapes = {t.name: list(t.dims) for g in iter_graphs(model.graph) for t in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    producer: dict[str, onnx.NodeProto] = {}
    for g in iter_graphs(model.graph):
        for node in g.node:
            for i in node.input:
                consumers.setdefault(i, []).append(node)
            for o in node.output:
                producer[o] = node

    def table_dims(name: str, depth: int = 0) -> list[int] | None:
        """Dims of a Gather table: an initializer, or one dequantized by Cast/Mul/DequantizeLinear."""
        if name in shapes:
            return shapes[name]
        node = producer.get(name)
        if node is None or depth > 4 or node.op_type not in _DEQUANT:
            return None
        return table_dims(node.input[0], depth + 1)

    ranges: dict[str, tuple[int, int]] = {}
    for inp in model.graph.input:
        tt = inp.type.tensor_type
        if tt.elem_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            continue
        if "mask" in inp.name.lower():
            ranges[inp.name] = (1, 2)
            continue
        highs = []
        frontier, seen = [inp.name], set()
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for node in consumers.get(name, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name:
                    table = table_dims(node.input[0])
                    axis = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
                    if table and -len(table) <= axis < len(table):
                        highs.append(int(table[axis]))
                elif node.op_type in _PASS_THROUGH:
                    frontier.extend(node.output)
        if highs:
            ranges[inp.name] = (0, max(1, min(highs)))
    return ranges


def apply_int_ranges(samples: list[dict[str, np.ndarray]], ranges: dict[str, tuple[int, int]], seed: int) -> list[dict]:
    """The samples with integer inputs redrawn inside their valid ranges (deterministic)."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for sample in samples:
        new = dict(sample)
        for name, (low, high) in ranges.items():
            if name in new:
                arr = new[name]
                new[name] = rng.integers(low, high, size=arr.shape).astype(arr.dtype)
        out.append(new)
    return out
