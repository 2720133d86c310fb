"""The speed gate of CPU targets, on evidence about the target (issue #22).

A candidate recipe that would run more than MAX_SLOWDOWN slower than fp32 on the device is dropped.
What that judgement rests on depends on whether the build host can stand in for the target's
processor (:func:`edgepack.cross.stands_in`):

* **host measurement** - the host is the same ISA family with the profile's ISA features: the
  backend's interleaved host timing decides (the host runs the same kernels the device will);
* **cost model** - otherwise: the candidate and the fp32 model are priced by the per-node cost model
  (:mod:`edgepack.estimate.latency`) from the profile's figures (``[device]`` peak_gops per precision,
  bandwidth, dispatch overhead), and the estimated ratio decides. The profile's rules came first: a
  recipe is tried only for the model classes it ``applies_to`` (dynamic int8 never for CNNs -
  ConvInteger is slower than fp32 on ARM and x86, onnxruntime#9694), and a profile that lists fp16 for
  a CPU without fp16 arithmetic is refused when it is loaded.

The host timing is run only where it decides (issue #20: each model runs once per purpose): on the
stand-in path it is kept in the build record (``candidate_latency``, ``decides``: true); off it the
candidate is not timed on the host at all (the shipped artifact's host timing is still measured, once,
by the verify stage: ``host_latency``). The manifest's attempt records what the decision rested on
(``speed``) in words that name no host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cross import stands_in
from .errors import EdgepackError, first_line
from .gates import MAX_SLOWDOWN

HOST = "host measurement"
COST_MODEL = "cost model"
RULES = "profile rules"


def onnx_errors() -> tuple[type[BaseException], ...]:
    import onnx

    return (onnx.shape_inference.InferenceError, onnx.checker.ValidationError)


@dataclass(frozen=True)
class SpeedCheck:
    dropped: str | None  # the reason the candidate is dropped, None when it passes
    basis: dict | None  # manifest: what the decision rested on (no host names, no timings)
    host_latency: dict | None  # build record: the host timing, with "decides"


def _analysis_model(path: Path, sample: dict):
    """``path`` without its weights, its inputs fixed to the sample's shapes, shape-inferred."""
    import onnx

    from .transforms import infer_shapes

    model = onnx.load_model(str(path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name in sample:
            dims = inp.type.tensor_type.shape.dim
            for d, n in zip(dims, sample[inp.name].shape):
                d.Clear()
                d.dim_value = int(n)
    return infer_shapes(model)


def estimated_ratio(profile, reference: Path, candidate: Path, precision: str, sample: dict) -> tuple[float, dict]:
    """(candidate / fp32 estimated latency on the device, the two estimates in ms)."""
    from .estimate.latency import estimate_latency

    ref = estimate_latency(_analysis_model(reference, sample), profile, "fp32").value
    cand = estimate_latency(_analysis_model(candidate, sample), profile, precision).value
    return (cand / ref if ref > 0 else 1.0), {"fp32_ms": float(f"{ref:.4g}"), "candidate_ms": float(f"{cand:.4g}")}


def _estimated(ctx, profile, reference: Path, candidate: Path, precision: str, sample: dict) -> tuple[float, dict]:
    """:func:`estimated_ratio`, once per build for the same files, profile, precision and input shapes (the
    prepare stage may have priced the first candidate already: :func:`edgepack.stages.quantize.build_ahead`)."""
    if ctx.memo is None:
        return estimated_ratio(profile, reference, candidate, precision, sample)
    shapes = tuple(sorted((k, tuple(getattr(v, "shape", ()))) for k, v in sample.items()))
    key = ("speed-estimate", profile.name, ctx.memo.file_key(reference), ctx.memo.file_key(candidate), precision, shapes)
    return ctx.memo.get_or_compute(key, lambda: estimated_ratio(profile, reference, candidate, precision, sample))


def check_speed(ctx, backend, m, recipe, candidate, reference: Path) -> SpeedCheck:
    """The speed gate for one judged candidate (nothing where the backend's gate does not apply)."""
    if not backend.speed_gate_applies(ctx, recipe):
        return SpeedCheck(None, None, None)
    profile = ctx.target
    stand = stands_in(profile)
    limit = f"{MAX_SLOWDOWN - 1:.0%}"
    if stand.ok:
        lat = backend.time_candidate(ctx, m, recipe, candidate, reference) or {}  # {}: nothing timed (no slowdown)
        basis = {"rests_on": HOST, "why": stand.why}
        slow = lat.get("ratio") is not None and lat["ratio"] > MAX_SLOWDOWN
        reason = (f"more than {limit} slower than {backend.speed_reference} on the host, which stands in for the target "
                  "(see the build record for the timings)")
        return SpeedCheck(reason if slow else None, basis, {**lat, "decides": True})
    graph = candidate.path if candidate.path.suffix == ".onnx" else m.prepared
    try:
        ratio, est = _estimated(ctx, profile, m.prepared, graph, recipe.precision, m.verify_inputs[0])
    except (ValueError, KeyError, TypeError, ArithmeticError, EdgepackError, *onnx_errors()) as exc:
        # nothing on the target to price it with: the profile's rules (it lists the recipe for this class) stand
        basis = {"rests_on": RULES, "why": f"{stand.why}, and the cost model could not price this graph "
                                            f"({first_line(exc)}): the profile lists the recipe for this model class"}
        return SpeedCheck(None, basis, None)
    figures = sorted({p for u in profile.device.units if u.kind == "cpu" for p in u.peak_gops})
    basis = {"rests_on": COST_MODEL, "why": stand.why + ": the candidate is not timed on the host", "estimated_ratio": float(f"{ratio:.3g}"), **est,
             "method": f"per-node roofline cost model with {profile.name}'s [device] figures "
                       f"(cpu peak_gops for {'/'.join(figures)}; memory bandwidth; dispatch overhead)"}
    reason = (f"estimated {ratio:.2f}x the fp32 latency on the target (more than {limit} slower; cost model, "
              "the build host cannot stand in for the target)")
    return SpeedCheck(reason if ratio > MAX_SLOWDOWN else None, basis, None)
