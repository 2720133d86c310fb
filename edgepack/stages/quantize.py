"""quantize: try the profile's recipes in order; ship the first whose *converted artifact* passes. One
selector for every backend.

The backend builds each candidate; the candidate is converted to the file the bundle would ship
(``.ort``, IR) and that file is judged (:func:`edgepack.judge.check_artifact`: the metrics of each
output's kind, the user's own metric) - conversion can change numerics (onnxruntime's fixed-style
fusions, QDQ to QLinear), so the artifact's check is the one that counts, and a recipe whose artifact
fails falls through to the next recipe. A candidate is dropped when it cannot be built, converted or
run (a foreign tool's crash is one line naming the tool, step and node), when it quantized nothing or
does not make the model smaller, when its artifact is outside the recipe's tolerance, or when the
backend's speed gate applies and it would run more than MAX_SLOWDOWN slower than fp32 on the target -
timed on this host only where the host can stand in for the target's processor, else estimated by the
cost model (:mod:`edgepack.speed_basis`; dynamic int8 on a CNN is several times slower than fp32 - that
trap must never ship). Static int8
needs calibration data: without it, it is skipped, never guessed from random numbers. Every outcome
is an :class:`~edgepack.records.Attempt` and a recorded decision. Latency figures go to the build
record, not into decisions, so bundles stay byte-identical from build to build.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx

from .. import foreign, on_target
from ..backends import backend_for
from ..backends.base import MAX_REFINE_ATTEMPTS
from ..cross import int8_judgement_note, int8_kernels, stands_in
from ..errors import EdgepackError, StageError
from ..estimate.size import deflate_ahead
from ..flops import classify, sample_shapes
from ..judge import check_artifact
from ..pipeline import Context, ModelState
from ..records import CHOSEN, DROPPED, SKIPPED, Attempt, RecipeChoice
from ..speed_basis import check_speed


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]


def _guarded(what: str, tool: str, step: str, fn):
    """``fn()``; a foreign tool's crash inside it becomes one StageError line (tool, step, node)."""
    try:
        return fn()
    except EdgepackError:
        raise
    except Exception as exc:  # noqa: BLE001 - sorted: a tool's crash is this candidate's failure, else a bug
        if not foreign.is_foreign(exc):
            raise
        raise StageError(f"{what}: {foreign.describe(exc, tool, step)}") from exc


def _choice(recipe, model_class: str, candidate, metrics: dict, attempts) -> RecipeChoice:
    return RecipeChoice(recipe.name, recipe.reason, recipe.tolerance, candidate.settings, model_class,
                        candidate.bytes_fp32, candidate.bytes_after, candidate.ops_after, candidate.notes,
                        metrics, tuple(attempts))


def _skipped(m: ModelState, recipe, model_class: str) -> str | None:
    """Why ``recipe`` is not tried on ``m`` at all, or None."""
    if recipe.applies_to not in ("any", model_class):
        return f"it applies to {recipe.applies_to} models"
    if recipe.name in m.unfit:  # planned before any stage ran (edgepack.limits_plan)
        return m.unfit[recipe.name]
    if recipe.needs_calibration and not m.calibration:
        return "no calibration data (--calibration DIR); static int8 is not guessed from random numbers"
    return None


def _grows(recipe, candidate) -> bool:
    """A quantized candidate no smaller than the fp32 model (dropped: it does not shrink anything)."""
    return not recipe.is_fp32 and candidate.bytes_after >= candidate.bytes_fp32


def _classify(ctx: Context, m: ModelState) -> tuple[str, str]:
    shapes = sample_shapes(m.verify_inputs)

    def compute():
        return classify(onnx.load_model(str(m.prepared), load_external_data=False), shapes)

    if ctx.memo is None:
        return compute()
    key = ("class", ctx.memo.file_key(m.prepared), tuple(sorted((k, tuple(v)) for k, v in shapes.items())))
    return ctx.memo.get_or_compute(key, compute)


def build_ahead(ctx: Context, m: ModelState) -> str | None:
    """Build, convert and run the candidate this stage will try first for ``m``, ahead of the stage:
    called by the prepare stage while its check of ``m.prepared`` runs on the background lane, so the
    two overlap. Candidates, conversions and runs are memoized, so the stage finds this work done;
    nothing is decided or recorded here, and a failure is left for the stage to meet (it does the work
    again and records why). Returns the recipe built, or None."""
    backend = backend_for(ctx.target)
    try:
        model_class, _ = _classify(ctx, m)
        if not backend.builds_ahead(ctx, m, model_class):
            return None
        for recipe in ctx.target.recipes:
            if _skipped(m, recipe, model_class) is None:
                if recipe.name not in backend.recipes:
                    return None
                candidate = backend.build_candidate(ctx, m, recipe, model_class, m.prepared)
                if not candidate.empty and not _grows(recipe, candidate):
                    state = _judged(ctx, backend, m, recipe, model_class, candidate)[0]
                    for path in (state.artifact, *state.companions) if state is not None else ():
                        if path is not None and Path(path).is_file():
                            deflate_ahead(path)  # the download-size estimate's deflate, on the lane
                    if not stands_in(ctx.target).ok:  # priced by the cost model (memoized); host timing waits
                        check_speed(ctx, backend, m, recipe, candidate, m.prepared)  # for a quiet machine
                return recipe.name
    except Exception:  # noqa: BLE001 - the stage does the same work again and reports what fails
        return None
    return None


def _try(ctx: Context, backend, m: ModelState, recipe, model_class: str, reference, host: dict):
    """One recipe: (Attempt, converted ModelState or None, candidate or None)."""
    skipped = _skipped(m, recipe, model_class)
    if skipped:
        return Attempt(recipe.name, SKIPPED, skipped), None, None
    try:
        if recipe.name not in backend.recipes:
            msg = f"recipe '{recipe.name}' has no {backend.label} implementation ({_listed(backend.recipes)} do)"
            raise StageError(msg)
        candidate = _guarded(f"building the {recipe.name} candidate", backend.label, recipe.name,
                             lambda: backend.build_candidate(ctx, m, recipe, model_class, reference))
    except StageError as exc:  # a recipe that cannot be applied to this model is a dropped candidate
        return Attempt(recipe.name, DROPPED, str(exc)), None, None
    if candidate.empty:
        return Attempt(recipe.name, DROPPED, candidate.empty), None, None
    if _grows(recipe, candidate):
        return Attempt(recipe.name, DROPPED, f"it does not make the {backend.artifact_noun} smaller"), None, None
    state, notes, judgement, failure = _judged(ctx, backend, m, recipe, model_class, candidate)
    if failure is not None:
        return Attempt(recipe.name, DROPPED, failure), None, None
    if not judgement.passed:  # mixed precision: the backend may keep what failed in float and try again (bounded)
        candidate, state, notes, judgement = _refine(ctx, backend, m, recipe, model_class, candidate, state, notes,
                                                     judgement, host)
    checked = state.artifact.name
    if not judgement.passed:
        return Attempt(recipe.name, DROPPED, f"outside tolerance ({judgement.reason})", judgement.outputs,
                       checked=checked), None, None
    speed = check_speed(ctx, backend, m, recipe, candidate, reference)  # rests on the host only where it stands in
    if speed.host_latency is not None:
        host.setdefault(m.name, []).append(speed.host_latency)
    if speed.dropped:
        return Attempt(recipe.name, DROPPED, speed.dropped, judgement.outputs, speed.host_latency, checked,
                       speed.basis), None, None
    judgement, dropped = on_target.decide(ctx, backend, state, judgement)  # --verify-on-target: the target decides
    if dropped:
        return Attempt(recipe.name, DROPPED, dropped, judgement.outputs, speed.host_latency, checked,
                       speed.basis), None, None
    attempt = Attempt(recipe.name, CHOSEN, judgement.reason, judgement.outputs, speed.host_latency, checked,
                      speed.basis)
    return attempt, replace(state, conversion_notes=tuple(notes)), candidate


def _judged(ctx: Context, backend, m: ModelState, recipe, model_class: str, candidate):
    """Convert ``candidate`` and judge the converted artifact: (state, conversion notes, judgement, None),
    or (None, None, None, why) when it cannot be converted or run."""
    notes: list[str] = []
    state = replace(m, current=candidate.path, recipe=_choice(recipe, model_class, candidate, {}, ()))
    try:
        state = _guarded("converting the candidate", backend.label, "conversion",
                         lambda: backend.convert(ctx, state, notes))
        judgement = _guarded(f"running {state.artifact.name}", backend.label, "running the artifact",
                             lambda: check_artifact(ctx, backend, state))
    except StageError as exc:
        return None, None, None, str(exc)
    return state, notes, judgement, None


def _refine(ctx: Context, backend, m: ModelState, recipe, model_class: str, candidate, state, notes, judgement,
            host: dict):
    """Up to MAX_REFINE_ATTEMPTS candidates from :meth:`Backend.refine_candidate` (each told why the last
    failed), each converted and judged like the first; the first that passes, else the full candidate's
    state with a reason naming both judgements. The attempts and their seconds go to the build record."""
    import time

    start, first, tried, last = time.perf_counter(), (candidate, state, notes, judgement), 0, judgement
    stop = None
    for attempt in range(1, MAX_REFINE_ATTEMPTS + 1):
        try:
            refined = _guarded(f"mixed-precision attempt {attempt}", backend.label, "mixed precision",
                               lambda a=attempt, c=candidate, j=last: backend.refine_candidate(ctx, m, recipe, c, j, a))
        except StageError as exc:
            stop = f"mixed-precision attempt {attempt} failed: {exc}"
            break
        if refined is None:
            break
        if refined.bytes_after >= refined.bytes_fp32:
            stop = f"mixed-precision attempt {attempt} does not make the {backend.artifact_noun} smaller"
            break
        r_state, r_notes, r_judgement, failure = _judged(ctx, backend, m, recipe, model_class, refined)
        tried = attempt
        if failure is not None:
            stop = f"mixed-precision attempt {attempt}: {failure}"
            break
        candidate, last = refined, replace(r_judgement, reason=f"mixed precision, attempt {attempt}: {r_judgement.reason}")
        if last.passed:
            break
    if tried:
        host.setdefault(m.name, []).append({"recipe": recipe.name, "mixed_precision_attempts": tried,
                                            "mixed_precision_seconds": round(time.perf_counter() - start, 3)})
    if tried and last.passed:
        return candidate, r_state, r_notes, last
    reason = first[3].reason
    if tried and last is not first[3]:
        reason += f"; {last.reason}"
    if stop:
        reason += f"; {stop}"
    return first[0], first[1], first[2], replace(first[3], reason=reason)


def _choose(ctx: Context, m: ModelState, decisions: list[str], host: dict) -> ModelState:
    profile = ctx.target
    backend = backend_for(profile)
    model_class, evidence = _classify(ctx, m)
    decisions.append(f"{m.name}: model class '{model_class}' ({evidence})")
    m, reference = backend.prepare_candidates(ctx, m, model_class, decisions, host)
    attempts: list[Attempt] = []
    for recipe in profile.recipes:
        attempt, state, candidate = _try(ctx, backend, m, recipe, model_class, reference, host)
        attempts.append(attempt)
        decisions.append(attempt.decision(m.name))
        if attempt.checked and recipe.precision in ("int8", "int16") and backend.int8_on_host_kernels:
            note = int8_judgement_note(m.name)  # None on hosts whose int8 kernels are the device's
            if note and note not in decisions:
                decisions.append(note)
        if state is None:
            continue
        choice = _choice(recipe, model_class, candidate, attempt.metrics or {}, attempts)
        coverage = backend.chosen(ctx, m, candidate, decisions)
        if state.coverage is not m.coverage:  # the backend's conversion measured the shipped file's coverage
            coverage = state.coverage
        return replace(state, recipe=choice, model_class=model_class, coverage=coverage)
    tried = "; ".join(f"{a.recipe} dropped: {a.reason}" for a in attempts if a.outcome == DROPPED)
    msg = f"{m.name}: no quantization recipe of {profile.name} passed its checks ({tried or 'none applicable'})"
    raise StageError(msg)


def quantize_stage(ctx: Context, decisions: list[str]) -> Context:
    host: dict = {}
    models = [_choose(ctx, m, decisions, host) for m in ctx.models]
    ctx = ctx.with_models(models).measure("host_int8_kernels", {"exact": int8_kernels().ok, "what": int8_kernels().why})
    return ctx.measure("candidate_latency", host) if host else ctx
