"""prepare: fix shapes, rewrite ops the accelerator lacks, constant-fold and fold BatchNormalization.

onnxruntime's *basic* level only: extended/all levels add fused ops (FusedConv, NCHWc) that
neither NNAPI/CoreML nor a reduced build can run. Every rewrite is checked numerically against
the original model (fp32 outputs within 1e-5 relative) and recorded.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx

from .. import partition
from ..backends import backend_for
from ..errors import StageError
from ..gates import MAX_SLOWDOWN, REWRITE_RTOL, compare_outputs, scaled_error
from ..model import iter_graphs
from ..pipeline import Context, ModelState
from ..runtime.ort import host_settings, run_model
from ..runtime.timing import compare_latency
from ..shapes import fix_input_shapes
from ..transforms import DECOMPOSITIONS, prepare_graph, protect_weight_only_int8


def _optimize_checked(ctx: Context, m: ModelState, proto: onnx.ModelProto, ops: frozenset[str], stem: str,
                      decisions: list[str]) -> tuple[Path, dict[str, int], float]:
    """Decompose ``ops``, run onnxruntime's basic level, and check outputs against the original;
    without the decompositions if they were what changed the outputs."""
    model_dir = m.source.path.parent.resolve()
    attempts = [ops, frozenset()] if ops else [frozenset()]
    for attempt in attempts:
        dst = ctx.work / f"{stem}.onnx"
        counts = prepare_graph(proto, model_dir, dst, decompose_ops=attempt, weight_bytes=m.source.info.weight_bytes)
        metrics = compare_outputs(list(m.reference_outputs), run_model(dst, list(m.verify_inputs), level="disable"))
        worst = scaled_error(metrics)
        if worst <= REWRITE_RTOL:
            return dst, counts, worst
        if attempt:
            decisions.append(f"{m.name}: rewrites {sorted(attempt)} changed outputs by {worst:.2e} relative; retried without them")
    msg = f"{m.name}: basic optimization changed fp32 outputs by {worst:.2e} relative to max(|output|, 1) (limit {REWRITE_RTOL})"
    raise StageError(msg)


def _keep_int8_weights(ctx: Context, m: ModelState, folded: Path, kept: Path, decisions: list[str],
                       what: str = "weights") -> bool:
    """Weight-only int8 kept as DequantizeLinear is 4x smaller but dequantizes on every inference.
    Accelerator targets keep it (download size); CPU targets keep it unless it runs more than
    MAX_SLOWDOWN slower than the fp32-folded model on this host."""
    if ctx.target.is_accelerator:
        decisions.append(f"{m.name}: weight-only int8 weights kept int8 (DequantizeLinear): 4x smaller download")
        return True
    settings = host_settings(ctx.target)
    settings["disabled_optimizers"] = [*settings["disabled_optimizers"], "QDQSelectorActionTransformer"]
    ratio = compare_latency(folded, kept, m.verify_inputs[0], **settings)["ratio"]
    if ratio is not None and ratio > MAX_SLOWDOWN:
        decisions.append(f"{m.name}: weight-only int8 {what} folded to fp32: dequantizing them on every inference "
                         f"ran more than {MAX_SLOWDOWN - 1:.0%} slower on the host (they grow about 4x)")
        return False
    decisions.append(f"{m.name}: weight-only int8 {what} kept int8: 4x smaller, "
                     f"within {MAX_SLOWDOWN - 1:.0%} of the fp32-folded speed on the host")
    return True


def _prepare_one(ctx: Context, m: ModelState, decisions: list[str]) -> ModelState:
    profile = ctx.target
    proto = m.source.proto
    if m.fixed_shapes:
        fixed = {k: tuple(v) for k, v in m.shapes.items()}
        proto = fix_input_shapes(proto, fixed)  # type: ignore[arg-type]
        decisions.append(f"{m.name}: input shapes fixed to "
                         + ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in fixed.items()))
    else:
        decisions.append(f"{m.name}: dynamic dimensions kept (target shape policy '{profile.shape_policy}')")
    ops = partition.decomposable_ops(profile, set(m.source.info.op_histogram)) if profile.is_accelerator else frozenset()
    protected_proto, protected = protect_weight_only_int8(proto)
    dq_kept = False  # weight-only int8 MatMul/Conv weights shipped as DequantizeLinear
    try:
        dst, counts, worst = _optimize_checked(ctx, m, proto, ops, f"{m.name}.prepared", decisions)
    except StageError as exc:
        if not m.fixed_shapes or "cannot load" not in str(exc):
            raise
        # e.g. an If whose inactive branch only type-checks for other input sizes
        decisions.append(f"{m.name}: fixed shapes rejected by onnxruntime's shape inference ({exc}); "
                         "kept the model's dynamic dimensions")
        m = replace(m, fixed_shapes=False, shapes={t.name: t.shape for t in m.source.info.inputs})
        proto = m.source.proto
        protected_proto, protected = protect_weight_only_int8(proto)
        dst, counts, worst = _optimize_checked(ctx, m, proto, ops, f"{m.name}.prepared", decisions)
    if protected:
        kept, kept_counts, kept_worst = _optimize_checked(ctx, m, protected_proto, ops, f"{m.name}.prepared-int8w", decisions)
        if _keep_int8_weights(ctx, m, dst, kept, decisions):
            dst, counts, worst, dq_kept = kept, kept_counts, kept_worst, True
        else:
            tables_proto, tables = protect_weight_only_int8(proto, tables_only=True)
            if tables:
                kept, kept_counts, kept_worst = _optimize_checked(ctx, m, tables_proto, ops, f"{m.name}.prepared-int8t",
                                                                  decisions)
                if _keep_int8_weights(ctx, m, dst, kept, decisions, what="embedding tables"):
                    dst, counts, worst = kept, kept_counts, kept_worst
    for op, n in sorted(counts.items()):
        decisions.append(f"{m.name}: decomposed {n} {op} node(s) into {'/'.join(DECOMPOSITIONS[op])} for {profile.execution_provider}")
    before = m.source.info.nodes_total
    optimized = onnx.load_model(str(dst), load_external_data=False)
    after = sum(len(g.node) for g in iter_graphs(optimized.graph))
    decisions.append(
        f"{m.name}: onnxruntime basic optimizations (constant folding, BatchNormalization folding): "
        f"{before} -> {after} nodes (all graphs); outputs equal within {worst:.1e} of max(|output|, 1)"
    )
    coverage = backend_for(profile).prepared_coverage(dst, profile)
    if coverage is not None:
        decisions.append(f"{m.name}: after prepare {coverage.nodes_on_accelerator}/{coverage.nodes_total} nodes "
                         f"on {profile.execution_provider} in {coverage.partitions} partition(s)")
    return replace(m, current=dst, prepared=dst, coverage=coverage, weight_only_int8=dq_kept)


def prepare_stage(ctx: Context, decisions: list[str]) -> Context:
    return ctx.with_models([_prepare_one(ctx, m, decisions) for m in ctx.models])
