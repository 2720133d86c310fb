"""``edgepack build``: intake once, then the stage tuple per target, then an atomic bundle each."""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import cleanup, safe_io
from .backends import Packaging, backend_for
from .bundle import check_destination, write_bundle
from .data.inputs import SampleSets
from .errors import EdgepackError, OutputError
from .model import LoadedModel, TensorSpec, load_model
from .pipeline import Context, Memo, ModelState, StageRecord, run_stages
from .profile_checks import control_char
from .shapes import ShapeTarget, plan_shapes, require_fixed, shapes_per_model
from .stages.convert import convert_stage
from .stages.estimate import estimate_stage
from .stages.package import package_stage
from .stages.prepare import prepare_stage
from .stages.quantize import quantize_stage
from .stages.verify import verify_stage
from .target import TargetProfile


@dataclass(frozen=True)
class BuildResult:
    """One bundle written: where, its manifest, and what the build measured (also in the build record)."""

    target: str
    bundle: Path
    manifest: dict
    record: Path  # the build record beside the bundle (stage timings, host measurements)
    stages: tuple[StageRecord, ...]
    measurements: dict
    model_files: tuple[str, ...]  # bundle-relative names of the models' artifacts and their companions
    package: Packaging | None
    host_runtime: str  # what ran the shipped models on this host


def _check_output(out: Path, models: list[Path], targets: list[TargetProfile], force: bool) -> None:
    out_abs = out.resolve()
    for m in models:
        if out_abs == m.resolve().parent:
            msg = f"output folder {out} is the folder of the model {m.name}; choose a separate output folder"
            raise OutputError(msg)
    if out.exists() and not out.is_dir():
        msg = f"output {out} exists and is not a folder"
        raise OutputError(msg)
    probe = out_abs
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        msg = f"output folder {out} is not writable"
        raise OutputError(msg)
    _check_creatable(out, out_abs)
    for t in targets:
        check_destination(out, t.name, force)
        safe_io.check_file_slot(out / f"{t.name}.build.json")


def _check_creatable(out: Path, out_abs: Path) -> None:
    """Create the missing folders of ``out`` and remove them again, before any work: permission bits
    do not tell (root passes them) whether a read-only or virtual file system (/proc) takes a folder.
    Only folders inside the output path are touched, and only empty ones are removed."""
    missing = []
    p = out_abs
    while not p.exists():
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            d.mkdir()
            created.append(d)
    except FileExistsError:
        pass  # another build created it meanwhile: it can be created
    except OSError as exc:
        msg = f"output folder {out} cannot be created: {exc.strerror or exc}"
        raise OutputError(msg) from None
    finally:
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                pass  # no longer empty: another build is writing there


def _check_models(loaded: list[LoadedModel], target: TargetProfile) -> None:
    backend = backend_for(target)
    for lm in loaded:
        backend.check_model(lm, target)


def _names(loaded: list[LoadedModel]) -> list[str]:
    if len(loaded) == 1:
        return ["model"]
    stems = [lm.path.stem for lm in loaded]
    for stem in stems:  # stems name the bundle's files and lines of its operator config
        if not stem or control_char(stem) or stem.startswith("."):
            msg = f"model file name {stem!r} cannot name a bundle file (empty, hidden or with control characters)"
            raise OutputError(msg)
    if len(set(stems)) != len(stems):
        msg = "two models share a file name; rename one so their artifacts do not collide"
        raise OutputError(msg)
    return stems


def _fixed_specs(specs: tuple[TensorSpec, ...], shapes: dict) -> list[TensorSpec]:
    return [TensorSpec(s.name, s.dtype, tuple(shapes[s.name])) if s.name in shapes else s for s in specs]


def _initial_state(lm: LoadedModel, name: str, target: TargetProfile, mine: dict, inputs: SampleSets) -> ModelState:
    plan = plan_shapes(lm.info, mine, target.default_batch)
    if target.requires_fixed_shapes:
        fixed = require_fixed(plan, lm.info, f"{target.name} needs fixed input shapes ({lm.path.name})")
        shapes, is_fixed = dict(fixed), True
    elif mine and plan.all_fixed:
        shapes, is_fixed = dict(plan.fixed), True
    else:
        shapes, is_fixed = dict(plan.shapes), False
    verify_specs = _fixed_specs(lm.info.inputs, plan.fixed if plan.all_fixed else shapes)
    why = None if inputs.calibration is not None else f"verification inputs for {lm.path.name}"
    samples = inputs.get(lm, verify_specs, why, plan)
    return ModelState(name=name, source=lm, current=lm.path, reference_outputs=samples.reference_outputs,
                      verify_inputs=samples.verify_inputs, calibration=samples.calibration, input_notes=samples.notes,
                      shapes=shapes, fixed_shapes=is_fixed)


def _initial_states(loaded: list[LoadedModel], names: list[str], per_model: list[dict], target: TargetProfile,
                    inputs: SampleSets) -> list[ModelState]:
    several = len(loaded) > 1
    return [_naming(lm, several, lambda: _initial_state(lm, n, target, mine, inputs))  # noqa: B023 - called at once
            for lm, n, mine in zip(loaded, names, per_model)]


def _naming(lm: LoadedModel, several: bool, make):
    """``make()``; with several models, an error from it names the model's file first."""
    if not several:
        return make()
    try:
        return make()
    except EdgepackError as exc:
        if str(exc).startswith(lm.path.name):
            raise
        raise type(exc)(f"{lm.path.name}: {exc}") from exc


def build(
    models: list[str | Path],
    targets: list[TargetProfile],
    out: str | Path,
    *,
    calibration: str | Path | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    jobs: int = 1,
    per_hour: float = 1000.0,
    keep_going: bool = False,
) -> list:
    """Build one bundle per target in ``out/<target>/``; return what was written.

    Work that is the same for every target (intake, calibration, fp32 reference outputs) is done
    once; with ``jobs`` > 1 the targets then build in parallel threads (onnxruntime releases the GIL).
    With ``keep_going`` a target that fails is returned as its EdgepackError and the others go on.
    """
    paths = [Path(m) for m in models]
    out = Path(out)
    given = dict(shapes or {})
    if not targets:
        msg = "no target given: pass --target NAME (see `edgepack targets`)"
        raise OutputError(msg)
    cleanup.sweep_temp()  # temporary folders that killed edgepack processes left behind
    _check_output(out, paths, targets, force)
    loaded = [load_model(p) for p in paths]
    names = _names(loaded)
    per_model = shapes_per_model(given, [ShapeTarget(lm.path.stem, lm.path.name, tuple(t.name for t in lm.info.inputs))
                                         for lm in loaded])
    calib = Path(calibration) if calibration is not None else None
    if calib is not None and not calib.is_dir():
        from .errors import CalibrationError

        msg = f"calibration folder not found: {calibration}"
        raise CalibrationError(msg)
    replaced = [out / t.name for t in targets] + [out / f"{t.name}.build.json" for t in targets]
    safe_io.refuse_inputs_under(replaced, safe_io.input_paths(loaded, calib, targets))
    for t in targets:
        stages_for(t)  # refuse a target we cannot package before any work
        if not keep_going:
            _check_models(loaded, t)
    inputs = SampleSets(calib, [lm.path.stem for lm in loaded])
    # shared work first, once for every target: intake, shape plans, calibration, fp32 reference outputs
    initial = {t.name: _initial_states(loaded, names, per_model, t, inputs) for t in targets}

    shared_dir = tempfile.TemporaryDirectory(prefix=cleanup.tmp_prefix("shared"))
    memo = Memo(Path(shared_dir.name))

    def one(target: TargetProfile) -> BuildResult | EdgepackError:
        if keep_going:
            try:
                return _one(target)
            except EdgepackError as exc:
                return exc
        return _one(target)

    def _one(target: TargetProfile) -> BuildResult:
        from .render.manifest import manifest

        backend = backend_for(target)
        _check_models(loaded, target)
        with tempfile.TemporaryDirectory(prefix=cleanup.tmp_prefix(target.name)) as tmp:
            ctx = Context(target=target, work=Path(tmp), models=tuple(initial[target.name]), per_hour=per_hour,
                          memo=memo)
            ctx = run_stages(ctx, stages_for(target), progress)
            dest, doc = write_bundle(ctx, out, backend.readme(ctx), force,
                                     lambda artifacts: manifest(ctx, artifacts, backend))
        record = out / f"{target.name}.build.json"
        safe_io.write_file(record, json.dumps({  # never through a symlink planted in OUT
            "target": target.name,
            "stages": [r.to_json() for r in ctx.records],
            "measurements": ctx.measurements,
        }, indent=2, default=float) + "\n")
        files = tuple(p.name for m in ctx.models for p in (m.artifact, *m.companions))
        return BuildResult(target.name, dest, doc, record, ctx.records, ctx.measurements, files, ctx.package,
                           backend.host_runtime)

    with shared_dir:
        if jobs <= 1 or len(targets) == 1:
            done: list = []
            for t in targets:
                try:
                    done.append(one(t))
                except EdgepackError as exc:
                    raise cleanup.with_written(exc, done) from exc
            return done
        # longest first (NNCF quantization makes OpenVINO the slowest), results in the order asked
        order = sorted(targets, key=lambda t: not backend_for(t).runs_long)
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="edgepack") as pool:
            done = dict(zip([t.name for t in order], pool.map(one, order)))
        return [done[t.name] for t in targets]


def stages_for(target: TargetProfile) -> tuple:
    """The explicit stage tuple of a build: the same stages for every backend, its packaging stage by its name."""
    backend = backend_for(target)
    return (
        ("prepare", prepare_stage),
        ("quantize", quantize_stage),
        ("convert", convert_stage),
        ("verify", verify_stage),
        (backend.package_stage, package_stage),
        ("estimate", estimate_stage),
    )
