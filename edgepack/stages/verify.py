"""verify: the shipped artifact against the fp32 original on the verification inputs, run as the device's
runtime will run it (the backend's runner), judged by the same function, metrics and bars that chose the
recipe (:func:`edgepack.judge.check_artifact`; the runs are shared, so an artifact the selection already
judged is not run again), and both timed on this host (build record only). With ``--verify-on-target`` the
judgement of a target its backend can emulate is the one on the target's own runtime build
(:mod:`edgepack.on_target`: the selection already ran it), recorded with where it ran (``ran_on``)."""

from __future__ import annotations

from dataclasses import replace

from .. import on_target
from ..backends import backend_for
from ..errors import StageError
from ..judge import check_artifact, checked_json, verification
from ..pipeline import Context


def verify_stage(ctx: Context, decisions: list[str]) -> Context:
    """Check every shipped artifact against the fp32 original; measure both on this host."""
    backend = backend_for(ctx.target)
    models = []
    measured = {}
    emulated: dict = {}
    for m in ctx.models:
        judgement = check_artifact(ctx, backend, m)
        if judgement.passed:  # the target's runtime judges only what passed on the host (as the selection did)
            judgement, where, ran_on = on_target.verified(ctx, backend, m, judgement, decisions, emulated)
        else:
            where, ran_on = {}, None
        record = replace(verification(judgement, m, m.recipe.tolerance, {**checked_json(ctx, backend, m), **where}),
                         ran_on=ran_on)
        if not judgement.passed:
            msg = f"{m.name}: the shipped {m.artifact.name} fails verification against the fp32 original: {judgement.reason}"
            raise StageError(msg)
        decisions.append(f"{m.name}: shipped {m.artifact.name} checked against the fp32 original"
                         f"{'' if ran_on else backend.verified_on(ctx.target)}: {record.summary}")
        measured[m.name] = backend.measure_shipped(ctx, m)
        models.append(replace(m, verification=record))
    ctx = ctx.with_models(models).measure("host_latency", measured)
    return ctx.measure("on_target", emulated) if emulated else ctx
