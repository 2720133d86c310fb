"""Dynamic int8 for models whose weights are too large to load whole: one weight in memory at a time.

onnxruntime's ``quantize_dynamic`` loads the whole model into protobuf, runs shape inference on a
written-out copy, reads each weight into numpy and serializes the result again: on a model with
2 GB of weights its peak is several times the weights' bytes (``quant_pre_process``, before it,
is worse still). Yet dynamic quantization of a MatMul/Gemm depends only on that node, its weight
and its input's type (onnxruntime's default ``EnableSubgraph=False`` leaves subgraphs alone, and
``MatMulConstBOnly`` is node-local). So each MatMul/Gemm is cut out as a one-node model holding
just its own weights, quantized by ``quantize_dynamic`` itself with the same settings, and its
nodes and initializers are put back in place; the new weights stream into one external-data file.
Two MatMuls sharing an input get the same DynamicQuantizeLinear (same name): it is kept once,
as onnxruntime's quantizer shares it too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ...cleanup import tmp_prefix
from ...model import iter_graphs

ALIGN = 4096  # offsets a page apart let onnxruntime map weights instead of copying them


def read_external(t: onnx.TensorProto, model_dir: Path) -> np.ndarray:
    """The bytes (uint8) of external initializer ``t``, read from its file in ``model_dir``."""
    info = {e.key: e.value for e in t.external_data}
    return np.fromfile(model_dir / info["location"], dtype=np.uint8, count=int(info["length"]),
                       offset=int(info.get("offset", 0)))


def _loaded(t: onnx.TensorProto, model_dir: Path) -> onnx.TensorProto:
    """A copy of initializer ``t`` with its data inside (external data read from ``model_dir``)."""
    out = onnx.TensorProto()
    out.CopyFrom(t)
    if t.data_location == onnx.TensorProto.EXTERNAL:
        out.raw_data = read_external(t, model_dir).tobytes()
        del out.external_data[:]
        out.data_location = onnx.TensorProto.DEFAULT
    return out


def _typed(name: str, types: dict[str, onnx.ValueInfoProto]) -> onnx.ValueInfoProto | None:
    vi = types.get(name)
    return vi if vi is not None and vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type else None


def _one_node_model(model: onnx.ModelProto, node: onnx.NodeProto, inits: dict[str, onnx.TensorProto],
                    types: dict[str, onnx.ValueInfoProto], model_dir: Path) -> onnx.ModelProto | None:
    """``node`` alone, with its initializers loaded and its other inputs as graph inputs; None if a
    type is unknown (the caller then cannot stream this model)."""
    graph_inputs, weights = [], []
    for name in node.input:
        if not name:
            continue
        if name in inits:
            weights.append(_loaded(inits[name], model_dir))
        elif (vi := _typed(name, types)) is not None:
            graph_inputs.append(vi)
        else:
            return None
    outputs = [_typed(name, types) for name in node.output]
    if any(o is None for o in outputs):
        return None
    graph = helper.make_graph([node], "one_node", graph_inputs, outputs, weights)
    one = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="edgepack")
    one.ir_version = model.ir_version
    return one


class ExternalWeights:
    """A model's external-data file ``<dst>.data``: tensors appended one at a time, each at an offset
    that is a multiple of ``align``."""

    def __init__(self, dst: Path, align: int = ALIGN):
        self.name = dst.name + ".data"
        self._align = align
        self._file = (dst.parent / self.name).open("wb")

    def put(self, t: onnx.TensorProto, raw: bytes) -> None:
        """Append ``raw`` and point ``t`` at it."""
        self._file.write(b"\0" * ((-self._file.tell()) % self._align))
        start = self._file.tell()
        self._file.write(raw)
        t.ClearField("raw_data")
        del t.external_data[:]
        for key, value in (("location", self.name), ("offset", str(start)), ("length", str(len(raw)))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        t.data_location = onnx.TensorProto.EXTERNAL

    def close(self) -> None:
        self._file.close()


def _external(t: onnx.TensorProto, weights: ExternalWeights, model_dir: Path) -> onnx.TensorProto:
    """``t`` stored in ``weights`` (its bytes copied from wherever they are now)."""
    out = _loaded(t, model_dir)
    if out.HasField("raw_data"):
        raw = out.raw_data
    else:  # typed fields (float_data...): numpy gives the raw little-endian bytes
        raw = onnx.numpy_helper.to_array(out).tobytes()
        for field in ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"):
            out.ClearField(field)
    weights.put(out, raw)
    return out


def can_stream(model: onnx.ModelProto) -> bool:
    """Every MatMul/Gemm input and output has a known tensor type (one-node models need them), and all
    stored weights are plain main-graph initializers (the only ones moved to the new data file)."""
    if model.graph.sparse_initializer or any(
            t.data_location == onnx.TensorProto.EXTERNAL for g in list(iter_graphs(model.graph))[1:] for t in g.initializer):
        return False
    inits = {t.name for t in model.graph.initializer}
    types = _types(model)
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            names = [n for n in node.input if n and n not in inits] + list(node.output)
            if any(_typed(n, types) is None for n in names):
                return False
    return True


STASH_ABOVE_BYTES = 1 << 16  # weights stored inside the model larger than this are set aside for inference


def _types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Value types from ONNX shape inference, with the bytes of large in-file weights set aside while it
    runs (it serializes and re-parses the whole model; dims are all it needs from a weight, while
    small tensors such as Reshape shapes keep their values)."""
    stash: dict[int, bytes] = {}
    for i, t in enumerate(model.graph.initializer):
        if len(t.raw_data) > STASH_ABOVE_BYTES:
            stash[i] = t.raw_data
            t.ClearField("raw_data")
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    finally:
        for i, raw in stash.items():
            model.graph.initializer[i].raw_data = raw
    return {vi.name: vi for vi in (*g.input, *g.value_info, *g.output)}


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Names read by any node (subgraphs included: they may read outer initializers) or output by the graph."""
    used = {o.name for o in graph.output}
    for g in iter_graphs(graph):
        for n in g.node:
            used.update(n.input)
    return used


def quantize_dynamic_streamed(src: Path, dst: Path, op_types: list[str], quantize_one,
                              model: onnx.ModelProto | None = None) -> int:
    """Quantize the MatMul/Gemm nodes of ``src`` one at a time with ``quantize_one(in_path, out_path)``
    (``quantize_dynamic`` with the recipe's settings) and write the model to ``dst`` with every
    initializer in ``dst``.data; returns how many nodes went through the quantizer. ``model``: ``src``
    already loaded without its external data (it is modified)."""
    if model is None:
        model = onnx.load_model(str(src), load_external_data=False)
    model_dir = src.parent
    inits = {t.name: t for t in model.graph.initializer}
    types = _types(model)
    weights = ExternalWeights(dst)
    nodes: list[onnx.NodeProto] = []
    produced: set[str] = set()
    kept: dict[str, onnx.TensorProto] = {}
    opsets = {o.domain: o.version for o in model.opset_import}
    count = 0
    try:
        with tempfile.TemporaryDirectory(prefix=tmp_prefix("q")) as tmp:
            for node in model.graph.node:
                one = _one_node_model(model, node, inits, types, model_dir) if node.op_type in op_types else None
                if one is None:
                    nodes.append(node)
                    produced.update(node.output)
                    continue
                count += 1
                onnx.save_model(one, str(Path(tmp) / "in.onnx"))
                del one
                quantize_one(Path(tmp) / "in.onnx", Path(tmp) / "out.onnx")
                q = onnx.load_model(str(Path(tmp) / "out.onnx"))
                for o in q.opset_import:
                    opsets[o.domain] = max(opsets.get(o.domain, 0), o.version)
                for t in q.graph.initializer:
                    if t.name not in kept:
                        kept[t.name] = _external(t, weights, Path(tmp))
                for n in q.graph.node:
                    if n.output and all(o in produced for o in n.output):
                        continue  # a DynamicQuantizeLinear of an input another node already quantized
                    nodes.append(n)
                    produced.update(n.output)
                del q
            del model.graph.node[:]
            model.graph.node.extend(nodes)
            used = _used_names(model.graph)
            for t in model.graph.initializer:  # the float weights the quantizer replaced are dropped, as it does
                if t.name in used and t.name not in kept:
                    kept[t.name] = _external(t, weights, model_dir)
    finally:
        weights.close()
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept.values())
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    dst.write_bytes(model.SerializeToString())
    return count
