"""``edgepack build``: intake once, then the stage tuple per target, then an atomic bundle each."""

from __future__ import annotations

import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from . import cleanup, limits_plan, on_target, reference, safe_io
from .backends import Packaging, backend_for
from .bundle import check_destination, write_bundle
from .data.inputs import ReferenceFailure, SampleSets
from .metrics.kinds import kinds_of
from .metrics.kinds import resolve as resolve_kinds
from .errors import EdgepackError, OutputError, ShapeError, StageError
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
from .user_eval import UserMetric, fp32_values


@dataclass(frozen=True)
class TargetFailure:
    """A target that could not be built: the stage it failed in and why (the other targets go on)."""

    target: str
    stage: str  # "plan" (refused before its stages ran), a stage name, or "bundle"
    reason: str
    error: EdgepackError

    def to_json(self) -> dict:
        return {"target": self.target, "stage": self.stage, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.target}: {self.stage}: {self.reason}"


def failure_of(target: str, exc: EdgepackError, default_stage: str) -> TargetFailure:
    reason = getattr(exc, "reason", None) or str(exc)
    for prefix in (f"{target}: ", f"{getattr(exc, 'stage', default_stage)}: "):
        reason = reason.removeprefix(prefix)
    return TargetFailure(target, getattr(exc, "stage", default_stage), reason, exc)


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


def _plan(lm: LoadedModel, target: TargetProfile, mine: dict):
    """The shape plan of ``lm`` for ``target`` from its own --shape values ``mine`` (ShapeError: --shape
    contradicts the model, bad input for all)."""
    return plan_shapes(lm.info, mine, target.default_batch), bool(mine)


def _shapes(lm: LoadedModel, target: TargetProfile, planned):
    """(plan, shapes, fixed or not) of ``lm`` for ``target``; ShapeError when the target needs shapes nobody fixed."""
    plan, mine = planned
    if target.requires_fixed_shapes:
        fixed = require_fixed(plan, lm.info, f"{target.name} needs fixed input shapes ({lm.path.name})")
        return plan, dict(fixed), True
    if mine and plan.all_fixed:
        return plan, dict(plan.fixed), True
    return plan, dict(plan.shapes), False


def _initial_state(lm: LoadedModel, name: str, target: TargetProfile, mine: dict, inputs: SampleSets,
                   kinds: dict | None = None, user_fp32: float | None = None) -> ModelState:
    plan, shapes, is_fixed = _shapes(lm, target, _plan(lm, target, mine))
    verify_specs = _fixed_specs(lm.info.inputs, plan.fixed if plan.all_fixed else shapes)
    why = None if inputs.calibration is not None else f"verification inputs for {lm.path.name}"
    calibrates = any(r.needs_calibration for r in target.recipes)
    try:
        samples = inputs.get(lm, verify_specs, why, plan, calibrates)
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
                      shapes=shapes, fixed_shapes=is_fixed, evidence=samples.evidence, samples_key=samples.key,
                      kinds=kinds_of(lm.proto.graph, samples.reference_outputs[0], kinds or {}), user_fp32=user_fp32,
                      preprocessing=_preprocessing(inputs, lm))


def _plan_targets(loaded, names, targets, per_model, inputs, kinds, user_fp32, keep_going):
    """Every target's initial model states. A target that cannot take a model (an engine without its
    operators, an accelerator that needs shapes nobody fixed) is a TargetFailure at 'plan' when
    ``keep_going``; bad input that concerns every target (calibration data, generated inputs) raises."""
    initial, failed = {}, {}
    for t in targets:
        several = len(loaded) > 1
        plans = [_naming(lm, several, lambda: _plan(lm, t, mine)) for lm, mine in zip(loaded, per_model)]  # noqa: B023
        try:
            _check_models(loaded, t)
            for lm, p in zip(loaded, plans):
                _naming(lm, several, lambda: _shapes(lm, t, p))  # noqa: B023 - called at once
            unfit = [limits_plan.plan(lm.proto, t, backend_for(t), inputs.calibration is not None, lm.path.name)
                     for lm in loaded]  # format limits, before any work
        except EdgepackError as exc:
            if not keep_going:
                raise
            failed[t.name] = failure_of(t.name, exc, "plan")
            continue
        initial[t.name] = [replace(_naming(lm, several, lambda: _initial_state(lm, n, t, mine, inputs, kinds.get(n, {}),  # noqa: B023
                                                                             user_fp32.get(n))), unfit=u)
                           for lm, n, mine, u in zip(loaded, names, per_model, unfit)]
    if failed and not initial:  # no asked target can take the model: bad input, before any work
        raise next(iter(failed.values())).error
    return initial, failed


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


def runtime_reason(exc: BaseException) -> str:
    """The human part of an onnxruntime run failure: its status message, without the source file and line."""
    import re

    text = str(exc)
    text = text.split("Status Message: ", 1)[-1]
    text = re.sub(r"^[\w./\\-]+\.(?:h|cc|cpp):\d+\s+(?:\w+\s+)?", "", text.strip())
    return text.split("; pass --calibration")[0].strip() or "onnxruntime could not run it"


def _preprocessing(inputs: SampleSets, lm: LoadedModel) -> dict | None:
    """The image preprocessing of the model's calibration folder (its preprocess.toml), for the
    manifest and README; None when the calibration data are arrays."""
    folder = inputs.folder_for(lm)
    if folder is None:
        return None
    from .data.images import plan_images

    plan = plan_images(folder, lm.info.inputs)
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
    output_kinds: list[tuple[str, str, dict, str]] | None = None,
    user_metric: UserMetric | None = None,
    verify_on_target: bool = False,
) -> list:
    """Build one bundle per target in ``out/<target>/``; return what was written.

    Work that is the same for every target (intake, calibration, fp32 reference outputs) is done
    once; with ``jobs`` > 1 the targets then build in parallel threads (onnxruntime releases the GIL).
    With ``keep_going`` a target that fails is returned as a :class:`TargetFailure` (its stage and
    reason) and the others go on; bad input that concerns every target (also a model that none of
    the targets can take) still raises before any work.
    ``output_kinds``: the user's [(NAME or MODEL:NAME, kind, options, where)]; ``user_metric``: --eval.
    ``verify_on_target``: judge the shipped artifact of targets that can be emulated on their own runtime
    build (:mod:`edgepack.on_target`); the emulator must be prepared (else EmulatorError before any work).
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
    on_target.require(targets, verify_on_target)
    # the user names models by their file's stem (a single model's artifact is called "model")
    stems = {lm.path.stem: n for lm, n in zip(loaded, names)}
    given_kinds = resolve_kinds(list(output_kinds or []), {lm.path.stem: [o.name for o in lm.info.outputs] for lm in loaded})
    kinds = {stems[k]: v for k, v in given_kinds.items()}
    fp32 = fp32_values(user_metric, [(lm.path.stem, lm.path) for lm in loaded]) if user_metric else {}
    user_fp32 = {stems[k]: v for k, v in fp32.items()}
    inputs = SampleSets(calib, [lm.path.stem for lm in loaded])
    from .runtime.lane import LANE

    try:
        done = _build_planned(inputs, loaded, names, targets, per_model, kinds, user_fp32, keep_going, out, force,
                              jobs, per_hour, user_metric, verify_on_target, progress)
    except BaseException:  # what it queued on the background lane and never asked for: dropped, stopped
        LANE.stop()
        raise
    LANE.settle()
    return done


def _build_planned(inputs, loaded, names, targets, per_model, kinds, user_fp32, keep_going, out, force, jobs,
                   per_hour, user_metric, verify_on_target, progress):
    # shared work first, once for every target: intake, shape plans, calibration, fp32 reference outputs
    initial, failed = _plan_targets(loaded, names, targets, per_model, inputs, kinds, user_fp32, keep_going)

    shared_dir = tempfile.TemporaryDirectory(prefix=cleanup.tmp_prefix("shared"))
    memo = Memo(Path(shared_dir.name))

    def one(target: TargetProfile) -> BuildResult | TargetFailure:
        if target.name in failed:
            return failed[target.name]
        if keep_going:
            try:
                return _one(target)
            except ReferenceFailure as exc:  # a later sample the fp32 model fails on: bad input, not the target's
                raise exc.__cause__ if isinstance(exc.__cause__, ReferenceFailure) else exc from None
            except EdgepackError as exc:
                return failure_of(target.name, exc, "bundle")
        return _one(target)

    def _one(target: TargetProfile) -> BuildResult:
        from .render.manifest import manifest

        backend = backend_for(target)
        with tempfile.TemporaryDirectory(prefix=cleanup.tmp_prefix(target.name)) as tmp:
            ctx = Context(target=target, work=Path(tmp), models=tuple(initial[target.name]), per_hour=per_hour,
                          memo=memo, user_metric=user_metric, verify_on_target=verify_on_target)
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
