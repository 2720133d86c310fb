"""estimate: size, latency and energy of each shipped model on the target device (edgepack.estimate).

Computed from the shipped graph (in ONNX form), the bundle's files and operator config, and the
target profile's published figures: the same inputs give the same estimates, so they belong in the
manifest. They are labelled estimates, with method, band and assumptions.
"""

from __future__ import annotations

from dataclasses import replace

from ..backends import backend_for
from ..pipeline import Context


def estimate_stage(ctx: Context, decisions: list[str]) -> Context:
    from ..estimate import estimate_bundle

    backend = backend_for(ctx.target)
    models = []
    for m in ctx.models:
        precision = m.recipe.precision if m.recipe else "fp32"
        shapes = {k: tuple(v.shape) for k, v in m.verify_inputs[0].items()} if m.verify_inputs else None
        inputs = backend.estimate_inputs(ctx, m)
        est = estimate_bundle(inputs.graph, ctx.target, precision, artifacts=list(inputs.artifacts),
                              coverage=m.coverage, ort_config_ops=inputs.ops_config, shapes=shapes,
                              per_hour=ctx.per_hour, prepared=True)
        lat = est.to_json()["latency_ms"]
        decisions.append(f"{m.name}: estimated {lat['value']:.3g} ms ({lat['low']:.3g}-{lat['high']:.3g}) on "
                         f"{ctx.target.device.name.split(' (')[0]} at {precision}: {lat['method']}")
        models.append(replace(m, estimates=est))
    return ctx.with_models(models)
