"""quantize + verify: try the profile's recipes in order; ship the first that passes.

A candidate is dropped when its outputs fall outside the recipe's tolerance against the fp32
original, or, on CPU targets, when it runs more than 10% slower than the fp32 model on this host
(dynamic int8 on a CNN is several times slower than fp32 — that trap must never ship). Static int8
needs calibration data: without it, it is skipped, never guessed from random numbers. Every drop
is a recorded decision. Latency figures go to the build record, not into decisions, so bundles
stay byte-identical from build to build.
"""

from __future__ import annotations

from dataclasses import replace

import onnx

from ..errors import StageError
from ..partition import coverage_summary
from ..pipeline import Context, ModelState
from .fusion import fuse_transformer
from .quantize import classify_model, quantize
from ..gates import MAX_SLOWDOWN, accept, compare_outputs, round_metrics
from ..runtime.ort import host_settings, run_model
from ..runtime.timing import compare_latency

LATENCY_RUNS = 15


_QUANT_OPS = ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul")


def _added_quant_ops(record: dict) -> bool:
    before, after = record["ops_before"], record["ops_after"]
    return any(after.get(op, 0) > before.get(op, 0) for op in _QUANT_OPS)


def _quantize_shared(ctx: Context, m: ModelState, recipe, dst):
    """quantize(), computed once per (prepared model, recipe settings, accelerator or not) across targets."""
    import shutil

    def compute():
        record = quantize(m.prepared, dst, recipe, list(m.calibration) or None, is_accelerator=ctx.target.is_accelerator)
        if ctx.memo is None:
            return record, None
        keep = ctx.memo.folder / f"{ctx.memo.file_key(dst)}{dst.suffix}"
        shutil.copyfile(dst, keep)
        data = dst.with_name(dst.name + ".data")
        if data.exists():  # large models: weights beside the model
            shutil.copyfile(data, keep.with_name(keep.name + ".data"))
        return record, keep

    if ctx.memo is None:
        return compute()[0]
    key = ("quantize", ctx.memo.file_key(m.prepared), recipe.name, recipe.activation_type, recipe.weight_type,
           recipe.per_channel, ctx.target.is_accelerator, id(m.calibration))
    record, keep = ctx.memo.get_or_compute(key, compute)
    if not dst.exists():
        shutil.copyfile(keep, dst)
        if keep.with_name(keep.name + ".data").exists():
            shutil.copyfile(keep.with_name(keep.name + ".data"), dst.with_name(dst.name + ".data"))
    return record


def _latency_shared(ctx: Context, m: ModelState, dst):
    """The host speed gate's timing, measured once per (fp32, candidate, session settings) across targets."""
    settings = host_settings(ctx.target)

    def compute():
        return compare_latency(m.prepared, dst, m.verify_inputs[0], runs=LATENCY_RUNS, **settings)

    if ctx.memo is None:
        return compute()
    key = ("gate", ctx.memo.file_key(m.prepared), ctx.memo.file_key(dst), settings["level"],
           tuple(settings["disabled_optimizers"]))
    return ctx.memo.get_or_compute(key, compute)


def _choose(ctx: Context, m: ModelState, decisions: list[str], host: dict) -> ModelState:
    profile = ctx.target
    model_class = classify_model(onnx.load_model(str(m.prepared), load_external_data=False))
    decisions.append(f"{m.name}: model class '{model_class}'")
    if profile.execution_provider == "CPU" and model_class == "matmul-heavy":
        m = _fuse(ctx, m, decisions, host)
    attempts = []
    for recipe in profile.recipes:
        if recipe.applies_to not in ("any", model_class):
            decisions.append(f"{m.name}: {recipe.name} skipped: it applies to {recipe.applies_to} models")
            continue
        if recipe.needs_calibration and not m.calibration:
            decisions.append(
                f"{m.name}: {recipe.name} skipped: no calibration data (--calibration DIR); "
                "static int8 is not guessed from random numbers"
            )
            continue
        dst = ctx.work / f"{m.name}.{recipe.name}.onnx"
        try:
            record = _quantize_shared(ctx, m, recipe, dst)
            outputs = run_model(dst, list(m.verify_inputs), level="disable")
        except StageError as exc:  # a recipe that cannot be applied to this model is a dropped candidate
            decisions.append(f"{m.name}: {recipe.name} dropped: {exc}")
            continue
        if recipe.name in ("static-int8", "dynamic-int8") and not _added_quant_ops(record):
            decisions.append(f"{m.name}: {recipe.name} dropped: the quantizer found nothing to quantize")
            continue
        if recipe.name != "none" and record["bytes_after"] >= record["bytes_before"]:
            decisions.append(f"{m.name}: {recipe.name} dropped: it does not make the model smaller")
            continue
        metrics = round_metrics(compare_outputs(list(m.reference_outputs), outputs))
        ok, why = accept(metrics, recipe.tolerance)
        attempt = {"recipe": recipe.name, "passed_accuracy": ok, "accuracy": why}
        if not ok:
            decisions.append(f"{m.name}: {recipe.name} dropped: outside tolerance ({why})")
            attempts.append(attempt)
            continue
        if profile.execution_provider == "CPU" and recipe.name != "none":
            lat = _latency_shared(ctx, m, dst)
            attempt["host_latency"] = lat
            host.setdefault(m.name, []).append({"recipe": recipe.name, **lat})
            if lat["ratio"] > MAX_SLOWDOWN:
                decisions.append(
                    f"{m.name}: {recipe.name} dropped: more than {MAX_SLOWDOWN - 1:.0%} slower than fp32 on the host "
                    "(see the build record for the timings)"
                )
                attempts.append(attempt)
                continue
        decisions.append(f"{m.name}: {recipe.name} chosen: {why}")
        chosen = {
            "recipe": recipe.name,
            "why": recipe.reason,
            "tolerance": {k: v for k, v in vars(recipe.tolerance).items() if v is not None},
            "settings": record["settings"],
            "model_class": model_class,
            "bytes_fp32": record["bytes_before"],
            "bytes_quantized": record["bytes_after"],
            "ops_after": record["ops_after"],
            "notes": record["notes"],
            "candidate_metrics": metrics,
        }
        coverage = m.coverage
        if profile.is_accelerator:
            coverage = coverage_summary(dst, profile)
            decisions.append(f"{m.name}: shipped graph {coverage['nodes_on_accelerator']}/{coverage['nodes_total']} nodes "
                             f"on {profile.execution_provider} in {coverage['partitions']} partition(s)")
            share = coverage["nodes_on_accelerator"] / max(coverage["nodes_total"], 1)
            if coverage["partitions"] > 2 or share < 0.5:
                decisions.append(f"{m.name}: warning: with {coverage['partitions']} partitions covering {share:.0%} of the "
                                 f"nodes, switching between {profile.execution_provider} and the CPU will probably cost "
                                 "more than it gains; compare against a CPU-only session on the device")
        return replace(m, current=dst, recipe=chosen, model_class=model_class, coverage=coverage)
    tried = "; ".join(d.split(": ", 1)[1] for d in decisions if d.startswith(f"{m.name}: ") and "dropped" in d)
    msg = f"{m.name}: no quantization recipe of {profile.name} passed its checks ({tried or 'none applicable'})"
    raise StageError(msg)


def _fuse(ctx: Context, m: ModelState, decisions: list[str], host: dict) -> ModelState:
    """onnxruntime.transformers fusions for transformer encoders on CPU targets, kept where they help."""
    dst = ctx.work / f"{m.name}.fused.onnx"
    record = fuse_transformer(m.prepared, dst, list(m.verify_inputs), list(m.reference_outputs),
                              host=host_settings(ctx.target))
    if record.get("host_latency"):
        host.setdefault(m.name, []).append({"recipe": "transformer-fusion", **record["host_latency"]})
    decisions.append(f"{m.name}: transformer fusion {'applied' if record['applied'] else 'not applied'}: {record['why']}")
    return replace(m, prepared=dst, current=dst) if record["applied"] else m


def quantize_stage(ctx: Context, decisions: list[str]) -> Context:
    host: dict = {}
    models = [_choose(ctx, m, decisions, host) for m in ctx.models]
    ctx = ctx.with_models(models)
    return ctx.measure("candidate_latency", host) if host else ctx
