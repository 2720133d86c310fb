"""quantize: try the profile's recipes in order; ship the first that passes. One selector for every backend.

The backend builds each candidate and runs it; the selector judges it the same way for all of them.
A candidate is dropped when it cannot be built or run, when it quantized nothing or does not make
the model smaller, when its outputs fall outside the recipe's tolerance against the fp32 original,
or when the backend's host speed gate applies and it runs more than MAX_SLOWDOWN slower than fp32
on this host (dynamic int8 on a CNN is several times slower than fp32 - that trap must never ship).
Static int8 needs calibration data: without it, it is skipped, never guessed from random numbers.
Every outcome is an :class:`~edgepack.records.Attempt` and a recorded decision. Latency figures go
to the build record, not into decisions, so bundles stay byte-identical from build to build.
"""

from __future__ import annotations

from dataclasses import replace

import onnx

from ..backends import backend_for
from ..backends.base import MAX_REFINE_ATTEMPTS, Verdict
from ..errors import StageError
from ..flops import classify_model
from ..gates import MAX_SLOWDOWN, accept, compare_outputs, round_metrics
from ..pipeline import Context, ModelState
from ..records import CHOSEN, DROPPED, SKIPPED, Attempt, RecipeChoice


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _try(ctx: Context, backend, m: ModelState, recipe, model_class: str, reference, host: dict):
    """One recipe: (Attempt, Candidate or None)."""
    if recipe.applies_to not in ("any", model_class):
        return Attempt(recipe.name, SKIPPED, f"it applies to {recipe.applies_to} models"), None
    if recipe.needs_calibration and not m.calibration:
        return Attempt(recipe.name, SKIPPED, "no calibration data (--calibration DIR); "
                                             "static int8 is not guessed from random numbers"), None
    try:
        if recipe.name not in backend.recipes:
            msg = f"recipe '{recipe.name}' has no {backend.label} implementation ({_listed(backend.recipes)} do)"
            raise StageError(msg)
        candidate = backend.build_candidate(ctx, m, recipe, model_class, reference)
        outputs = backend.run(candidate.path, list(m.verify_inputs), ctx.target)
    except StageError as exc:  # a recipe that cannot be applied to this model is a dropped candidate
        return Attempt(recipe.name, DROPPED, str(exc)), None
    if candidate.empty:
        return Attempt(recipe.name, DROPPED, candidate.empty), None
    if not recipe.is_fp32 and candidate.bytes_after >= candidate.bytes_fp32:
        return Attempt(recipe.name, DROPPED, f"it does not make the {backend.artifact_noun} smaller"), None
    metrics = round_metrics(compare_outputs(list(m.reference_outputs), outputs))
    ok, why = accept(metrics, recipe.tolerance)
    if not ok:  # mixed precision: the backend may keep what failed in float and try again (bounded)
        candidate, outputs, metrics, ok, why = _refine(ctx, backend, m, recipe, candidate, outputs, metrics, why, host)
    if not ok:
        return Attempt(recipe.name, DROPPED, f"outside tolerance ({why})", metrics), None
    lat = backend.time_candidate(ctx, m, recipe, candidate, reference)
    if lat is not None:
        host.setdefault(m.name, []).append(lat)
        if lat["ratio"] is not None and lat["ratio"] > MAX_SLOWDOWN:
            return Attempt(recipe.name, DROPPED, f"more than {MAX_SLOWDOWN - 1:.0%} slower than "
                                                 f"{backend.speed_reference} on the host (see the build record for "
                                                 "the timings)", metrics, lat), None
    return Attempt(recipe.name, CHOSEN, why, metrics, lat), candidate


def _refine(ctx: Context, backend, m: ModelState, recipe, candidate, outputs, metrics, why: str, host: dict):
    """Up to MAX_REFINE_ATTEMPTS refined candidates from the backend, each judged like the first."""
    import time

    start, ok, tried = time.perf_counter(), False, 0
    for attempt in range(1, MAX_REFINE_ATTEMPTS + 1):
        try:
            refined = backend.refine_candidate(ctx, m, recipe, candidate, Verdict(ok, why, metrics, outputs), attempt)
            if refined is None or refined.bytes_after >= refined.bytes_fp32:
                break
            outputs = backend.run(refined.path, list(m.verify_inputs), ctx.target)
        except StageError as exc:
            why = f"{why}; mixed-precision attempt {attempt} failed: {exc}"
            break
        candidate, metrics, tried = refined, round_metrics(compare_outputs(list(m.reference_outputs), outputs)), attempt
        ok, why = accept(metrics, recipe.tolerance)
        why = f"mixed precision, attempt {attempt}: {why}"
        if ok:
            break
    if tried:
        host.setdefault(m.name, []).append({"recipe": recipe.name, "mixed_precision_attempts": tried,
                                            "mixed_precision_seconds": round(time.perf_counter() - start, 3)})
    return candidate, outputs, metrics, ok, why


def _choose(ctx: Context, m: ModelState, decisions: list[str], host: dict) -> ModelState:
    profile = ctx.target
    backend = backend_for(profile)
    model_class = classify_model(onnx.load_model(str(m.prepared), load_external_data=False))
    decisions.append(f"{m.name}: model class '{model_class}'")
    m, reference = backend.prepare_candidates(ctx, m, model_class, decisions, host)
    attempts: list[Attempt] = []
    for recipe in profile.recipes:
        attempt, candidate = _try(ctx, backend, m, recipe, model_class, reference, host)
        attempts.append(attempt)
        decisions.append(attempt.decision(m.name))
        if candidate is None:
            continue
        choice = RecipeChoice(recipe.name, recipe.reason, recipe.tolerance, candidate.settings, model_class,
                              candidate.bytes_fp32, candidate.bytes_after, candidate.ops_after, candidate.notes,
                              attempt.metrics or {}, tuple(attempts))
        coverage = backend.chosen(ctx, m, candidate, decisions)
        return replace(m, current=candidate.path, recipe=choice, model_class=model_class, coverage=coverage)
    tried = "; ".join(f"{a.recipe} dropped: {a.reason}" for a in attempts if a.outcome == DROPPED)
    msg = f"{m.name}: no quantization recipe of {profile.name} passed its checks ({tried or 'none applicable'})"
    raise StageError(msg)


def quantize_stage(ctx: Context, decisions: list[str]) -> Context:
    host: dict = {}
    models = [_choose(ctx, m, decisions, host) for m in ctx.models]
    ctx = ctx.with_models(models)
    return ctx.measure("candidate_latency", host) if host else ctx
