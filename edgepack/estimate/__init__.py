"""Estimates of size, latency and energy: each an Estimate(value, low, high, unit, method, assumptions).

``estimate_bundle`` is what the manifest's ``estimates`` and ``inspect --target`` show.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..target import TargetProfile
from . import energy, latency, size
from .base import Estimate

__all__ = ["BundleEstimates", "Estimate", "estimate_bundle", "estimate_model"]


@dataclass(frozen=True)
class BundleEstimates:
    """One model's estimates on one target: app size (with its parts), latency, energy (with the
    figures at the requested rate), and the details they rest on."""

    size: Estimate  # the app-size delta
    size_parts: tuple[tuple[str, Estimate], ...]  # artifact, download, runtime_stock, [runtime_minimal], peak_memory
    latency: Estimate
    energy: Estimate  # per inference
    energy_rates: tuple[tuple[str, Estimate], ...]  # battery or power figures at ``per_hour``
    per_hour: float
    precision: str
    switches: int
    unknown_nodes: int
    coverage_partitions: int | None = None  # the shipped coverage's partitions, beside the estimate's own
    notes: tuple[str, ...] = ()  # what limited the analysis (a shape inference that failed)

    def to_json(self) -> dict[str, Any]:
        details: dict[str, Any] = {"precision": self.precision, "switches": self.switches,
                                   "nodes_with_unknown_shapes": self.unknown_nodes}
        if self.coverage_partitions is not None:
            details["coverage_partitions"] = self.coverage_partitions
        if self.notes:
            details["notes"] = list(self.notes)
        # each top-level entry is an Estimate (the app-size delta, the latency, the energy per inference);
        # its parts ride along as nested Estimates
        return {"size": {**self.size.to_json(), **{k: e.to_json() for k, e in self.size_parts}},
                "latency_ms": self.latency.to_json(),
                "energy": {**self.energy.to_json(), **{k: e.to_json() for k, e in self.energy_rates},
                           "per_hour": self.per_hour},
                "details": details}


def estimate_model(model, profile: TargetProfile, precision: str = "fp32", *, artifacts: list[Path] | None = None,
                   ort_config: str | Path | None = None, per_hour: float = 1000.0,
                   source_bytes: int | None = None) -> BundleEstimates:
    """Estimates for an already shape-inferred ``onnx.ModelProto`` (pure: reads only ``artifacts``/``ort_config``)."""
    b = latency.breakdown(model, profile, precision)
    lat = latency.estimate_latency(model, profile, precision, priced=b)
    if artifacts:
        art, dl = size.model_size([Path(p) for p in artifacts])
    else:
        raw = float(source_bytes if source_bytes is not None else model.ByteSize())
        art = Estimate(raw, raw * 0.9, raw * 1.1, "bytes", "serialized ONNX size (before conversion)",
                       ["the shipped .ort / IR differs by a few percent; quantization changes it entirely"])
        dl = Estimate(raw * 0.9, raw * 0.6, raw * 0.95, "bytes", "estimated: float weights deflate to 60-95%",
                      ["computed by compressing once the bundle exists"])
    stock = size.stock_runtime(profile)
    runtime_code = stock
    minimal = None
    if profile.minimal_build_level != "none":  # an ONNX Runtime minimal build: sized from its operators
        if ort_config is not None:
            n_ops, typed = size.count_config_ops(ort_config)
            src = "the bundle's required_operators_and_types.config"
        else:
            n_ops, typed = len(size.model_ops(model)), False
            src = "the model's operator types (before building)"
        minimal = size.minimal_runtime(profile, n_ops, typed, src)
        if minimal is not None:
            runtime_code = minimal
    delta = size.app_size_delta(dl, runtime_code)
    mem = size.peak_memory(model, runtime_code.value)
    e = energy.energy_per_inference(profile, b.by_unit_us, b.switch_us)
    rate = energy.at_rate(profile, e, per_hour, lat.value)
    parts = (("artifact", art), ("download", dl), ("runtime_stock", stock),
             *((("runtime_minimal", minimal),) if minimal else ()), ("peak_memory", mem))
    return BundleEstimates(delta, parts, lat, e, tuple(rate.items()), per_hour, precision, b.switches, b.unknown_nodes)


def estimate_bundle(model_path: str | Path, profile: TargetProfile, precision: str = "fp32", *,
                    artifacts: list[str | Path] | None = None, coverage: dict | None = None,
                    ort_config_ops: str | Path | None = None, shapes: dict[str, tuple[int, ...]] | None = None,
                    per_hour: float = 1000.0, prepared: bool = False) -> BundleEstimates:
    """Size, latency and energy estimates of one model on one target, as JSON-ready dicts.

    The one estimate path: ``inspect`` (before building), the ``estimate`` stage of ``build`` and
    ``compare``'s fp32 line all call this, so the same model, target and precision give the same number.

    ``model_path``: the .onnx analysed: the shipped graph in ONNX form (``prepared`` True: build has
    already prepared it for the target), or the source model (``prepared`` False: it is prepared here
    exactly as the prepare stage does - shapes fixed, the ops the target's accelerator lacks
    decomposed, basic optimizations - so the partitioning priced is the one a build ships).
    ``artifacts``: the shipped files (sizes, download); None before building.
    ``ort_config_ops``: the bundle's required_operators_and_types.config (path or text); None uses
    the model's op types. ``coverage``: the shipped coverage (a ShippedCoverage); its partition
    count is recorded beside the estimate's own. ``shapes``: input shapes to fix (needed for dynamic models).
    """
    from ..transforms import analysis_graph

    notes: list[str] = []
    decompose = frozenset() if prepared else _decomposable(model_path, profile)
    model = analysis_graph(model_path, shapes, notes, decompose)
    out = estimate_model(model, profile, precision, artifacts=[Path(p) for p in artifacts] if artifacts else None,
                         ort_config=ort_config_ops, per_hour=per_hour, source_bytes=Path(model_path).stat().st_size)
    if notes:
        out = replace(out, notes=tuple(notes))
    return replace(out, coverage_partitions=coverage.partitions) if coverage is not None else out


def _decomposable(model_path: str | Path, profile: TargetProfile) -> frozenset[str]:
    """The ops prepare decomposes for ``profile``'s accelerator in this model (none on CPU targets)."""
    if not profile.is_accelerator:
        return frozenset()
    import onnx

    from ..model import iter_graphs
    from ..partition import decomposable_ops

    proto = onnx.load_model(str(model_path), load_external_data=False)
    return decomposable_ops(profile, {n.op_type for g in iter_graphs(proto.graph) for n in g.node})
