"""prepare: fix shapes, rewrite ops the accelerator lacks, constant-fold and fold BatchNormalization.

onnxruntime's *basic* level only: extended/all levels add fused ops (FusedConv, NCHWc) that
neither NNAPI/CoreML nor a reduced build can run. Every rewrite is checked numerically against
the original model (fp32 outputs within 1e-5 relative) and recorded.
"""

from __future__ import annotations

from dataclasses import replace

import onnx

from .. import partition
from ..errors import StageError
from ..pipeline import Context, ModelState
from ..shapes import fix_input_shapes
from ..transforms import DECOMPOSITIONS, decompose, infer_shapes, ort_optimize
from .verify import compare_outputs, run_model

REWRITE_RTOL = 1e-5


def _worst_rel(metrics: dict) -> float:
    return max((m["max_rel_err"] or 0.0) for m in metrics.values()) if metrics else 0.0


def _prepare_one(ctx: Context, m: ModelState, decisions: list[str]) -> ModelState:
    profile = ctx.target
    proto = m.source.proto
    if m.fixed_shapes:
        fixed = {k: tuple(v) for k, v in m.shapes.items()}
        proto = fix_input_shapes(proto, fixed)  # type: ignore[arg-type]
        decisions.append(f"{m.name}: input shapes fixed to " + ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in fixed.items()))
    else:
        decisions.append(f"{m.name}: dynamic dimensions kept (target shape policy '{profile.shape_policy}')")
    ops = partition.decomposable_ops(profile, set(m.source.info.op_histogram)) if profile.is_accelerator else frozenset()
    model_dir = m.source.path.parent.resolve()
    attempts = [ops, frozenset()] if ops else [frozenset()]
    for attempt in attempts:
        candidate, counts = decompose(proto, set(attempt)) if attempt else (proto, {})
        dst = ctx.work / f"{m.name}.prepared.onnx"
        ort_optimize(candidate, model_dir, dst, "basic", m.source.info.weight_bytes)
        metrics = compare_outputs(list(m.reference_outputs), run_model(dst, list(m.verify_inputs)))
        worst = _worst_rel(metrics)
        if worst <= REWRITE_RTOL:
            break
        if attempt:
            decisions.append(f"{m.name}: rewrites {sorted(attempt)} changed outputs by {worst:.2e} relative; retried without them")
    else:
        msg = f"{m.name}: basic optimization changed fp32 outputs by {worst:.2e} relative (limit {REWRITE_RTOL})"
        raise StageError(msg)
    for op, n in sorted(counts.items()):
        decisions.append(f"{m.name}: decomposed {n} {op} node(s) into {'/'.join(DECOMPOSITIONS[op])} for {profile.execution_provider}")
    before = m.source.info.nodes_total
    optimized = onnx.load_model(str(dst), load_external_data=False)
    after = sum(1 for _ in optimized.graph.node)
    decisions.append(
        f"{m.name}: onnxruntime basic optimizations (constant folding, BatchNormalization folding): "
        f"{before} -> {after} main-graph nodes; outputs equal within {worst:.1e} relative"
    )
    coverage = None
    if profile.is_accelerator:
        cov = partition.analyze_ort_ep(infer_shapes(optimized), profile, True, "after prepare", ort_checker_quirks=False)
        coverage = {"nodes_total": cov.nodes_total, "nodes_on_accelerator": cov.nodes_supported,
                    "partitions": cov.partitions, "partition_sizes": list(cov.partition_sizes),
                    "unsupported": [u.to_json() for u in cov.unsupported]}
        decisions.append(f"{m.name}: {cov.nodes_supported}/{cov.nodes_total} nodes on {profile.execution_provider} "
                         f"in {cov.partitions} partition(s)")
    return replace(m, current=dst, prepared=dst, coverage=coverage)


def prepare_stage(ctx: Context, decisions: list[str]) -> Context:
    return ctx.with_models([_prepare_one(ctx, m, decisions) for m in ctx.models])
