"""``edgepack build``: intake once, then the stage tuple per target, then an atomic bundle each."""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import cleanup, reference, safe_io
from .backends import Packaging, backend_for
from .bundle import check_destination, write_bundle
from .data.inputs import SampleSets
from .errors import EdgepackError, OutputError, ShapeError, StageError
from .model import LoadedModel, TensorSpec, load_model
from .pipeline import Context, Memo, ModelState, StageRecord, run_stages
from .profile_checks import control_char
from .shapes import plan_shapes, require_fixed
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


def _initial_state(lm: LoadedModel, name: str, target: TargetProfile, given: dict, inputs: SampleSets) -> ModelState:
    mine = {k: v for k, v in given.items() if k in {t.name for t in lm.info.inputs}}
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
    try:
        samples = inputs.get(lm, verify_specs, why, plan)
    except StageError as exc:
        if not mine or inputs.calibration is not None:
            raise
        # the user's --shape is what the model cannot run on: say so, in words, without onnxruntime's dump
        shown = " ".join(f"--shape {k}={'x'.join(map(str, v))}" for k, v in sorted(mine.items()))
        declared = ", ".join(f"{t.name} [{', '.join(str(d) for d in (t.shape or ()))}]" for t in lm.info.inputs)
        msg = (f"{lm.path.name} does not run with {shown}: {runtime_reason(exc)}; the model declares {declared} - "
               "check the dimensions it expects")
        raise ShapeError(msg) from exc
    return ModelState(name=name, source=lm, current=lm.path, reference_outputs=samples.reference_outputs,
                      verify_inputs=samples.verify_inputs, calibration=samples.calibration, input_notes=samples.notes,
                      shapes=shapes, fixed_shapes=is_fixed, preprocessing=_preprocessing(inputs.calibration, lm))


def runtime_reason(exc: BaseException) -> str:
    """The human part of an onnxruntime run failure: its status message, without the source file and line."""
    import re

    text = str(exc)
    text = text.split("Status Message: ", 1)[-1]
    text = re.sub(r"^[\w./\\-]+\.(?:h|cc|cpp):\d+\s+(?:\w+\s+)?", "", text.strip())
    return text.split("; pass --calibration")[0].strip() or "onnxruntime could not run it"


def _preprocessing(calibration: Path | None, lm: LoadedModel) -> dict | None:
    """The image preprocessing of the model's calibration folder (its preprocess.toml), for the
    manifest and README; None when the calibration data are arrays."""
    if calibration is None:
        return None
    from .data.images import plan_images

    own = calibration / lm.path.stem
    plan = plan_images(own if own.is_dir() else calibration, lm.info.inputs)
    if plan is None:
        return None
    return {"input": plan.spec.name, "size": list(plan.size), "resize": plan.resize, "pad_value": plan.pad_value,
            "layout": plan.layout, "color": plan.color, "scale": plan.scale, "mean": list(plan.mean),
            "std": list(plan.std)}


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
    known = {t.name for lm in loaded for t in lm.info.inputs}
    for name in given:
        if name not in known:
            from ._toml_check import did_you_mean

            msg = f"--shape names unknown input '{name}'{did_you_mean(name, sorted(known))}; inputs: {', '.join(sorted(known))}"
            raise ShapeError(msg)
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
    inputs = SampleSets(calib)
    names = _names(loaded)
    # shared work first, once for every target: intake, shape plans, calibration, fp32 reference outputs
    initial = {t.name: [_initial_state(lm, n, t, given, inputs) for lm, n in zip(loaded, names)] for t in targets}

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
            ctx = ctx.add_files(reference.write(ctx))  # the pair the device checks its first run against
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
