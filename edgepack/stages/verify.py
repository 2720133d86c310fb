"""verify: the shipped artifact against the fp32 original on the verification inputs, run as the device's
runtime will run it (the backend's runner), judged by the same function, metrics and bars that chose the
recipe (:func:`edgepack.judge.check_artifact`; the runs are shared, so an artifact the selection already
judged is not run again), and both timed on this host (build record only)."""

from __future__ import annotations

from dataclasses import replace

from ..backends import backend_for
from ..errors import StageError
from ..judge import check_artifact, checked_json, verification
from ..pipeline import Context


def verify_stage(ctx: Context, decisions: list[str]) -> Context:
    """Check every shipped artifact against the fp32 original; measure both on this host."""
    backend = backend_for(ctx.target)
    models = []
    measured = {}
    for m in ctx.models:
        judgement = check_artifact(ctx, backend, m)
        record = verification(judgement, m, m.recipe.tolerance, checked_json(ctx, backend, m))
        if not judgement.passed:
            msg = f"{m.name}: the shipped {m.artifact.name} fails verification against the fp32 original: {judgement.reason}"
            raise StageError(msg)
        decisions.append(f"{m.name}: shipped {m.artifact.name} checked against the fp32 original"
                         f"{backend.verified_on(ctx.target)}: {record.summary}")
        measured[m.name] = backend.measure_shipped(ctx, m)
        models.append(replace(m, verification=record))
    return ctx.with_models(models).measure("host_latency", measured)
