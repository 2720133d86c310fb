"""Which nodes the QNN execution provider takes, from the EP itself, and why it refuses the rest.

Two answers onnxruntime and onnxruntime-qnn give without parsing logs (measured with 1.32 / 2.7.0):

* session config ``session.record_ep_graph_assignment_info=1``, then
  ``InferenceSession.get_provider_graph_assignment_info()``: the subgraphs each EP got, with their
  nodes. Names are those after onnxruntime's graph transforms: the layout transform renames a node
  ``<name>_token_<n>`` and DQ duplication adds ``/duplicated``; stripped, they map back to the model.
* provider option ``enable_framework_op_trace=1`` (+ ``framework_op_trace_dir``): QNN writes
  ``qnn_op_trace.json`` with ``unsupported_nodes`` - node name, op type and QNN's own reason.

A build creates its sessions with CPU fallback disabled, so what it ships runs entirely on the
HTP or the build stops. ``inspect`` first asks the same question; when the answer is no, it asks
again with fallback allowed to learn which nodes QNN refuses and why.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ...cleanup import tmp_prefix
from ...errors import StageError
from ...partition import Coverage, UnsupportedGroup
from . import session

CPU_EP = "CPUExecutionProvider"
_SUFFIX = re.compile(r"(/duplicated|_token_\d+)+$")
IO_QDQ = "configured to not take"  # QNN's reason for graph-input Q / graph-output DQ with fallback allowed


@dataclass(frozen=True)
class Placement:
    """Per-node placement of one model as the QNN EP decided it (a session was created)."""

    total: int  # nodes of the model
    on_cpu: tuple[tuple[str, str], ...]  # (name, op type) of the model's nodes the CPU EP got
    partitions: tuple[int, ...]  # the model's nodes in each QNN subgraph
    rewritten: int  # nodes of the model that onnxruntime's transforms renamed or folded away
    reasons: dict[str, str] = field(default_factory=dict)  # node name -> QNN's reason for refusing it
    fallback: bool = False  # the session allowed CPU fallback

    @property
    def on_qnn(self) -> int:
        return self.total - len(self.on_cpu)


def _named(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The model with every node named (unnamed ones get ``edgepack_<i>``) and {name: op type}."""
    ops = {}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"edgepack_{i}"
        ops[n.name] = n.op_type
    return model, ops


def placement(path: Path, provider_options: dict[str, str], *, fallback: bool) -> Placement:
    """Create an HTP session of ``path`` and read where each node went (StageError if none can be created)."""
    model, ops = _named(onnx.load_model(str(path)))
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("qnn")) as tmp:
        opts = dict(provider_options)
        if fallback:  # QNN's reasons for what it refuses
            opts.update(enable_framework_op_trace="1", framework_op_trace_dir=tmp)
        sess = session.create(model.SerializeToString(), opts, fallback=fallback, what=path.name,
                              config=[("session.record_ep_graph_assignment_info", "1")])
        trace = Path(tmp) / "qnn_op_trace.json"
        unsupported = json.loads(trace.read_text(encoding="utf-8")).get("unsupported_nodes", []) if trace.is_file() else []
    subgraphs = [(sub.ep_name, [n.name for n in sub.get_nodes()]) for sub in sess.get_provider_graph_assignment_info()]
    return parse(ops, subgraphs, unsupported, fallback)


def parse(ops: dict[str, str], subgraphs: list[tuple[str, list[str]]], unsupported: list[dict],
          fallback: bool) -> Placement:
    """Placement from what onnxruntime and QNN report: ``ops`` {model node: op type}, ``subgraphs``
    [(EP, node names after onnxruntime's transforms)], ``unsupported`` QNN's op-trace entries."""
    by_name: dict[str, tuple[str, int]] = {}  # model node -> (EP, subgraph index)
    qnn_subgraphs = []
    for i, (ep, names) in enumerate(subgraphs):
        if ep == session.EP:
            qnn_subgraphs.append(i)
        for name in names:
            base = _SUFFIX.sub("", name)
            if base in ops and by_name.get(base, ("",))[0] != session.EP:  # a node split in two counts where QNN has it
                by_name[base] = (ep, i)
    reasons = {_SUFFIX.sub("", str(u.get("node_name", ""))): str(u.get("reason", "")) for u in unsupported}
    on_cpu = tuple((name, ops[name]) for name in ops if by_name.get(name, ("",))[0] == CPU_EP)
    rewritten = sum(1 for name in ops if name not in by_name)
    sizes = [sum(1 for ep_i in by_name.values() if ep_i[1] == i) for i in qnn_subgraphs]
    if len(sizes) == 1:  # renamed/folded nodes belong to the one HTP partition
        sizes[0] += rewritten
    return Placement(len(ops), on_cpu, tuple(sizes), rewritten, reasons, fallback)


def remedy(op: str, reason: str) -> str:
    if IO_QDQ in reason:
        return ("none needed: with CPU fallback disabled (how edgepack builds) QNN takes the graph's input Q / "
                "output DQ itself")
    return ("no rewrite known: the HTP cannot run it, so a build for this target stops (its context binary must hold "
            f"the whole graph); replace {op} in the model or build for android-nnapi")


def to_coverage(pl: Placement, profile, scenario: str, notes: tuple[str, ...] = ()) -> Coverage:
    """The Coverage ``inspect`` and the manifest show (the same shape as NNAPI's and Core ML's)."""
    groups: dict[tuple[str, str], int] = Counter()
    for name, op in pl.on_cpu:
        groups[(op, pl.reasons.get(name, "not taken by the QNN EP (no reason reported)"))] += 1
    unsupported = tuple(UnsupportedGroup("operator", n, {op: n}, f"QNN EP: {why}; {remedy(op, why)}")
                        for (op, why), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])))
    told = [f"from the QNN execution provider itself (onnxruntime session assignment info"
            + (", QNN framework op trace" if pl.fallback else "") + "), "
            + ("CPU fallback allowed to learn what it refuses" if pl.fallback
               else "CPU fallback disabled as in the build: the HTP takes every node or the session fails")]
    if pl.rewritten:
        told.append(f"{pl.rewritten} node(s) were renamed or folded by onnxruntime's graph transforms before "
                    "placement (QNN's NHWC layout transform re-creates weight DequantizeLinear nodes); counted with the HTP")
    return Coverage(profile.name, profile.execution_provider, scenario, True, pl.total, pl.on_qnn, len(pl.partitions),
                    pl.partitions, unsupported, notes=tuple(told) + tuple(notes))


def analyze(path: Path, profile, options: dict[str, str], scenario: str, notes: tuple[str, ...] = ()) -> Coverage:
    """Coverage of one model file: the build's question first (no fallback), then QNN's reasons if it says no."""
    try:
        return to_coverage(placement(path, options, fallback=False), profile, scenario, notes)
    except StageError as strict:
        try:
            pl = placement(path, options, fallback=True)
        except StageError as exc:  # e.g. HTP graph finalization fails even with the CPU EP beside it
            return Coverage(profile.name, profile.execution_provider, scenario, False,
                            notes=(str(exc), *notes))
        cov = to_coverage(pl, profile, scenario, notes)
        if not pl.on_cpu:  # every node placed on QNN, yet the strict session failed: say what it said
            cov = Coverage(cov.target, cov.provider, scenario, False, cov.nodes_total, cov.nodes_supported,
                           cov.partitions, cov.partition_sizes, cov.unsupported, notes=(str(strict), *cov.notes))
        return cov
