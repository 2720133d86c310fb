"""``inspect``: a model summary and, per target, accelerator coverage now and after prepare."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from . import partition
from .cleanup import tmp_prefix
from .flops import model_work
from .model import LoadedModel, load_model
from .shapes import ShapePlan, fix_input_shapes, plan_shapes
from .target import TargetProfile
from .transforms import DECOMPOSITIONS, decompose, infer_shapes, ort_optimize


@dataclass
class _Workspace:
    """Optimized variants of one model, made once and shared by every target."""

    loaded: LoadedModel
    folder: Path
    _cache: dict

    def variant(self, shapes: dict[str, tuple[int, ...]] | None, decompose_ops: frozenset[str]) -> tuple[onnx.ModelProto, Path, dict]:
        """Basic-optimized, shape-inferred model: shapes fixed if given, ops decomposed if asked."""
        key = (tuple(sorted((shapes or {}).items())), decompose_ops)
        if key not in self._cache:
            proto = self.loaded.proto
            if shapes:
                proto = fix_input_shapes(proto, shapes)
            proto, counts = decompose(proto, set(decompose_ops)) if decompose_ops else (proto, {})
            dst = self.folder / f"variant{len(self._cache)}.onnx"
            ort_optimize(proto, self.loaded.path.parent.resolve(), dst, "basic", self.loaded.info.weight_bytes)
            optimized = onnx.load_model(str(dst), load_external_data=False)
            self._cache[key] = (infer_shapes(optimized), dst, counts)
        return self._cache[key]


def _target_report(ws: _Workspace, profile: TargetProfile, plan: ShapePlan) -> dict:
    info = ws.loaded.info
    ops_present = set(info.op_histogram)
    scenarios: list[partition.Coverage] = []
    prepare_notes: list[str] = list(plan.decisions)
    if profile.execution_provider == "OpenVINO":
        scenarios.append(partition.analyze_openvino(ws.loaded.path, profile, plan.fixed or None, "as-is"))
        return {"coverage": [c.to_json() for c in scenarios], "prepare": prepare_notes}
    as_is, _, _ = ws.variant(None, frozenset())
    if not profile.is_accelerator:
        scenarios.append(partition.analyze_cpu(as_is, profile, "as-is"))
        return {"coverage": [c.to_json() for c in scenarios], "prepare": prepare_notes}
    first = partition.analyze_ort_ep(as_is, profile, True, "as-is")
    scenarios.append(first)
    dynamic = any(not t.is_fixed for t in info.inputs)
    if dynamic and first.nodes_supported < first.nodes_total:
        scenarios.append(partition.analyze_ort_ep(as_is, profile, False, "fixed-shapes upper bound"))
    if plan.all_fixed:
        ops = partition.decomposable_ops(profile, ops_present)
        prepared, _, counts = ws.variant(plan.fixed, ops)
        scenarios.append(partition.analyze_ort_ep(prepared, profile, True, "after prepare", ort_checker_quirks=False))
        prepare_notes += [f"decompose {n} {op} node(s) into {'/'.join(DECOMPOSITIONS[op])}" for op, n in counts.items()]
        prepare_notes.append("constant-fold and fold BatchNormalization (onnxruntime basic optimizations)")
    else:
        prepare_notes.append(
            "cannot compute 'after prepare': " + ", ".join(plan.undecided) + " undecided; pass --shape NAME=DIMS"
        )
    return {"coverage": [c.to_json() for c in scenarios], "prepare": prepare_notes}


def _estimates(loaded: LoadedModel, profile: TargetProfile, plan: ShapePlan, per_hour: float) -> dict:
    """Before building: the fp32 model on the target, estimated (dynamic dims must be decided)."""
    if not plan.all_fixed:
        return {"available": False, "why": "undecided input dimensions: " + ", ".join(plan.undecided) + "; pass --shape"}
    from .estimate import estimate_bundle

    try:
        est = estimate_bundle(loaded.path, profile, "fp32", shapes=plan.fixed, per_hour=per_hour)
    except Exception as exc:  # noqa: BLE001 - an estimate that cannot be made is reported, not fatal
        from .errors import first_line

        return {"available": False, "why": f"{type(exc).__name__}: {first_line(exc)}"}
    return {"available": True, "precision": "fp32 (before quantization)", **est}


def inspect_model(path: str | Path, profiles: list[TargetProfile], shapes: dict[str, tuple[int, ...]],
                  per_hour: float = 1000.0) -> dict:
    """Everything ``edgepack inspect`` shows, as a plain dict (stable keys)."""
    loaded = load_model(path)
    info = loaded.info
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
    return report
