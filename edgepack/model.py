"""Safe model intake.

``load_model(path)`` parses the ONNX protobuf *without* its external data, checks
every external-data reference stays inside the model's folder (CVE-2024-27318 and
follow-ups: no ``..``, no absolute paths, no symlinks that escape), checks sizes,
opsets and domains, and runs the onnx checker. Weights are never read here: stages
hand the model *path* to onnxruntime/openvino, so a large model's tensors are loaded
once, by the runtime that needs them.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import onnx
from onnx import TensorProto

from .errors import ExternalDataError, ModelError, first_line

# Domains edgepack can hand to onnxruntime/openvino. Anything else is a custom op library we cannot ship.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
MIN_OPSET = 7
CONTROL_FLOW_OPS = ("If", "Loop", "Scan")
_FOUR_BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
MAX_ELEMENTS = 2**36  # no single tensor of ours has more elements (256 GiB of fp32)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy-style name: float32, int64, ...
    shape: tuple[int | str | None, ...] | None  # int = fixed, str = symbolic, None = unknown dim

    @property
    def dynamic_dims(self) -> list[int]:
        if self.shape is None:
            return []
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]

    @property
    def is_fixed(self) -> bool:
        return self.shape is not None and not self.dynamic_dims

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape) if self.shape is not None else None}


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, computed from its graph alone (no weights read)."""

    name: str
    sha256: str
    file_bytes: int
    external_data_bytes: int
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    nodes: int  # main graph
    nodes_total: int  # including subgraphs of If/Loop/Scan
    op_histogram: dict[str, int]
    control_flow: dict[str, int]
    params: int
    weight_bytes_by_dtype: dict[str, int] = field(default_factory=dict)

    @property
    def weight_bytes(self) -> int:
        return sum(self.weight_bytes_by_dtype.values())

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "file_bytes": self.file_bytes,
            "external_data_bytes": self.external_data_bytes,
            "ir_version": self.ir_version,
            "producer": self.producer,
            "opsets": dict(sorted(self.opsets.items())),
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "nodes": self.nodes,
            "nodes_total": self.nodes_total,
            "op_histogram": dict(sorted(self.op_histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
            "control_flow": self.control_flow,
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "weight_bytes_by_dtype": dict(sorted(self.weight_bytes_by_dtype.items())),
        }


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    proto: onnx.ModelProto  # external data NOT loaded
    info: ModelInfo


# ------------------------------------------------------------------------------------------ helpers


def dtype_name(elem_type: int) -> str:
    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # noqa: BLE001 - unknown/undefined enum values
        return f"type{elem_type}"


def dtype_size(elem_type: int) -> float:
    """Bytes per element (0.5 for 4-bit types)."""
    if elem_type in _FOUR_BIT:
        return 0.5
    try:
        return float(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except Exception:  # noqa: BLE001
        return 0.0


def tensor_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    t = vi.type
    if not t.HasField("tensor_type"):
        kind = t.WhichOneof("value") or "unknown"
        return TensorSpec(vi.name, kind, None)
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return TensorSpec(vi.name, dtype_name(tt.elem_type), None)
    dims: list[int | str | None] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorSpec(vi.name, dtype_name(tt.elem_type), tuple(dims))


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph below it (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graphs(g)


def iter_tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, TensorProto]]:
    """(where, tensor) for every stored tensor: initializers, sparse values, Constant attributes."""
    for g in iter_graphs(graph):
        for t in g.initializer:
            yield f"initializer '{t.name}'", t
        for st in g.sparse_initializer:
            yield f"sparse initializer '{st.values.name}'", st.values
            yield f"sparse initializer '{st.values.name}' indices", st.indices
        for node in g.node:
            for attr in node.attribute:
                where = f"node '{node.name or node.op_type}' attribute '{attr.name}'"
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield where, attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    for t in attr.tensors:
                        yield where, t
                elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                    yield where, attr.sparse_tensor.values


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _numel(dims) -> int:
    n = 1
    for d in dims:
        if d < 0:
            return -1
        n *= d
    return n


# ------------------------------------------------------------------------------------------ checks


def _parse(path: Path) -> onnx.ModelProto:
    if not path.exists():
        msg = f"model file not found: {path}"
        raise ModelError(msg)
    if not path.is_file():
        msg = f"not a file: {path}"
        raise ModelError(msg)
    size = path.stat().st_size
    if size == 0:
        msg = f"{path.name}: empty file (0 bytes), not an ONNX model"
        raise ModelError(msg)
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError, RuntimeError, ValueError...
        msg = f"{path.name}: not a valid ONNX model (protobuf parse failed: the file is truncated, corrupted or not ONNX)"
        raise ModelError(msg) from exc
    if model.ir_version < 3 or not model.HasField("graph"):
        msg = f"{path.name}: not an ONNX model (no graph or no IR version; is it another protobuf file?)"
        raise ModelError(msg)
    if len(model.graph.node) == 0:
        msg = f"{path.name}: the graph has no nodes"
        raise ModelError(msg)
    return model


def _check_opsets_and_domains(model: onnx.ModelProto, name: str) -> dict[str, int]:
    opsets: dict[str, int] = {}
    for imp in model.opset_import:
        opsets[imp.domain or "ai.onnx"] = imp.version
    default = opsets.get("ai.onnx")
    if default is None:
        # a pure ai.onnx.ml model (e.g. an old scikit-learn export) needs no default-domain opset
        if any(n.domain in ("", "ai.onnx") for g in iter_graphs(model.graph) for n in g.node):
            msg = f"{name}: no opset import for the default ONNX domain"
            raise ModelError(msg)
        default = MIN_OPSET
    newest = onnx.defs.onnx_opset_version()
    if default < MIN_OPSET:
        msg = (
            f"{name}: opset {default} is too old (edgepack supports {MIN_OPSET}..{newest}); "
            "upgrade it with onnx.version_converter.convert_version"
        )
        raise ModelError(msg)
    if default > newest:
        msg = f"{name}: opset {default} is newer than this onnx release supports ({MIN_OPSET}..{newest}); upgrade onnx/onnxruntime"
        raise ModelError(msg)
    for g in iter_graphs(model.graph):
        for node in g.node:
            if node.domain not in KNOWN_DOMAINS:
                known = ", ".join(d or "ai.onnx" for d in KNOWN_DOMAINS[1:])
                msg = (
                    f"{name}: node '{node.name or node.op_type}' uses unknown operator domain "
                    f"'{node.domain}' (op {node.op_type}); supported domains: ai.onnx, {known}"
                )
                raise ModelError(msg)
    return opsets


def _inside(base: Path, candidate: Path) -> bool:
    try:
        candidate.relative_to(base)
    except ValueError:
        return False
    return True


def _check_external(where: str, t: TensorProto, model_dir: Path, name: str) -> int:
    info = {e.key: e.value for e in t.external_data}
    location = info.get("location", "")
    if not location:
        msg = f"{name}: {where} declares external data without a location"
        raise ExternalDataError(msg)
    rel = Path(location)
    if rel.is_absolute() or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        msg = f"{name}: {where} points to an absolute external-data path '{location}'; external data must stay in the model's folder"
        raise ExternalDataError(msg)
    if ".." in Path(location.replace("\\", "/")).parts:
        msg = f"{name}: {where} external-data location '{location}' leaves the model's folder ('..' is refused)"
        raise ExternalDataError(msg)
    base = model_dir.resolve()
    target = (model_dir / rel).resolve()
    if not _inside(base, target):
        msg = f"{name}: {where} external-data location '{location}' resolves outside the model's folder (symlink?)"
        raise ExternalDataError(msg)
    if not target.is_file():
        msg = f"{name}: {where} external-data file '{location}' is missing"
        raise ExternalDataError(msg)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError as exc:
        msg = f"{name}: {where} has a non-numeric external-data offset/length"
        raise ExternalDataError(msg) from exc
    file_size = target.stat().st_size
    expected = _numel(t.dims) * dtype_size(t.data_type)
    if length is None:
        length = file_size - offset
    if offset < 0 or length < 0 or offset + length > file_size:
        msg = f"{name}: {where} needs bytes {offset}..{offset + length} of '{location}', but the file has {file_size}"
        raise ExternalDataError(msg)
    if expected >= 0 and math.ceil(expected) != length:
        msg = f"{name}: {where} has shape {list(t.dims)} ({math.ceil(expected)} bytes) but {length} bytes of external data"
        raise ExternalDataError(msg)
    return length


def _check_embedded(where: str, t: TensorProto, name: str) -> None:
    numel = _numel(t.dims)
    if numel < 0 or numel > MAX_ELEMENTS:
        msg = f"{name}: {where} declares an absurd shape {list(t.dims)}"
        raise ModelError(msg)
    if t.HasField("raw_data"):
        expected = math.ceil(numel * dtype_size(t.data_type))
        if len(t.raw_data) != expected and t.data_type != TensorProto.STRING:
            msg = f"{name}: {where} has shape {list(t.dims)} ({expected} bytes) but {len(t.raw_data)} bytes of data"
            raise ModelError(msg)


def _check_tensors(model: onnx.ModelProto, model_dir: Path, name: str) -> tuple[int, int, dict[str, int]]:
    """Return (params, external bytes, weight bytes by dtype) after checking every stored tensor."""
    external = 0
    params = 0
    by_dtype: Counter[str] = Counter()
    for where, t in iter_tensors(model.graph):
        if t.data_location == TensorProto.EXTERNAL:
            external += _check_external(where, t, model_dir, name)
        else:
            _check_embedded(where, t, name)
        n = max(_numel(t.dims), 0)
        params += n
        by_dtype[dtype_name(t.data_type)] += math.ceil(n * dtype_size(t.data_type))
    return params, external, dict(by_dtype)


def _run_checker(model: onnx.ModelProto, path: Path, has_external: bool) -> None:
    # With external data the checker must see the file's folder to find it; the proto without
    # weights is small, so checking by path costs one cheap re-parse and no tensor loads.
    name = path.name
    try:
        onnx.checker.check_model(str(path) if has_external else model)
    except onnx.checker.ValidationError as exc:
        first = first_line(exc, "invalid model")
        msg = f"{name}: invalid ONNX graph: {first}"
        raise ModelError(msg) from exc
    except Exception as exc:  # noqa: BLE001 - the C++ checker raises assorted types
        first = first_line(exc)
        msg = f"{name}: invalid ONNX model: {first}"
        raise ModelError(msg) from exc


def _check_graph_structure(graph: onnx.GraphProto, name: str) -> None:
    """Duplicate outputs and undefined inputs in the main graph (the checker misses some forms)."""
    produced: set[str] = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for st in graph.sparse_initializer:
        produced.add(st.values.name)
    for node in graph.node:
        for out in node.output:
            if out and out in produced:
                msg = f"{name}: tensor '{out}' is produced more than once (node '{node.name or node.op_type}')"
                raise ModelError(msg)
            if out:
                produced.add(out)
    outs = [o.name for o in graph.output]
    dup = sorted({o for o in outs if outs.count(o) > 1})
    if dup:
        msg = f"{name}: graph output '{dup[0]}' is declared more than once"
        raise ModelError(msg)
    for o in outs:
        if o not in produced:
            msg = f"{name}: graph output '{o}' is not produced by any node"
            raise ModelError(msg)


# ------------------------------------------------------------------------------------------ public


def load_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Parse and check a model; raise ModelError (one line) on anything unusable."""
    p = Path(path)
    model = _parse(p)
    name = p.name
    opsets = _check_opsets_and_domains(model, name)
    params, external, by_dtype = _check_tensors(model, p.parent, name)
    _check_graph_structure(model.graph, name)
    _run_checker(model, p, external > 0)
    hist: Counter[str] = Counter()
    control: Counter[str] = Counter()
    total = 0
    for g in iter_graphs(model.graph):
        for node in g.node:
            total += 1
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
            hist[key] += 1
            if node.op_type in CONTROL_FLOW_OPS and node.domain in ("", "ai.onnx"):
                control[node.op_type] += 1
    init_names = {t.name for t in model.graph.initializer}
    info = ModelInfo(
        name=name,
        sha256=sha256_file(p),
        file_bytes=p.stat().st_size,
        external_data_bytes=external,
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        opsets=opsets,
        inputs=tuple(tensor_spec(i) for i in model.graph.input if i.name not in init_names),
        outputs=tuple(tensor_spec(o) for o in model.graph.output),
        nodes=len(model.graph.node),
        nodes_total=total,
        op_histogram=dict(hist),
        control_flow=dict(control),
        params=params,
        weight_bytes_by_dtype=by_dtype,
    )
    return LoadedModel(path=p, proto=model, info=info)
