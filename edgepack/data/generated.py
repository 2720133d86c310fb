"""Generated inputs, for models built without calibration data: deterministic random samples, with
integer inputs kept in the value ranges the graph allows.

An integer input that (through Cast/Unsqueeze/Reshape/...) indexes a Gather over a table of V rows
must stay in [0, V): token ids, token-type ids, position ids. An input whose name says it is a
mask is all ones. Anything else keeps the generic range.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

from ..errors import ShapeError, StageError
from ..model import TensorSpec, iter_graphs
from .calibration import dtype_kind, spec_dtype

INT_HIGH = 10  # generated integer inputs lie in [0, INT_HIGH): safe as indices, lengths and ids

_DEQUANT = {"Cast", "Mul", "DequantizeLinear", "Identity", "Sub"}
_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"}


def generate_inputs(model_inputs: Sequence[TensorSpec], n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` deterministic random samples: floats ~ N(0, 1), ints in [0, 10), bools 50/50."""
    for spec in model_inputs:
        if not spec.is_fixed:
            dims = "x".join(str(d) if isinstance(d, int) else "?" for d in spec.shape or ())
            msg = f"input '{spec.name}' has shape [{dims or 'unknown'}]; random inputs need every dimension fixed"
            raise ShapeError(msg)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        sample = {}
        for spec in model_inputs:
            dtype, shape = spec_dtype(spec), tuple(spec.shape)  # type: ignore[arg-type]
            kind = dtype_kind(dtype)
            # np.asarray: for a scalar input (shape ()) numpy's generators return numpy scalars, not 0-d arrays,
            # and onnxruntime refuses a numpy bool scalar outright
            if kind == "float":
                sample[spec.name] = np.asarray(rng.standard_normal(shape), dtype=dtype)
            elif kind == "int":
                sample[spec.name] = np.asarray(rng.integers(0, INT_HIGH, size=shape), dtype=dtype)
            elif kind == "bool":
                sample[spec.name] = np.asarray(rng.random(shape) < 0.5, dtype=np.bool_)
            else:
                msg = f"input '{spec.name}' has type '{spec.dtype}'; random inputs cover float, int and bool only"
                raise StageError(msg)
        samples.append(sample)
    return samples


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
