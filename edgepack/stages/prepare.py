"""prepare: fix shapes, rewrite ops the accelerator lacks, constant-fold and fold BatchNormalization.

onnxruntime's *basic* level only: extended/all levels add fused ops (FusedConv, NCHWc) that
neither NNAPI/CoreML nor a reduced build can run. Every rewrite is optional and checked: the
rewritten graph and the original run with the same session settings (optimizations off) on the
verification inputs, and the rewrite must stay within the noise onnxruntime itself shows on this
model and these inputs (:mod:`edgepack.rewrite_check`). A rewrite that does not is skipped and
recorded, and the build goes on with the graph without it - down to the unrewritten original.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import onnx

from .. import partition
from ..backends import backend_for
from ..cross import stands_in
from ..errors import StageError, first_line
from ..gates import MAX_SLOWDOWN
from ..model import iter_graphs
from ..pipeline import Context, ModelState
from ..rewrite_check import NOISE_LEVELS, Noise, deviation, measure_noise, within_floor
from ..runtime.ort import host_settings, queue_model_runs, run_model, session
from ..runtime.timing import compare_latency
from ..shapes import fix_input_shapes
from ..transforms import DECOMPOSITIONS, ort_optimize, prepare_graph, protect_weight_only_int8


@dataclass(frozen=True)
class _Baseline:
    """What every rewrite is checked against: the original's outputs with optimizations off (the
    build's reference outputs: the model as given, run as stored), the unrewritten graph (shapes fixed,
    as onnxruntime loads it) and onnxruntime's own noise on it. The noise (three more runs of that graph
    over the samples) is measured only when a rewrite moves an output beyond the floors the limits never
    go below (:func:`edgepack.rewrite_check.within_floor`)."""

    path: Path
    outputs: Sequence[dict]  # the reference outputs (a Pending while the lane computes them)
    measure: Callable[[], Noise]
    samples: int

    @property
    def unoptimized(self) -> tuple[dict, ...]:
        return tuple(self.outputs)

    def check(self, dev) -> tuple[bool, str]:
        floor = within_floor(dev)
        if floor is not None:
            return True, floor
        try:
            noise = self.measure()
        except StageError as exc:  # the original's own runs failed: not the rewrite's failure, the target's
            raise _NoiseFailed(str(exc)) from exc
        return noise.check(dev)


class _NoiseFailed(StageError):
    """Measuring onnxruntime's noise on the unrewritten graph failed (as it failed the target before the
    noise was measured lazily): never recorded as a rewrite that did not pass."""


@dataclass(frozen=True)
class _Rewritten:
    path: Path
    counts: dict[str, int]
    basic: bool  # onnxruntime's basic optimizations applied
    check: str  # what the check showed


def _inputs_key(inputs) -> str:
    h = hashlib.sha256()
    for feed in inputs:
        for name in sorted(feed):
            arr = feed[name]
            h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def _baseline(ctx: Context, m: ModelState, proto: onnx.ModelProto) -> _Baseline:
    """Write the unrewritten graph; its noise is measured (when needed) once per build."""
    dst = ctx.work / f"{m.name}.unrewritten.onnx"
    ort_optimize(proto, m.source.path.parent.resolve(), dst, "disable", m.source.info.weight_bytes)
    hold = list(m.verify_inputs)

    own = {t.name: tuple(t.shape) for t in m.source.info.inputs if t.shape is not None}
    refixed = m.fixed_shapes and any(own.get(k) != tuple(v) for k, v in m.shapes.items())

    def loads():
        # shapes the model did not have: the sessions the graph is run in must load (not run) now, so a
        # graph onnxruntime cannot load at them falls back to its dynamic dimensions here
        for level in ("disable", *NOISE_LEVELS) if refixed else ():
            session(dst, 1, level)
        return True

    def noise():  # onnxruntime's default level too: the unrewritten graph as a default session runs it
        return measure_noise(dst, hold, list(m.reference_outputs), run_model(dst, hold))

    if ctx.memo is None:
        loads()
        return _Baseline(dst, m.reference_outputs, functools.cache(noise), len(hold))
    fixed = tuple(sorted((k, tuple(v)) for k, v in m.shapes.items())) if m.fixed_shapes else None
    key = ("rewrite-baseline", m.source.info.sha256, fixed, _inputs_key(hold))
    ctx.memo.get_or_compute(key, loads)
    return _Baseline(dst, m.reference_outputs, lambda: ctx.memo.get_or_compute(("rewrite-noise", *key[1:]), noise),
                     len(hold))


def _checked(ctx: Context, m: ModelState, base: _Baseline, proto: onnx.ModelProto, ops: frozenset[str], stem: str,
             what: str, decisions: list[str], ahead: dict | None = None) -> _Rewritten | None:
    """``proto`` with ``ops`` decomposed and basic optimizations, checked against the baseline; without
    the decompositions if they were what failed. None when no variant passes (each failure recorded).

    With ``ahead`` (a dict), the first variant's check runs on the background lane while the quantize
    stage's first candidate is built from it (:func:`edgepack.stages.quantize.build_ahead`): the recipe
    and seconds go into ``ahead``. Whether the variant passes is decided, as always, by its check."""
    model_dir = m.source.path.parent.resolve()
    for i, attempt in enumerate([ops, frozenset()] if ops else [frozenset()]):
        label = f"{what} with {sorted(attempt)} decomposed" if attempt else what
        dst = ctx.work / f"{stem}.onnx"
        try:
            counts = prepare_graph(proto, model_dir, dst, decompose_ops=attempt, weight_bytes=m.source.info.weight_bytes)
            runs = queue_model_runs(dst, list(m.verify_inputs), level="disable")
            try:
                if ahead is not None and i == 0:
                    _build_ahead(ctx, replace(m, current=dst, prepared=dst), ahead)
                outputs = runs.result()
            finally:
                runs.cancel()  # nothing left once they ran; the rest when this failed first
            ok, why = base.check(deviation(list(base.unoptimized), outputs))
        except _NoiseFailed:
            raise
        except StageError as exc:
            ok, why = False, str(exc)
        if ok:
            return _Rewritten(dst, counts, True, why)
        decisions.append(f"{m.name}: {label} skipped: {why}")
    return None


def _build_ahead(ctx: Context, m: ModelState, ahead: dict) -> None:
    import time

    from .quantize import build_ahead

    start = time.perf_counter()
    recipe = build_ahead(ctx, m)
    if recipe is not None:
        ahead[m.name] = {"recipe": recipe, "seconds": round(time.perf_counter() - start, 3),
                         "what": "the quantize stage's first candidate, built while the rewrite check ran "
                                 "(the stage reuses it): counted in the prepare stage's seconds"}


def _keep_int8_weights(ctx: Context, m: ModelState, folded: Path, kept: Path, decisions: list[str],
                       what: str = "weights") -> bool:
    """Weight-only int8 kept as DequantizeLinear is 4x smaller but dequantizes on every inference.
    Accelerator targets keep it (download size); CPU targets keep it unless it runs more than
    MAX_SLOWDOWN slower than the fp32-folded model on this host."""
    if ctx.target.is_accelerator:
        decisions.append(f"{m.name}: weight-only int8 weights kept int8 (DequantizeLinear): 4x smaller download")
        return True
    stand = stands_in(ctx.target)
    if not stand.ok:  # no host timing for a processor the host is not: the cost model, else the model as given
        return _keep_int8_weights_estimated(ctx, m, folded, kept, decisions, what, stand.why)
    settings = host_settings(ctx.target)
    settings["disabled_optimizers"] = [*settings["disabled_optimizers"], "QDQSelectorActionTransformer"]
    ratio = compare_latency(folded, kept, m.verify_inputs[0], clear_of=MAX_SLOWDOWN, **settings)["ratio"]
    if ratio is not None and ratio > MAX_SLOWDOWN:
        decisions.append(f"{m.name}: weight-only int8 {what} folded to fp32: dequantizing them on every inference "
                         f"ran more than {MAX_SLOWDOWN - 1:.0%} slower on the host (they grow about 4x)")
        return False
    decisions.append(f"{m.name}: weight-only int8 {what} kept int8: 4x smaller, "
                     f"within {MAX_SLOWDOWN - 1:.0%} of the fp32-folded speed on the host")
    return True


def _keep_int8_weights_estimated(ctx: Context, m: ModelState, folded: Path, kept: Path, decisions: list[str],
                                 what: str, why: str) -> bool:
    """The weight-only int8 gate of a cross-build: the target's cost model prices the kept and the folded
    graph; where it cannot, the weights stay as the model gives them (int8, 4x smaller)."""
    from ..speed_basis import estimated_ratio, onnx_errors

    try:
        ratio, _ = estimated_ratio(ctx.target, folded, kept, "fp32", m.verify_inputs[0])
    except (ValueError, KeyError, TypeError, ArithmeticError, StageError, *onnx_errors()) as exc:
        decisions.append(f"{m.name}: weight-only int8 {what} kept int8 as the model gives them: 4x smaller; their speed "
                         f"on the target is not measured here ({why}) and the cost model could not price them "
                         f"({first_line(exc)})")
        return True
    if ratio > MAX_SLOWDOWN:
        decisions.append(f"{m.name}: weight-only int8 {what} folded to fp32: the cost model estimates dequantizing them "
                         f"on every inference at {ratio:.2f}x the fp32-folded latency on the target ({why})")
        return False
    decisions.append(f"{m.name}: weight-only int8 {what} kept int8: 4x smaller, estimated {ratio:.2f}x the "
                     f"fp32-folded latency on the target by the cost model ({why})")
    return True


def _fixed_or_dynamic(ctx: Context, m: ModelState, decisions: list[str]) -> tuple[ModelState, onnx.ModelProto, _Baseline]:
    """The model's graph with its shapes fixed (when the plan fixes them) and its baseline; the
    model's own dynamic dimensions when onnxruntime rejects the fixed ones."""
    proto = m.source.proto
    if not m.fixed_shapes:
        decisions.append(f"{m.name}: dynamic dimensions kept (target shape policy '{ctx.target.shape_policy}')")
        return m, proto, _baseline(ctx, m, proto)
    fixed = {k: tuple(v) for k, v in m.shapes.items()}
    try:
        fixed_proto = fix_input_shapes(proto, fixed)  # type: ignore[arg-type]
        base = _baseline(ctx, m, fixed_proto)
    except StageError as exc:
        if "cannot load" not in str(exc):
            raise
        # e.g. an If whose inactive branch only type-checks for other input sizes
        why = first_line(exc.__cause__) if exc.__cause__ is not None else str(exc)
        decisions.append(f"{m.name}: fixed shapes rejected by onnxruntime's shape inference ({why}); "
                         "kept the model's dynamic dimensions")
        m = replace(m, fixed_shapes=False, shapes={t.name: t.shape for t in m.source.info.inputs})
        return m, proto, _baseline(ctx, m, proto)
    decisions.append(f"{m.name}: input shapes fixed to "
                     + ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in fixed.items()))
    return m, fixed_proto, base


def _prepare_one(ctx: Context, m: ModelState, decisions: list[str], ahead: dict) -> ModelState:
    profile = ctx.target
    m, proto, base = _fixed_or_dynamic(ctx, m, decisions)
    ops = partition.decomposable_ops(profile, set(m.source.info.op_histogram)) if profile.is_accelerator else frozenset()
    protected_proto, protected = protect_weight_only_int8(proto)
    # the first candidate is built ahead only where the checked graph is the one the quantize stage gets
    chosen = _checked(ctx, m, base, proto, ops, f"{m.name}.prepared", "onnxruntime basic optimization", decisions,
                      None if protected else ahead)
    if chosen is None:
        decisions.append(f"{m.name}: kept the unrewritten graph{' (input shapes fixed)' if m.fixed_shapes else ''}: "
                         "no rewrite passed its check")
        chosen = _Rewritten(base.path, {}, False, "")
    dq_kept = False  # weight-only int8 MatMul/Conv weights shipped as DequantizeLinear
    if protected:
        kept = _checked(ctx, m, base, protected_proto, ops, f"{m.name}.prepared-int8w",
                        "weight-only int8 kept as DequantizeLinear", decisions)
        if kept is not None and _keep_int8_weights(ctx, m, chosen.path, kept.path, decisions):
            chosen, dq_kept = kept, True
        elif kept is not None:
            tables_proto, tables = protect_weight_only_int8(proto, tables_only=True)
            if tables:
                kept = _checked(ctx, m, base, tables_proto, ops, f"{m.name}.prepared-int8t",
                                "int8 embedding tables kept as DequantizeLinear", decisions)
                if kept is not None and _keep_int8_weights(ctx, m, chosen.path, kept.path, decisions,
                                                           what="embedding tables"):
                    chosen = kept
    for op, n in sorted(chosen.counts.items()):
        decisions.append(f"{m.name}: decomposed {n} {op} node(s) into {'/'.join(DECOMPOSITIONS[op])} for {profile.execution_provider}")
    if chosen.basic:
        before = m.source.info.nodes_total
        optimized = onnx.load_model(str(chosen.path), load_external_data=False)
        after = sum(len(g.node) for g in iter_graphs(optimized.graph))
        decisions.append(
            f"{m.name}: onnxruntime basic optimizations (constant folding, BatchNormalization folding): "
            f"{before} -> {after} nodes (all graphs); checked on {base.samples} samples against the original "
            f"run with the same session settings: {chosen.check}"
        )
    coverage = backend_for(profile).prepared_coverage(chosen.path, profile)
    if coverage is not None:
        decisions.append(f"{m.name}: after prepare {coverage.nodes_on_accelerator}/{coverage.nodes_total} nodes "
                         f"on {profile.execution_provider} in {coverage.partitions} partition(s)")
    return replace(m, current=chosen.path, prepared=chosen.path, coverage=coverage, weight_only_int8=dq_kept)


def prepare_stage(ctx: Context, decisions: list[str]) -> Context:
    ahead: dict = {}
    ctx = ctx.with_models([_prepare_one(ctx, m, decisions, ahead) for m in ctx.models])
    for m in ctx.models:  # the reference outputs the lane computed meanwhile: a sample the fp32 model fails on
        list(m.reference_outputs)  # fails the build here, before any candidate is judged against them
    return ctx.measure("built_ahead", ahead) if ahead else ctx
