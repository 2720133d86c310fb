"""verify: the shipped artifact against the fp32 original on the held-out inputs, and both timed on this host."""

from __future__ import annotations

from dataclasses import replace

from ..errors import StageError
from ..gates import accept, compare_outputs, round_metrics
from ..runtime.ort import host_settings, run_model
from ..runtime.timing import compare_latency
from ..target import Tolerance


def verify_stage(ctx, decisions: list[str]):
    """Check every shipped artifact against the fp32 original; measure both on this host."""
    models = []
    measured = {}
    for m in ctx.models:
        # exactly the stored graph: a minimal build applies no further optimizations to a .ort
        outs = run_model(m.artifact, list(m.verify_inputs), level="disable")
        metrics = round_metrics(compare_outputs(list(m.reference_outputs), outs))
        tol = m.recipe["tolerance"]
        ok, why = accept(metrics, Tolerance(**tol))
        if not ok:
            msg = f"{m.name}: the shipped {m.artifact.name} fails verification against the fp32 original: {why}"
            raise StageError(msg)
        decisions.append(f"{m.name}: shipped {m.artifact.name} verified against the fp32 original: {why}")
        verification = {"passed": True, "inputs": list(m.input_notes), "tolerance": tol, "outputs": metrics}
        settings = host_settings(ctx.target)
        lat = compare_latency(m.source.path, m.artifact, m.verify_inputs[0], **settings)
        measured[m.name] = {"where": "this build host, onnxruntime CPUExecutionProvider (a measurement of the host, "
                                     "not of the target device)",
                            "session": {**settings, "lean": lat.get("lean", False)},
                            "fp32_original": lat["ref"], "shipped": lat["cand"], "ratio": lat["ratio"]}
        models.append(replace(m, verification=verification))
    return ctx.with_models(models).measure("host_latency", measured)
