"""verify: the shipped artifact against the fp32 original on the held-out inputs, run as the device's
runtime will run it (the backend's runner), and both timed on this host (build record only)."""

from __future__ import annotations

from dataclasses import replace

from ..backends import backend_for
from ..errors import StageError
from ..gates import accept, compare_outputs, round_metrics
from ..pipeline import Context
from ..records import Verification


def verify_stage(ctx: Context, decisions: list[str]) -> Context:
    """Check every shipped artifact against the fp32 original; measure both on this host."""
    backend = backend_for(ctx.target)
    models = []
    measured = {}
    for m in ctx.models:
        outs = backend.run_shipped(ctx, m)
        metrics = round_metrics(compare_outputs(list(m.reference_outputs), outs))
        ok, why = accept(metrics, m.recipe.tolerance)
        if not ok:
            msg = f"{m.name}: the shipped {m.artifact.name} fails verification against the fp32 original: {why}"
            raise StageError(msg)
        decisions.append(f"{m.name}: shipped {m.artifact.name} verified against the fp32 original"
                         f"{backend.verified_on(ctx.target)}: {why}")
        verification = Verification(True, tuple(m.input_notes), m.recipe.tolerance, metrics)
        measured[m.name] = backend.measure_shipped(ctx, m)
        models.append(replace(m, verification=verification))
    return ctx.with_models(models).measure("host_latency", measured)
