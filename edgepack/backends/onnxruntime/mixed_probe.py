"""What mixed precision (:mod:`.mixed`) measures and reads from the graph: the probe score of a
candidate, the output culprits, the segments and their weight bytes.

The score is the signal-to-quantization-noise ratio onnxruntime's ``qdq_loss_debug`` computes
(``compute_signal_to_quantization_noice_ratio``: 20 log10(|x| / |x - y|) over all samples), taken
on the model's outputs against the fp32 model: the worst output wins. An output a Concat makes is
scored per Concat input, so an output that mixes box coordinates and class scores is scored on
the scores too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

SHAPE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
OUTPUT_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
MAX_DB = 999.0  # outputs equal to the fp32 model's
MIX_RATIO = 16.0  # output Concat inputs whose ranges differ this much share one scale badly (<= 16 of 256 levels)
SPAN_SAMPLES = 8  # calibration samples the output Concat inputs' ranges are measured on


def _run(path: Path, feeds: list[dict]) -> list[dict]:
    from ...runtime.ort import run_model

    return run_model(path, feeds, level="disable")  # the graph as stored, as the selector runs candidates


def _is_float(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.kind == "f"


def _shapes(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {v.name: v for v in (*g.value_info, *g.output, *g.input)}


def _dims(info: onnx.ValueInfoProto | None) -> list[int] | None:
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
    return None if any(d is None for d in dims) else dims


def output_paths(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Per graph output: the nodes that make it, nearest first, walking back through shape ops; the
    last is the first node that is not a shape op (the real producer)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    paths = {}
    for out in model.graph.output:
        path, name = [], out.name
        while name in producer:
            node = producer[name]
            path.append(node)
            if node.op_type not in SHAPE_OPS or not node.input:
                break
            name = node.input[0]
        paths[out.name] = path
    return paths


def _pieces(model: onnx.ModelProto, name: str, ref: dict) -> list[tuple[str, int | None, int, int]]:
    """(output, axis, start, stop): a float output whole, or per input of the Concat that makes it."""
    if name not in ref or not _is_float(ref[name]):
        return []
    path = output_paths(model)[name]
    node = path[0] if path else None
    if node is not None and node.op_type == "Concat" and node.output[0] == name:
        shapes = _shapes(model)
        rank = ref[name].ndim
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % max(rank, 1)
        sizes = [_dims(shapes.get(i)) for i in node.input]
        if all(s is not None and len(s) == rank for s in sizes):
            pieces, start = [], 0
            for dims in sizes:
                pieces.append((name, axis, start, start + dims[axis]))
                start += dims[axis]
            return pieces
    return [(name, None, 0, 0)]


def _watched(path: Path, feeds: list[dict], nodes: list[str]) -> list[dict]:
    """Run ``path`` on ``feeds``; the outputs, plus the first input of each node in ``nodes`` as "NODE:in"."""
    if not nodes:
        return _run(path, feeds)
    model = onnx.load_model(str(path), load_external_data=False)
    by_name = {n.name: n for n in model.graph.node}
    tensors = {f"{name}:in": by_name[name].input[0] for name in nodes if name in by_name}
    known = {o.name for o in model.graph.output}
    for tensor in dict.fromkeys(tensors.values()):
        if tensor not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    dst = path.with_name(path.stem + ".watched.onnx")
    onnx.save_model(model, str(dst))  # same folder: relative external-data locations still resolve
    try:
        outs = _run(dst, feeds)
    finally:
        dst.unlink()
    return [{**o, **{key: o[t] for key, t in tensors.items() if t in o}} for o in outs]


@dataclass(frozen=True)
class Probe:
    """Calibration samples, what is watched on them, and the fp32 model's values there.

    Watched: each float output (per Concat input when a Concat makes it) - but where a float
    Softmax/LogSoftmax/Sigmoid culprit makes an output, its input (the logits): the culprit
    computes the output from it exactly, and an argmax flip in 8 samples of probabilities would
    decide the score alone."""

    feeds: tuple[dict, ...]
    watch: tuple[tuple[str, int | None, int, int], ...]  # (output name or "NODE:in", axis, start, stop)
    refs: tuple[dict, ...]

    @property
    def samples(self) -> int:
        return len(self.feeds)

    @property
    def _nodes(self) -> list[str]:
        return [key[:-3] for key, *_ in self.watch if key.endswith(":in")]

    @classmethod
    def make(cls, pre: Path, feeds: list[dict], model: onnx.ModelProto, culprits: dict[str, str]) -> Probe:
        """Watching ``model`` (the fp32 quantizer input at ``pre``, which gives the reference values)."""
        first = _run(pre, feeds[:1])[0]
        watch: list[tuple[str, int | None, int, int]] = []
        logits = []
        for name, path in output_paths(model).items():
            producer = path[-1] if path else None
            if producer is not None and producer.name in culprits and producer.op_type in OUTPUT_ACTIVATIONS:
                logits.append(producer.name)
            else:
                watch += _pieces(model, name, first)
        watch += [(f"{n}:in", None, 0, 0) for n in dict.fromkeys(logits)]
        probe = cls(tuple(feeds), tuple(watch), ())
        return cls(probe.feeds, probe.watch, tuple(_watched(pre, feeds, probe._nodes)))

    def score(self, path: Path) -> float:
        """SQNR (dB) of the worst watched value of ``path`` against the fp32 model's."""
        outs = _watched(path, list(self.feeds), self._nodes)
        worst = MAX_DB
        for name, axis, start, stop in self.watch:
            signal = noise = 0.0
            for ref, out in zip(self.refs, outs):
                if name not in out:  # a watched node this model does not have (a full int8 model's unnamed node)
                    break
                x = np.asarray(ref[name], dtype=np.float64)
                y = np.asarray(out[name], dtype=np.float64)
                if axis is not None:
                    x, y = np.take(x, range(start, stop), axis=axis), np.take(y, range(start, stop), axis=axis)
                if not np.all(np.isfinite(y)):
                    return -MAX_DB
                signal += float(np.sum(x * x))
                noise += float(np.sum((x - y) ** 2))
            if noise > 0:
                worst = min(worst, 10 * math.log10(max(signal, 1e-30) / noise))
        return worst


def concat_spans(pre: Path, model: onnx.ModelProto, feeds: list[dict]) -> dict[str, float]:
    """Span (max(x, 0) - min(x, 0), the range an asymmetric 8-bit scale covers) of the inputs of the
    Concats that make graph outputs, over ``feeds`` (fp32 model)."""
    return _concat_spans_later(pre, model, feeds)()


def _concat_spans_later(pre: Path, model: onnx.ModelProto, feeds: list[dict], first: bool = False):
    """:func:`concat_spans` with the runs queued on the background lane (``first``: ahead of its other
    jobs): returns the function that waits for them and computes the spans."""
    from ...runtime.ort import queue_model_runs

    inits = {t.name for t in model.graph.initializer}
    shapes = _shapes(model)
    wanted = []
    for path in output_paths(model).values():
        if path and path[-1].op_type == "Concat":
            wanted += [i for i in path[-1].input if i not in inits and i in shapes]
    if not wanted:
        return dict
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(shapes[i] for i in dict.fromkeys(wanted) if i not in known)
    dst = pre.with_name(pre.stem + ".spans.onnx")
    onnx.save_model(probe, str(dst))
    try:  # the graph as stored, as the selector runs candidates (see _run); the session holds it once loaded
        runs = queue_model_runs(dst, feeds, level="disable", first=first)
    finally:
        dst.unlink()

    def spans() -> dict[str, float]:
        got: dict[str, float] = {}
        for out in runs.result():
            for name in wanted:
                a = out.get(name)
                if _is_float(a) and a.size:
                    span = max(float(a.max()), 0.0) - min(float(a.min()), 0.0)
                    got[name] = max(got.get(name, 0.0), span)
        return got

    return spans


def output_culprits(model: onnx.ModelProto, spans: dict[str, float], ratio: float = MIX_RATIO, *,
                    activations: bool = True) -> dict[str, str]:
    """Nodes kept float whatever the sensitivity says: output Concats that mix ranges ``ratio``-fold
    or more, output Softmax/LogSoftmax/Sigmoid (with ``activations``), and the shape ops between them
    and the output."""
    culprits: dict[str, str] = {}
    for name, path in output_paths(model).items():
        if not path:
            continue
        node = path[-1]
        why = None
        if node.op_type == "Concat":
            sizes = [spans[i] for i in node.input if i in spans]
            if len(sizes) >= 2 and min(sizes) > 0 and max(sizes) / min(sizes) >= ratio:
                why = (f"Concat making output '{name}' from inputs spanning {min(sizes):.3g} to {max(sizes):.3g} "
                       f"({max(sizes) / min(sizes):.0f}x apart): one 8-bit scale would leave the smaller "
                       f"{255 * min(sizes) / max(sizes):.0f} levels")
        elif activations and node.op_type in OUTPUT_ACTIVATIONS:
            why = (f"{node.op_type} making output '{name}': in 8 bits its values move in 1/255 steps, "
                   "which ties the argmax of near scores (top-1, CTC decoding)")
        if why:
            for n in path:
                culprits[n.name] = why if n is node else f"shape op between {node.op_type} '{node.name}' and output '{name}'"
    return culprits


def range_mixing_outputs(pre: Path, calibration: list[dict]) -> tuple[Path, dict[str, str]]:
    """The output Concats of ``pre`` that mix ranges MIX_RATIO-fold or more (with the shape ops after
    them), measured on up to SPAN_SAMPLES calibration samples, and the model to exclude them from
    (every node named). Static int8 keeps them float from the first candidate on: one 8-bit scale
    over box coordinates 0..320 and class scores 0..1 leaves the scores one or two levels."""
    return range_mixing_later(pre, calibration)()


def range_mixing_later(pre: Path, calibration: list[dict]):
    """:func:`range_mixing_outputs` with its runs on the background lane, ahead of its other jobs (the
    calibration's Python goes on meanwhile): returns the function that finishes it."""
    model = onnx.load_model(str(pre), load_external_data=False)
    if not any(path and path[-1].op_type == "Concat" for path in output_paths(model).values()):
        return lambda: (pre, {})
    feeds = calibration[::max(1, len(calibration) // SPAN_SAMPLES)][:SPAN_SAMPLES]
    spans = _concat_spans_later(pre, model, feeds, first=True)

    def finish() -> tuple[Path, dict[str, str]]:
        culprits = output_culprits(model, spans(), activations=False)
        if not culprits:
            return pre, {}
        named = named_nodes(pre, pre.with_name(pre.stem + ".named.onnx"))
        if named != pre:
            renamed = onnx.load_model(str(named), load_external_data=False)
            culprits = output_culprits(renamed, concat_spans(named, renamed, feeds), activations=False)
        return named, culprits

    return finish


def named_nodes(pre: Path, dst: Path) -> Path:
    """``pre`` with every node uniquely named (``nodes_to_exclude`` goes by name); ``pre`` if it already is."""
    model = onnx.load_model(str(pre), load_external_data=False)
    seen: set[str] = set()
    changed = False
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = f"{node.op_type}_mixed_{i}"
            name, k = base, 0
            while name in seen:
                k += 1
                name = f"{base}_{k}"
            node.name, changed = name, True
        seen.add(node.name)
    if not changed:
        return pre
    onnx.save_model(model, str(dst))  # same folder: relative external-data locations still resolve
    return dst


def segment_nodes(model: onnx.ModelProto, skip: set[str], count: int) -> list[list[str]]:
    """The node names in graph (topological) order, without ``skip``, in ``count`` runs of near-equal length."""
    names = [n.name for n in model.graph.node if n.name not in skip]
    return [list(part) for part in np.array_split(np.array(names, dtype=object), min(count, len(names))) if len(part)]


def weight_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """Per node, the float32 bytes of the weights it is the first to read (what int8 makes 4x smaller)."""
    sizes = {t.name: 4 * int(np.prod(t.dims)) for t in model.graph.initializer
             if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) > 1}
    out: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in sizes:
                out[node.name] = out.get(node.name, 0) + sizes.pop(name)
    return out


def merge_ranges(dst: Path, caches: list[Path], model: onnx.ModelProto, owners: list[tuple[tuple[str, ...], int]]) -> Path:
    """One onnxruntime calibration cache from several: each tensor takes its range from the cache of the
    segment whose node makes it (``owners``: (node names, cache index)); the rest from the first cache.
    Written as a MinMax cache: quantize_static only reads each tensor's lowest/highest from it."""
    import json

    tables = [json.loads(c.read_text(encoding="utf-8")) for c in caches]
    merged = tables[0]
    owner = {n: i for nodes, i in owners for n in nodes}
    for node in model.graph.node:
        i = owner.get(node.name, 0)
        for name in node.output:
            if i and name in tables[i]["data"]:
                entry = tables[i]["data"][name]
                merged["data"][name] = {k: v for k, v in entry.items() if k in ("lowest", "highest", "CLS")}
    dst.write_text(json.dumps(merged, sort_keys=True), encoding="utf-8")
    return dst
