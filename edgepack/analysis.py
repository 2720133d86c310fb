"""``inspect``: a model summary and, per target, accelerator coverage now and after prepare."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .backends import backend_for
from .cleanup import tmp_prefix
from .flops import model_work
from .model import LoadedModel, load_model
from .shapes import ShapePlan, ShapeTarget, plan_shapes, shapes_per_model
from .target import TargetProfile
from .transforms import load_for_analysis, prepare_graph


@dataclass
class _Workspace:
    """Optimized variants of one model, made once and shared by every target."""

    loaded: LoadedModel
    folder: Path
    _cache: dict
    notes: list[str] = field(default_factory=list)  # what limited the analysis (a shape inference that failed)

    def variant(self, shapes: dict[str, tuple[int, ...]] | None, decompose_ops: frozenset[str]) -> tuple[onnx.ModelProto, Path, dict]:
        """Basic-optimized, shape-inferred model: shapes fixed if given, ops decomposed if asked."""
        key = (tuple(sorted((shapes or {}).items())), decompose_ops)
        if key not in self._cache:
            dst = self.folder / f"variant{len(self._cache)}.onnx"
            counts = prepare_graph(self.loaded.proto, self.loaded.path.parent.resolve(), dst, shapes=shapes,
                                   decompose_ops=decompose_ops, weight_bytes=self.loaded.info.weight_bytes)
            self._cache[key] = (load_for_analysis(dst, self.notes), dst, counts)
        return self._cache[key]


def _target_report(ws: _Workspace, profile: TargetProfile, plan: ShapePlan) -> dict:
    scenarios, prepare_notes = backend_for(profile).inspect_coverage(ws.loaded, profile, plan, ws.variant)
    return {"coverage": [c.to_json() for c in scenarios], "prepare": prepare_notes}


def _estimates(loaded: LoadedModel, profile: TargetProfile, plan: ShapePlan, per_hour: float) -> dict:
    """Before building: the fp32 model on the target, estimated (dynamic dims must be decided)."""
    if not plan.all_fixed:
        return {"available": False, "why": "undecided input dimensions: " + ", ".join(plan.undecided) + "; pass --shape"}
    from .errors import EdgepackError, first_line, foreign_error_types
    from .estimate import estimate_bundle

    try:
        est = estimate_bundle(loaded.path, profile, "fp32", shapes=plan.fixed, per_hour=per_hour)
    except (EdgepackError, *foreign_error_types()) as exc:  # an estimate that cannot be made is reported, not fatal
        return {"available": False, "why": f"{type(exc).__name__}: {first_line(exc)}"}
    return {"available": True, "precision": "fp32 (before quantization)", **est.to_json()}


def inspect_model(path: str | Path, profiles: list[TargetProfile], shapes: dict[str, tuple[int, ...]],
                  per_hour: float = 1000.0) -> dict:
    """Everything ``edgepack inspect`` shows, as a plain dict (stable keys)."""
    loaded = load_model(path)
    info = loaded.info
    [shapes] = shapes_per_model(shapes, [ShapeTarget(loaded.path.stem, loaded.path.name,
                                                     tuple(t.name for t in info.inputs))])
    base_plan = plan_shapes(info, shapes, profiles[0].default_batch if profiles else 1)
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("inspect")) as tmp:
        ws = _Workspace(loaded, Path(tmp), {})
        work_model, _, _ = ws.variant(base_plan.fixed if base_plan.all_fixed else None, frozenset())
        work = model_work(work_model)
        report = {
            "model": info.to_json(),
            "shapes": {
                "used_for_flops": {k: list(v) for k, v in base_plan.shapes.items()},
                "decisions": list(base_plan.decisions),
                "undecided": list(base_plan.undecided),
            },
            "work": work.to_json(),
            "targets": {},
        }
        for profile in profiles:
            plan = plan_shapes(info, shapes, profile.default_batch)
            entry = _target_report(ws, profile, plan)
            entry["estimates"] = _estimates(loaded, profile, plan, per_hour)
            entry["profile"] = {"source": profile.source, "engine": profile.engine, "provider": profile.execution_provider,
                                "shape_policy": profile.shape_policy}
            report["targets"][profile.name] = entry
    if ws.notes:
        report["shapes"]["notes"] = sorted(set(ws.notes))
    return report
