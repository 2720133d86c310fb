"""estimate: size, latency and energy of each shipped model on the target device (edgepack.estimate).

Computed from the shipped graph (in ONNX form), the bundle's files and operator config, and the
target profile's published figures: the same inputs give the same estimates, so they belong in the
manifest. They are labelled estimates, with method, band and assumptions.
"""

from __future__ import annotations

from dataclasses import replace

from ..pipeline import Context
from .reduce import CONFIG_NAME

_PRECISION = {"static-int8": "int8", "dynamic-int8": "int8", "fp16": "fp16", "none": "fp32"}


def estimate_stage(ctx: Context, decisions: list[str]) -> Context:
    from ..estimate import estimate_bundle

    config = ctx.files.get(CONFIG_NAME)
    models = []
    for m in ctx.models:
        precision = _PRECISION.get((m.recipe or {}).get("recipe", "none"), "fp32")
        shapes = {k: tuple(v.shape) for k, v in m.verify_inputs[0].items()} if m.verify_inputs else None
        artifacts = [m.artifact, *[e for e in m.artifact_extra if e.suffix != ".ort"]]
        graph = m.current if m.current.suffix == ".onnx" else m.prepared  # an OpenVINO IR: its fp32 ONNX source
        est = estimate_bundle(graph, ctx.target, precision, artifacts=artifacts, coverage=m.coverage,
                              ort_config_ops=config, shapes=shapes, per_hour=ctx.per_hour)
        lat = est["latency_ms"]
        decisions.append(f"{m.name}: estimated {lat['value']:.3g} ms ({lat['low']:.3g}-{lat['high']:.3g}) on "
                         f"{ctx.target.device.name.split(' (')[0]} at {precision}: {lat['method']}")
        models.append(replace(m, estimates=est))
    return ctx.with_models(models)
