"""Latency: a per-node roofline cost model over the shape-inferred graph.

For each node::

    t = max(flops / (peak_gops[precision] x efficiency[op class]), bytes_moved / bandwidth) + dispatch_overhead

on the compute unit that runs it (the accelerator's ``npu``/``gpu`` unit for nodes in an accelerator
partition, the ``cpu`` unit otherwise), plus ``partition_switch_us`` for every hand-off between the
CPU and an accelerator partition. ``If`` costs its dearest branch; loop bodies count once.

The per-op-class efficiencies and terms below are the development host's defaults (calibrated with
``edgepack calibrate``'s micro-benchmarks there, ORT CPU, one thread). A profile calibrated on its
device carries its own in ``[device.cost_model]`` and the session they were measured with in
``[estimate]`` (see :mod:`edgepack.estimate.params`); those replace the defaults for that profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from ..errors import ProfileError
from ..flops import NodeWork, _numel, _shape_map, model_work  # noqa: PLC2701
from ..model import iter_graphs
from ..partition import node_key
from ..target import ComputeUnit, TargetProfile
from . import node_rules, params
from .base import Estimate
from .params import CostParams

# Share of the unit's peak_gops a node of each class reaches (compute-bound part of the roofline).
# matmul: a large fp32 GEMM in MLAS reaches ~80% of the theoretical FMA peak; calibrate writes
# peak_gops = measured GEMM rate / EFFICIENCY["matmul"], so on a calibrated profile the GEMM is exact.
# The others are ratios to that GEMM measured by the host micro-benchmarks (see calibrate.py).
# Host micro-benchmarks (Xeon, ORT 1.32, 1 thread; ratios to the fp32 GEMM over repeated runs):
# 3x3 conv 0.85-1.07, depthwise (fit over a 3x3/5x5 grid, see calibrate.fit_depthwise) 0.067 on
# multiply-accumulates at input width, LSTM 0.42-0.54, QDQ int8 GEMM/conv 3-4x the fp32 GEMM,
# cache-resident Add 4.5-6.5x the DRAM Add, one-node session run 13-15 dispatches.
EFFICIENCY: dict[str, float] = {
    "matmul": 0.80,
    "conv": 0.72,  # at >= CHANNEL_SAT output channels; fewer channels scale it down (below)
    "conv-depthwise": 0.054,  # on 2 x C x H_out x W_in x kh x kw (kernels skip rows by stride, not columns)
    "conv-transpose": 0.40,
    "recurrent": 0.38,
    "elementwise": 0.25,
    "pool": 0.25,
    "reduce": 0.25,
    "norm": 0.10,
    "data-movement": 1.0,  # no FLOPs counted: memory-bound term only
    "control-flow": 1.0,
    "other": 0.25,
}
# Small GEMMs/convs do not reach the large-GEMM rate: efficiency x min(1, flops / SATURATION_FLOPS)^SMALL_EXP.
SATURATION_FLOPS = 2.0e6
SMALL_EXP = 0.25
# GEMM-like kernels with few output columns (conv output channels per group, MatMul N) run below the
# large-GEMM rate: x min(1, N / CHANNEL_SAT)^CHANNEL_EXP. Host conv ladder (3x3 at 28/56/80 px, ORT 1.32,
# 1 thread): 24 ch 0.42-0.48, 32 ch 0.40-0.52, 64 ch 0.69-0.72,
# 128 ch 0.80-0.83, 256 ch 0.89-0.91 of the GEMM rate (x 0.8 = share of peak).
# A strided k x k conv (k > 1) runs at this share of the stride-1 rate (its im2col gathers are scattered):
# host micro-benchmarks 0.70-0.80 over 16-128 input channels (calibrate.measure()["conv_strided_ratio"]).
STRIDED_CONV = 0.77
CHANNEL_SAT = 256
CHANNEL_EXP = 0.25
# Bytes moved are priced at DRAM bandwidth only beyond the device's cache_bytes; below it at its
# cache_bandwidth_gbps. Profiles without them get these: 1 MB, the per-core or shared L2 of the small
# ARM cores edgepack targets (Pi 4: 1 MB shared; Pi 5: 512 KB per core plus 2 MB L3) rather than the
# development host's 1.7 MB knee (its 2 MB L2 per core); and the host's cache-resident Add at 4.5x its DRAM Add:
CACHE_BYTES = 1.0e6
CACHE_SPEEDUP = 4.5
# Fixed costs in units of the profile's dispatch_overhead_us (so they scale with the device):
DW_ROW_TAP_DISPATCHES = 0.008  # depthwise conv: per output row, channel and kernel tap
DW_CHANNEL_TAP_DISPATCHES = 0.022  # depthwise conv: per channel and kernel tap
# Elementwise ops whose arithmetic sets their time: operations per element at the elementwise rate
# (peak x EFFICIENCY["elementwise"]); host micro-benchmarks on a cache-resident tensor
# (calibrate.measure()["element_ops"]). Others count 1 per element and are priced by bytes moved.
# Where is measured with its mask broadcast (as attention masks are); LayerNormalization over 384-wide
# rows; SkipLayerNormalization is the kernel the extended level fuses Add + LayerNormalization into
# (on the host, onnxruntime 1.32's is ~10x slower per element than the unfused pair).
ELEMENT_OPS: dict[str, float] = {
    "HardSigmoid": 8.7, "HardSwish": 17.0, "Div": 12.4, "Reciprocal": 12.3, "Sqrt": 12.2,
    "Exp": 10.3, "Log": 94.0, "Softplus": 585.0, "Sigmoid": 17.2, "Tanh": 16.1, "Erf": 25.0,
    "Where": 62.0, "LayerNormalization": 26.5, "SkipLayerNormalization": 285.0,
    "Resize-nearest": 35.0, "Resize-linear": 95.0, "Resize-cubic": 4170.0,  # per output element (2x upsampling)
    "Gelu": 25.0,  # not measured (opset 20; onnxruntime's own Gelu is a contrib op): assumed equal to Erf
}
UNMEASURED_ELEMENT_OPS = ("Gelu",)
# Gather-like ops read only the rows they gather, not their whole table.
GATHER_OPS = {"Gather", "GatherElements", "GatherND"}
RUN_DISPATCHES = 15.0  # once per inference (session run, input/output binding)
# ORT's extended level fuses these activations into a preceding Conv/Gemm (ConvActivationFusion);
# with a fused level they cost no dispatch and no memory pass, only their arithmetic.
FUSABLE_ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}
# Quantize/Dequantize around int8 ops are folded into QLinear kernels by ORT's QDQ transformers.
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
PRECISION_BYTES = {"fp32": 1.0, "fp16": 0.5, "int8": 0.25, "int16": 0.5}
QUANTIZED = ("int8", "int16")  # QDQ precisions: Q/DQ folded into the kernels
BAND = (0.6, 1.6)


@dataclass(frozen=True)
class NodeCost:
    name: str
    op_type: str
    cost_class: str
    unit: str
    precision: str
    compute_us: float
    memory_us: float
    dispatch_us: float

    @property
    def total_us(self) -> float:
        return max(self.compute_us, self.memory_us) + self.dispatch_us


@dataclass(frozen=True)
class LatencyBreakdown:
    total_us: float
    nodes: tuple[NodeCost, ...]
    switches: int
    switch_us: float
    unknown_nodes: int
    by_unit_us: dict[str, float]
    assumptions: tuple[str, ...]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _weight_dims(graphs: list[onnx.GraphProto], shapes: dict) -> dict[str, list[int]]:
    """Dims of every tensor a kernel can take as its weights: initializers, the outputs of the
    DequantizeLinear nodes of QDQ weights, and any other tensor whose inferred shape is fully known
    (weights fed as graph inputs)."""
    dims = {name: list(d) for name, d in shapes.items() if d and all(isinstance(v, int) for v in d)}
    dims.update({t.name: list(t.dims) for g in graphs for t in g.initializer})
    for g in graphs:
        for n in g.node:
            if n.op_type == "DequantizeLinear" and n.input and n.input[0] in dims and n.output:
                dims.setdefault(n.output[0], dims[n.input[0]])
    return dims


def _weight_input(node: onnx.NodeProto) -> str | None:
    """The name of a conv's weight input (QLinearConv keeps it at index 3)."""
    i = 3 if node.op_type == "QLinearConv" else 1
    return node.input[i] if len(node.input) > i else None


def cost_class(node: onnx.NodeProto, work: NodeWork, weight_dims: dict[str, list[int]]) -> str:
    """The op class of flops.op_class, with depthwise and transposed convolutions apart."""
    if work.op_class == "conv":
        if node.op_type == "ConvTranspose":
            return "conv-transpose"
        group = int(_attr(node, "group", 1))
        w = weight_dims.get(_weight_input(node)) if _weight_input(node) else None
        if group > 1 and w is not None and len(w) > 1 and w[1] == 1:
            return "conv-depthwise"
    return work.op_class


def efficiency(cls: str, flops: float, columns: int | None = None, prm: CostParams | None = None) -> float:
    """Share of peak for a node of class ``cls``; ``columns``: GEMM N (conv output channels per group);
    ``prm``: the profile's parameters (default: the development host's)."""
    table = prm.efficiency if prm is not None else EFFICIENCY
    small_exp = prm.small_exp if prm is not None else SMALL_EXP
    channel_exp = prm.channel_exp if prm is not None else CHANNEL_EXP
    channel_sat = prm.channel_sat if prm is not None else CHANNEL_SAT
    eff = table.get(cls, table["other"])
    if cls in ("matmul", "conv", "conv-pointwise", "conv-grouped", "conv-transpose", "recurrent") and flops > 0:
        eff *= min(1.0, flops / SATURATION_FLOPS) ** small_exp
    if cls in ("matmul", "conv", "conv-pointwise", "conv-grouped") and columns:
        eff *= min(1.0, columns / channel_sat) ** channel_exp
    return eff


def gemm_columns(node: onnx.NodeProto, cls: str, shapes: dict, weight_dims: dict) -> int | None:
    """N of the GEMM a conv/matmul node runs: output channels per group, or the output's last dim."""
    if cls == "conv" and node.op_type != "ConvTranspose":
        w = weight_dims.get(_weight_input(node)) if _weight_input(node) else None
        if w:
            return max(1, int(w[0]) // int(_attr(node, "group", 1)))
        return None
    if cls == "matmul" and node.output:
        out = shapes.get(node.output[0])
        if out and out[-1]:
            return int(out[-1])
    return None


def _peak(unit: ComputeUnit, precision: str) -> tuple[float, str]:
    """(GOPS, precision used): falls back fp16 -> fp32 on units without fp16, int8 -> fp32 likewise;
    an accelerator without fp32 runs fp32 models in relaxed fp16."""
    order = {"fp32": ("fp32", "fp16"), "fp16": ("fp16", "fp32"), "int8": ("int8", "fp32", "fp16"),
             "int16": ("int16", "fp16", "fp32")}[precision]
    for p in order:
        if unit.peak_gops.get(p):
            return unit.peak_gops[p], p
    msg = f"compute unit '{unit.name}' has no peak_gops for {precision}"
    raise ProfileError(msg)


def memory_time(moved: float, bandwidth_gbps: float, cache_bytes: float = CACHE_BYTES,
                cache_gbps: float | None = None) -> float:
    """Microseconds to stream ``moved`` bytes: the first ``cache_bytes`` at the cache rate, the rest at DRAM's."""
    bw = bandwidth_gbps * 1e3  # bytes per microsecond
    cbw = (cache_gbps * 1e3) if cache_gbps else bw * CACHE_SPEEDUP
    return min(moved, cache_bytes) / cbw + max(moved - cache_bytes, 0.0) / bw


def node_time(work: NodeWork, cls: str, unit: ComputeUnit, precision: str, bandwidth_gbps: float,
              dispatch_us: float, *, flops: float | None = None, columns: int | None = None,
              moved: float | None = None, cache_bytes: float = CACHE_BYTES, cache_gbps: float | None = None,
              rate_class: str | None = None, prm: CostParams | None = None) -> NodeCost:
    """The roofline cost of one node (microseconds); exact arithmetic, used by tests on hand graphs.

    ``flops`` overrides the node's counted FLOPs (depthwise convs, arithmetic-heavy elementwise ops);
    ``moved`` its bytes in + out (gathers read only what they gather); ``rate_class`` the class whose
    efficiency prices the FLOPs, when not ``cls`` (ELEMENT_OPS are per element at the elementwise rate)."""
    peak, used = _peak(unit, precision)
    flops = (work.flops or 0.0) if flops is None else flops
    eff = efficiency(rate_class or cls, flops, columns, prm)
    compute_us = flops / (peak * 1e3 * eff) if flops else 0.0
    if moved is None:
        moved = (work.bytes_in or 0.0) + (work.bytes_out or 0.0)
    moved *= PRECISION_BYTES.get(used, 1.0)
    memory_us = memory_time(moved, bandwidth_gbps, cache_bytes, cache_gbps)
    return NodeCost(work.name, work.op_type, cls, unit.name, used, compute_us, memory_us, dispatch_us)


def _depthwise_work(node: onnx.NodeProto, shapes: dict, weight_dims: dict,
                    prm: CostParams) -> tuple[float | None, float]:
    """(priced FLOPs, fixed cost in dispatches) of a depthwise conv.

    FLOPs = 2 x C x H_out x W_in x taps: the host kernels skip rows by the height stride but compute
    every column (a width stride saves nothing); fixed = C x taps x (H_out x DW_ROW_TAP_DISPATCHES +
    DW_CHANNEL_TAP_DISPATCHES). Fit on a grid of single depthwise convs (calibrate.fit_depthwise)."""
    x = shapes.get(node.input[0])
    y = shapes.get(node.output[0])
    w = weight_dims.get(_weight_input(node)) if _weight_input(node) else None
    if not x or not y or w is None or len(x) < 3 or any(d is None for d in x) or any(d is None for d in y):
        return None, 0.0
    channels, taps = int(x[1]), math.prod(w[2:])
    rows = int(y[2]) if len(y) > 3 else 1  # 1-D convs: one row
    width = int(math.prod(x[3:])) if len(x) > 3 else int(x[2])
    fixed = channels * taps * (rows * prm.dw_row_tap_dispatches + prm.dw_channel_tap_dispatches)
    return 2.0 * channels * rows * width * taps, fixed


def _split(elems: int | None, prm: CostParams) -> bool:
    """Whether an elementwise node of ``elems`` output elements runs split over the threads (profiles
    calibrated at N > 1 threads know from what size onnxruntime does that: ``parallel_elems``)."""
    return elems is not None and prm.par_cache_gbps is not None and elems >= prm.parallel_elems


def _unit(profile: TargetProfile, kind: str) -> ComputeUnit:
    for u in profile.device.units:
        if u.kind == kind:
            return u
    msg = f"{profile.name}: no '{kind}' compute unit"
    raise ProfileError(msg)


def accelerator_nodes(model: onnx.ModelProto, profile: TargetProfile) -> tuple[set[tuple], int, str]:
    """(keys of the main-graph nodes in accelerator partitions, partitions, how that is known), as the
    target's backend says: onnxruntime's partitioning of the NNAPI/CoreML op tables, the whole graph
    for the QNN HTP (builds refuse CPU fallback); empty for CPU targets."""
    from ..backends import backend_for

    return backend_for(profile).estimate_placement(model, profile)


def _consumers(graph: onnx.GraphProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            out[i] = out.get(i, 0) + 1
    for o in graph.output:
        out[o.name] = out.get(o.name, 0) + 1
    return out


def _strided(n: onnx.NodeProto, weight_dims: dict) -> bool:
    """A Conv with a stride above 1 and a kernel larger than 1 x 1."""
    w = weight_dims.get(n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 else None
    return bool(w) and math.prod(w[2:]) > 1 and any(int(v) > 1 for v in _attr(n, "strides", []))


def breakdown(model: onnx.ModelProto, profile: TargetProfile, precision: str = "fp32", *,
              fused: bool | None = None) -> LatencyBreakdown:
    """Per-node costs of a shape-inferred model on ``profile``'s device.

    ``fused`` (default: the session the profile's estimates model runs at level extended/all on the
    CPU) prices activations that follow a Conv/Gemm as fused into it.
    """
    dev = profile.device
    prm = params.for_profile(profile)
    if fused is None:
        fused = prm.fused and not profile.is_accelerator
    work = model_work(model)
    graphs = list(iter_graphs(model.graph))
    node_work: dict[tuple, NodeWork] = {}
    it = iter(work.nodes)
    for g in graphs:
        for n in g.node:
            node_work[node_key(n)] = next(it)
    shapes = {k: v[0] for k, v in _shape_map(model).items()}
    producers = {o: n for g in graphs for n in g.node for o in n.output}
    weight_dims = _weight_dims(graphs, shapes)
    cpu = _unit(profile, "cpu")
    accel_ids, _, placed_by = accelerator_nodes(model, profile)
    accel = None
    if accel_ids:
        accel = next(u for u in dev.units if u.kind in ("npu", "gpu"))
    bw = dev.memory_bandwidth_gbps or 10.0
    disp = dev.dispatch_overhead_us if dev.dispatch_overhead_us is not None else 5.0
    cache = {"cache_bytes": dev.cache_bytes if dev.cache_bytes is not None else CACHE_BYTES,
             "cache_gbps": dev.cache_bandwidth_gbps}
    costs: list[NodeCost] = []
    unknown = 0

    def graph_cost(g: onnx.GraphProto) -> float:
        nonlocal unknown
        consumers = _consumers(g)
        local = {o: n for n in g.node for o in n.output}
        skip_ln = node_rules.skip_layernorms(g, local, consumers, shapes) if fused else {}
        absorbed = {*skip_ln.values(), *(node_rules.swish_muls(g, local, consumers) if fused else ())}
        # x86 NCHWc: x * HardSigmoid(x) on a conv output becomes the conv's HardSwish activation
        hswish = node_rules.hardswish_pairs(g, local, consumers) if fused and prm.layout == "nchwc" else {}
        absorbed |= set(hswish)
        hswish_sigs = set(hswish.values())
        total = 0.0
        for n in g.node:
            if node_key(n) in absorbed:
                continue  # fused into the SkipLayerNormalization / QuickGelu priced at its norm / Sigmoid
            w = node_work[node_key(n)]
            if w.flops is None:
                unknown += 1
            on_accel = node_key(n) in accel_ids
            unit = accel if on_accel and accel is not None else cpu
            cls = cost_class(n, w, weight_dims)
            if precision in QUANTIZED and n.op_type in QDQ_OPS:
                continue  # folded into QLinear kernels
            prod = producers.get(n.input[0]) if n.input else None
            into_conv = (fused and n.op_type in FUSABLE_ACTIVATIONS and prod is not None
                         and prod.op_type in ("Conv", "FusedConv", "Gemm") and consumers.get(n.input[0], 0) == 1
                         ) or node_key(n) in hswish_sigs
            priced, extra, moved, rate_class = None, 0.0, None, None
            if into_conv:
                # applied by the conv kernel to its output while in cache: its arithmetic only (no
                # dispatch, no memory pass), ELEMENT_OPS per element, 1 for the cheap ones
                elems = _numel(shapes.get(n.output[0])) if n.output else None
                priced, moved, rate_class = (elems or 0) * prm.element_ops.get(n.op_type, 1.0), 0.0, "elementwise"
            elif cls == "conv-depthwise" and not on_accel:
                priced, fixed = _depthwise_work(n, shapes, weight_dims, prm)
                extra = fixed * disp
            elif node_rules.element_op(n) in prm.element_ops and not on_accel and n.output:
                elems = _numel(shapes.get(n.output[0]))
                op = "SkipLayerNormalization" if node_key(n) in skip_ln else node_rules.element_op(n)
                per = prm.par_element_ops.get(op, prm.element_ops[op]) if _split(elems, prm) else prm.element_ops[op]
                priced = None if elems is None else elems * per
                rate_class = "elementwise"
            elif n.op_type in GATHER_OPS and w.bytes_out is not None:
                index = _numel(shapes.get(n.input[1])) if len(n.input) > 1 else None
                moved = 2.0 * w.bytes_out + 8.0 * (index or 0)
            cols = None if on_accel else gemm_columns(n, cls, shapes, weight_dims)
            if cls == "conv" and not on_accel and _strided(n, weight_dims):
                priced = (w.flops or 0.0) / prm.strided_conv
            if cls in ("conv", "conv-depthwise") and not on_accel and prm.nchwc_block > 1:
                pad = node_rules.nchwc_padding(n, cls, weight_dims, prm.nchwc_block)
                priced = (priced if priced is not None else (w.flops or 0.0)) * pad
            if cls == "conv" and not on_accel and "conv-pointwise" in prm.efficiency and node_rules.pointwise(n, weight_dims):
                rate_class = "conv-pointwise"
            elif cls == "conv" and not on_accel and "conv-grouped" in prm.efficiency and int(_attr(n, "group", 1)) > 1:
                rate_class = "conv-grouped"
            # in int8 models (QDQ, dynamic) the per-element ops between the quantized kernels run in fp32
            node_precision = "fp32" if rate_class == "elementwise" and precision in QUANTIZED else precision
            split = (not on_accel and not into_conv and "elementwise" in (cls, rate_class)
                     and _split(_numel(shapes.get(n.output[0])) if n.output else None, prm))
            c = node_time(w, cls, unit, node_precision, bw, (0.0 if on_accel or into_conv else disp) + extra, flops=priced,
                          columns=cols, moved=moved, rate_class=rate_class, prm=prm,
                          **({**cache, "cache_gbps": prm.par_cache_gbps} if split else cache))
            costs.append(c)
            total += c.total_us
            subs = [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
            if n.op_type == "If" and subs:
                total += max(graph_cost(s) for s in subs)
            else:
                total += sum(graph_cost(s) for s in subs)
        return total

    total = graph_cost(model.graph) + prm.run_dispatches * disp
    if prm.layout == "nchwc" and prm.nchwc_block > 1 and not profile.is_accelerator:
        # the layout changes onnxruntime's x86 NCHWc transformer inserts: a read and a write of the tensor each
        for kind, t in node_rules.nchwc_reorders(model.graph, shapes, prm.nchwc_block):
            moved = 8.0 * (_numel(shapes.get(t)) or 0)
            # onnxruntime splits a reorder over the threads as it does an elementwise op
            rate = prm.par_cache_gbps if _split(_numel(shapes.get(t)), prm) else cache["cache_gbps"]
            c = NodeCost(t, kind, "data-movement", cpu.name, "fp32", 0.0,
                         memory_time(moved, bw, cache["cache_bytes"], rate), disp)
            costs.append(c)
            total += c.total_us
    switches = 0
    if accel_ids:
        side = "cpu"  # inputs arrive in CPU memory, outputs leave to it
        for n in model.graph.node:
            now = "accel" if node_key(n) in accel_ids else "cpu"
            switches += now != side
            side = now
        switches += side != "cpu"
    switch_us = switches * (dev.partition_switch_us or 0.0)
    by_unit: dict[str, float] = {}
    for c in costs:
        by_unit[c.unit] = by_unit.get(c.unit, 0.0) + c.total_us
    assumptions = [
        params.describe(prm, profile),
        f"per-node roofline: max(FLOPs / (peak_gops x efficiency), bytes / {bw:g} GB/s) + {disp:g} us dispatch per CPU node",
        "op-class efficiencies (share of peak): "
        + ", ".join(f"{k} {v:.3g}" for k, v in prm.efficiency.items() if v < 1.0),
        f"depthwise conv priced on H_out x W_in positions plus {prm.dw_row_tap_dispatches:.3g} dispatches per output row "
        f"and {prm.dw_channel_tap_dispatches:.3g} per channel, each per kernel tap; "
        f"{prm.run_dispatches:.3g} dispatches per inference for the session run",
        "transcendental/division elementwise ops priced per element: "
        + ", ".join(f"{k} {v:.3g}" for k, v in sorted(prm.element_ops.items())) + " operations ("
        + ", ".join(UNMEASURED_ELEMENT_OPS) + " assumed equal to Erf where not measured)",
        f"strided k x k convs at {prm.strided_conv:.3g} of the stride-1 rate; "
        f"GEMM/conv efficiency scaled by min(1, FLOPs / {SATURATION_FLOPS:.0e})^{prm.small_exp:.3g} for small kernels "
        f"and by min(1, N / {prm.channel_sat:g})^{prm.channel_exp:.3g} for N output channels/columns"
        + (f"; NCHWc convs on channels padded to blocks of {prm.nchwc_block:g}" if prm.nchwc_block > 1 else ""),
        (f"working sets up to {cache['cache_bytes'] / 1e6:g} MB move at "
         + (f"{cache['cache_gbps']:g} GB/s (cache)" if cache["cache_gbps"] else f"{CACHE_SPEEDUP:g}x the DRAM rate (cache)")),
        f"peak_gops of unit '{cpu.name}': " + ", ".join(f"{k} {v:g}" for k, v in cpu.peak_gops.items()),
    ]
    if fused:
        assumptions.append("activations after Conv/Gemm fused into it (their arithmetic only), x * Sigmoid(x) into one QuickGelu and "
                           "Add + LayerNormalization into one SkipLayerNormalization (onnxruntime extended optimizations)")
    if precision == "int8":
        assumptions.append("QuantizeLinear/DequantizeLinear folded into QLinear kernels (free); tensors priced at 1 byte")
    if precision == "int16":
        assumptions.append("int8 weights with 16-bit activations: QuantizeLinear/DequantizeLinear folded into the kernels "
                           "(free), tensors priced at 2 bytes, compute at the unit's int16 rate, or its fp16 rate where the "
                           "profile gives no int16 figure")
    if accel is not None:
        assumptions.append(f"{len(accel_ids)} nodes on unit '{accel.name}' ({placed_by}), "
                           f"{switches} CPU<->accelerator switches x {dev.partition_switch_us or 0:g} us")
    if "If" in {n.op_type for g in graphs for n in g.node}:
        assumptions.append("an If node costs its dearest branch; loop bodies count once")
    if unknown:
        assumptions.append(f"{unknown} nodes have unknown shapes and count only their dispatch overhead")
    return LatencyBreakdown(total + switch_us, tuple(costs), switches, switch_us, unknown, by_unit, tuple(assumptions))


def estimate_latency(model: onnx.ModelProto, profile: TargetProfile, precision: str = "fp32", *,
                     fused: bool | None = None, band: tuple[float, float] = BAND,
                     priced: LatencyBreakdown | None = None) -> Estimate:
    """Latency of one inference (ms) of a shape-inferred model on ``profile``'s device (``priced``: its
    :func:`breakdown` with the same arguments, when the caller has it already)."""
    b = priced if priced is not None else breakdown(model, profile, precision, fused=fused)
    ms = b.total_us / 1e3
    method = ("per-node roofline cost model (FLOPs and bytes per node from the shape-inferred graph; "
              f"device figures from profile {profile.source}); band {band[0]:g}x-{band[1]:g}x from host validation")
    return Estimate(ms, ms * band[0], ms * band[1], "ms", method, list(b.assumptions))


def flops_total(model: onnx.ModelProto) -> float:
    w = model_work(model)
    return w.total_flops if not math.isnan(w.total_flops) else 0.0
