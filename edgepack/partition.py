"""Which nodes a target's accelerator can take, in how many partitions, and why not the rest.

Data first: the result is a plain ``Coverage`` structure used by ``inspect``, by the prepare
stage (to pick rewrites) and by reports. For NNAPI and CoreML the op tables and the partitioning
algorithm are onnxruntime's own (``onnxruntime.tools.mobile_helpers``), so counts agree with
``python -m onnxruntime.tools.check_onnx_model_mobile_usability``; a CPU target runs the whole graph.
Engines that answer for themselves (OpenVINO's ``Core.query_model``) do so in their backend and
return the same ``Coverage``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from .model import iter_graphs
from .transforms import DECOMPOSITIONS

if TYPE_CHECKING:
    from .records import ShippedCoverage
    from .target import TargetProfile

SHAPE_SUBGRAPH_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "ConstantOfShape", "Range", "Cast",
                      "Slice", "Equal", "Where", "Expand", "Size", "ReduceProd", "Floor", "Ceil"}
_CORE_ML_TABLES = {"coreml-mlprogram": "coreml_supported_mlprogram_ops.md",
                   "coreml-neuralnetwork": "coreml_supported_neuralnetwork_ops.md"}


@dataclass(frozen=True)
class UnsupportedGroup:
    reason: str  # operator | dynamic-shape | rank
    nodes: int
    ops: dict[str, int]
    remedy: str

    def to_json(self) -> dict:
        return {"reason": self.reason, "nodes": self.nodes, "ops": dict(sorted(self.ops.items())), "remedy": self.remedy}


@dataclass(frozen=True)
class Coverage:
    target: str
    provider: str
    scenario: str  # "as-is", "fixed-shapes upper bound", "after prepare"
    available: bool
    nodes_total: int = 0
    nodes_supported: int = 0
    partitions: int = 0
    partition_sizes: tuple[int, ...] = ()
    unsupported: tuple[UnsupportedGroup, ...] = ()
    caveats: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fraction(self) -> float:
        return self.nodes_supported / self.nodes_total if self.nodes_total else 0.0

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario,
            "provider": self.provider,
            "available": self.available,
            "nodes_total": self.nodes_total,
            "nodes_supported": self.nodes_supported,
            "fraction": round(self.fraction, 4),
            "partitions": self.partitions,
            "partition_sizes": list(self.partition_sizes),
            "unsupported": [u.to_json() for u in self.unsupported],
            "caveats": list(self.caveats),
            "notes": list(self.notes),
        }


def table_ops(profile: TargetProfile) -> set[str] | None:
    """The op names (default domain) the target's accelerator table lists; None for CPU/OpenVINO."""
    if profile.op_table not in ("nnapi", *_CORE_ML_TABLES):
        return None
    checker = _checker(profile)
    return {k.split(":", 1)[1] for k in checker._ops if k.startswith("ai.onnx:")}  # noqa: SLF001


def decomposable_ops(profile: TargetProfile, ops_present: set[str]) -> frozenset[str]:
    """Ops of the model the accelerator lacks but whose decomposition it can run entirely."""
    accel = table_ops(profile)
    if accel is None:
        return frozenset()
    return frozenset(op for op, repl in DECOMPOSITIONS.items()
                     if op in ops_present and op not in accel and set(repl) <= accel)


def _checker(profile: TargetProfile):
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    folder = Path(uc.__file__).parent
    name = "nnapi_supported_ops.md" if profile.op_table == "nnapi" else _CORE_ML_TABLES[profile.op_table]
    return uc._SupportedOpsChecker(folder / name)  # noqa: SLF001 - the table parser onnxruntime ships


PREPARED_SCENARIOS = ("after prepare", "shipped")  # the graph prepare already rewrote


def remedy_for(op: str, reason: str, accel_ops: set[str] | None, prepared: bool = False) -> str:
    """What would move the node onto the accelerator. ``prepared``: the graph is prepare's result, so
    what prepare does is done and a node still there is one its rewrites do not apply to."""
    if reason == "dynamic-shape":
        return "fix input shapes (--shape NAME=DIMS), then constant-fold shape subgraphs"
    if reason == "rank":
        return "reshape to rank <= 5 in the model (no automatic rewrite)"
    cpu = "runs on the CPU execution provider"
    if op in DECOMPOSITIONS and accel_ops is not None and set(DECOMPOSITIONS[op]) <= accel_ops:
        return f"decompose {op} into {'/'.join(DECOMPOSITIONS[op])} (prepare does this)" if not prepared else \
            f"still there after prepare's decomposition: {cpu}"
    if op == "BatchNormalization":
        return "fold BatchNormalization into the preceding Conv (prepare does this)" if not prepared else \
            f"not after a Conv, so prepare cannot fold it: {cpu}"
    if op in ("Identity", "Dropout"):
        return "remove with basic graph optimization (prepare does this)" if not prepared else \
            f"still there after basic optimization: {cpu}"
    if op in SHAPE_SUBGRAPH_OPS:
        if prepared:
            return f"still there after prepare: it computes on data, not only on shapes, so it is not folded; {cpu}"
        return "constant-folded by prepare once shapes are fixed, if it only computes shapes; otherwise it " + cpu
    return f"no rewrite known: {cpu}"


def _value_info(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    out: dict[str, onnx.ValueInfoProto] = {}
    for g in iter_graphs(model.graph):
        for v in list(g.input) + list(g.output) + list(g.value_info):
            out[v.name] = v
    return out


def _without_omitted_input_quirk(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose omitted optional inputs ('') count as fixed.

    onnxruntime's checker treats an omitted optional input (e.g. Resize's roi) as a dynamic
    shape, so it never counts such a node as supported; the NNAPI and CoreML EPs skip omitted
    inputs. The copy is only analysed, never saved or shipped.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    vi = out.graph.value_info.add()
    vi.name = ""
    vi.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    vi.type.tensor_type.shape.SetInParent()  # rank 0: a fixed size
    return out


def _partitioning(model: onnx.ModelProto, profile: TargetProfile, require_fixed: bool, ort_checker_quirks: bool):
    """(the model analysed, the op-table checker, onnxruntime's partitioning info): the one partitioner."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    if not ort_checker_quirks:
        model = _without_omitted_input_quirk(model)
    checker = _checker(profile)
    return model, checker, uc.check_partitioning(model.graph, checker, require_fixed, profile.max_rank)


def node_key(n: onnx.NodeProto) -> tuple:
    """A node's identity (protobuf wrappers are not stable objects): its op and output names."""
    return (n.op_type, n.name, tuple(n.output))


def placement(model: onnx.ModelProto, profile: TargetProfile, *,
              ort_checker_quirks: bool = True) -> tuple[set[tuple], int]:
    """(keys of the nodes in accelerator partitions, number of partitions) of a shape-inferred model:
    the same partitioning :func:`analyze_ort_ep` reports; empty for a target without an accelerator."""
    if not profile.is_accelerator:
        return set(), 0
    _, _, info = _partitioning(model, profile, True, ort_checker_quirks)
    return {node_key(n) for grp in info.supported_groups for n in grp}, info.num_partitions


def analyze_ort_ep(model: onnx.ModelProto, profile: TargetProfile, require_fixed: bool, scenario: str,
                   *, ort_checker_quirks: bool = True) -> Coverage:
    """Partition analysis of a shape-inferred model for the NNAPI or CoreML EP.

    With ``ort_checker_quirks`` (the default) counts match onnxruntime's usability checker exactly;
    without, omitted optional inputs are not mistaken for dynamic shapes (closer to the real EPs).
    """
    from onnxruntime.tools.onnx_model_utils import is_fixed_size_tensor

    model, checker, info = _partitioning(model, profile, require_fixed, ort_checker_quirks)
    supported_ids = {id(n) for grp in info.supported_groups for n in grp}
    vi = _value_info(model)
    inits = {t.name for g in iter_graphs(model.graph) for t in g.initializer}
    accel_ops = table_ops(profile)
    prepared = scenario in PREPARED_SCENARIOS

    def fixed(name: str) -> bool:  # mirrors usability_checker._is_fixed_shape_value
        if name in vi:
            return is_fixed_size_tensor(vi[name])
        return name in inits

    groups: dict[str, Counter[str]] = {}
    for g in iter_graphs(model.graph):
        for node in g.node:
            if id(node) in supported_ids:
                continue
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
            if not checker.is_op_supported(node):
                reason = "operator"
            elif require_fixed and not all(fixed(i) for i in node.input):
                reason = "dynamic-shape"
            else:
                reason = "rank"
            groups.setdefault(reason, Counter())[op] += 1
    unsupported = []
    for reason in ("operator", "dynamic-shape", "rank"):
        if reason not in groups:
            continue
        ops = groups[reason]
        if reason == "operator":
            for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])):
                unsupported.append(UnsupportedGroup(reason, n, {op: n}, remedy_for(op, reason, accel_ops, prepared)))
        else:
            unsupported.append(UnsupportedGroup(reason, sum(ops.values()), dict(ops),
                                                remedy_for("", reason, accel_ops, prepared)))
    notes = []
    omitted = any("" in n.input for g in iter_graphs(model.graph) for n in g.node)
    if not ort_checker_quirks and omitted:
        notes.append("omitted optional inputs (e.g. Resize's roi) are not counted as dynamic shapes, unlike onnxruntime's checker")
    if info.num_subgraphs:
        notes.append(f"{info.num_nodes_in_subgraphs} nodes are in {info.num_subgraphs} control-flow subgraphs")
    return Coverage(
        target=profile.name,
        provider=profile.execution_provider,
        scenario=scenario,
        available=True,
        nodes_total=info.num_nodes,
        nodes_supported=info.num_supported_nodes,
        partitions=info.num_partitions,
        partition_sizes=tuple(len(g) for g in info.supported_groups),
        unsupported=tuple(unsupported),
        caveats=tuple(checker.get_caveats()),
        notes=tuple(notes),
    )


def analyze_cpu(model: onnx.ModelProto, profile: TargetProfile, scenario: str) -> Coverage:
    total = sum(len(g.node) for g in iter_graphs(model.graph))
    return Coverage(profile.name, profile.execution_provider, scenario, True, total, total, 1, (total,),
                    notes=("the CPU execution provider runs every ONNX operator",))


def coverage_summary(model_path: Path, profile: TargetProfile) -> ShippedCoverage:
    """The manifest's coverage of a model file on an accelerator target (after prepare's rules)."""
    from .records import ShippedCoverage
    from .transforms import infer_shapes, toposort

    model = toposort(onnx.load_model(str(model_path), load_external_data=False))
    return ShippedCoverage.of(analyze_ort_ep(infer_shapes(model), profile, True, "shipped", ort_checker_quirks=False))
