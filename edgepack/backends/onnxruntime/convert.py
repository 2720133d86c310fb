"""ONNX -> ORT format conversion, with the semantics of ``onnxruntime.tools.convert_onnx_models_to_ort``.

The tool itself only works on whole folders, prints as it goes and names its outputs itself, so
its private ``_convert`` is not called; its session settings are reproduced here exactly
(onnxruntime/tools/convert_onnx_models_to_ort.py, ORT 1.32):

* ``session.save_model_format = ORT`` and ``optimized_model_filepath`` make the session write the model;
* ``session.qdqisint8allowed`` is ``"1"`` for ``--target_platform arm`` and ``"0"`` otherwise (also when
  no platform is given) - that is the *only* session setting ``arm`` changes;
* at level ``all`` (or ``layout``) the ``NchwcTransformer`` is disabled unless the platform is ``amd64``;
* style ``runtime`` adds ``optimization.minimal_build_optimizations = save``: ORT then applies only the
  basic level directly and records the higher-level fusions (e.g. ConvActivationFusion, QDQ fusions) for
  replay at runtime. Records are only made for optimizers *enabled by the session level*, so the tool
  runs runtime style at level ``all``; at ``basic`` nothing is recorded. We do the same and say so.
* for the operator config of a runtime-style model the tool converts a second time with
  ``optimization.minimal_build_optimizations = apply`` (fixed style): :func:`to_ort_applied`.

Determinism: the .ort content (graph, initializers, node order, saved optimizations) is the same on
every conversion, but not its bytes: ORT 1.32 serializes the KernelTypeStrResolver entries
(``:Conv:11``, ``com.microsoft:FusedConv:1``...) in hash-map order. :func:`convert_model` therefore
rewrites every .ort with :func:`edgepack.backends.onnxruntime.ort_format.canonicalize_ort`, after which the
same model always gives the same bytes.
"""

from __future__ import annotations

import collections
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...errors import StageError, first_line
from ...runtime import ort as ort_runtime
from . import tools as _ort_tools

STYLES = ("fixed", "runtime")
LEVELS = ("basic", "extended", "layout", "all")
PLATFORMS = ("arm", "amd64")
RUNTIME_STYLE_SESSION_LEVEL = "all"  # what convert_onnx_models_to_ort uses (its default level)


def _check_choice(what: str, value: str | None, choices: tuple[str, ...], *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value not in choices:
        msg = f"convert: unknown {what} '{value}'; choose one of: {', '.join(choices)}"
        raise StageError(msg)


def session_config(target_platform: str | None, minimal_build_optimizations: str | None) -> dict[str, str]:
    """Session config entries the converter sets, in the order the tool adds them."""
    entries = {"session.qdqisint8allowed": "1" if target_platform == "arm" else "0"}
    entries["session.save_model_format"] = "ORT"
    if minimal_build_optimizations is not None:
        entries["optimization.minimal_build_optimizations"] = minimal_build_optimizations
    return entries


def disabled_optimizers(level: str, target_platform: str | None) -> list[str]:
    """NCHWc is x86-specific: the tool disables it at level layout/all unless the platform is amd64."""
    return ["NchwcTransformer"] if level in ("layout", "all") and target_platform != "amd64" else []


def _write(src: Path, dst: Path, level: str, config: dict[str, str], disabled: list[str]) -> None:
    if not Path(src).is_file():
        msg = f"convert: model file not found: {Path(src).name}"
        raise StageError(msg)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # log level 3, errors only: a conversion is not a place for optimizer chatter
    so = ort_runtime.session_options(level_name=level, optimized_path=dst, config=config.items())
    try:
        ort_runtime.inference_session(src, so, disabled)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... types
        first = first_line(exc)
        msg = f"convert: onnxruntime could not convert {Path(src).name} to ORT format: {first}"
        raise StageError(msg) from exc
    if not dst.is_file():
        msg = f"convert: onnxruntime wrote no ORT file for {Path(src).name}"
        raise StageError(msg)


def to_ort(
    src: Path,
    dst: Path,
    *,
    optimization_style: str,
    optimization_level: str,
    target_platform: str | None,
    extra_disabled: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Convert ``src`` (.onnx) to ``dst`` (.ort) and return a JSON-able record of what was done.

    ``extra_disabled`` names optimizers to leave out on top of the tool's own choice.

    ``fixed``: optimize at ``optimization_level`` and bake the result in (CPU-only targets).
    ``runtime``: apply the basic level, save the rest as runtime optimizations, so compiling EPs
    (NNAPI, CoreML) see unfused nodes; ``optimization_level`` is recorded but the session runs at
    level ``all`` like the tool, because ORT records only optimizers the session level enables
    (at ``basic`` nothing would be saved), and in save mode it applies only basic ones directly.
    """
    _check_choice("optimization style", optimization_style, STYLES)
    _check_choice("optimization level", optimization_level, LEVELS)
    _check_choice("target platform", target_platform, PLATFORMS, optional=True)
    decisions: list[str] = []
    if optimization_style == "runtime":
        session_level = RUNTIME_STYLE_SESSION_LEVEL
        config = session_config(target_platform, "save")
        decisions.append(
            "runtime style: basic optimizations applied, higher-level fusions saved for replay "
            f"(session level '{session_level}' as convert_onnx_models_to_ort uses; "
            f"in save mode ORT applies only the basic level directly, whatever level '{optimization_level}' says)"
        )
    else:
        session_level = optimization_level
        config = session_config(target_platform, None)
    disabled = disabled_optimizers(session_level, target_platform) + list(extra_disabled)
    _write(Path(src), Path(dst), session_level, config, disabled)
    summary = ort_summary(Path(dst))
    return {
        "onnxruntime_version": ort_runtime.onnxruntime().__version__,
        "optimization_style": optimization_style,
        "optimization_level": optimization_level,
        "session_optimization_level": session_level,
        "target_platform": target_platform,
        "session_config": config,
        "disabled_optimizers": disabled,
        "bytes": Path(dst).stat().st_size,
        **summary,
        "decisions": decisions,
    }


def to_ort_applied(src: Path, dst: Path, *, target_platform: str | None,
                   extra_disabled: tuple[str, ...] = ()) -> dict[str, Any]:
    """The runtime-style model with its saved optimizations applied, for the operator config only.

    ``convert_onnx_models_to_ort`` makes this second conversion (fixed style, level ``all``,
    ``optimization.minimal_build_optimizations = apply``) so the config also lists the ops the replayed
    fusions produce (e.g. com.microsoft FusedConv). Do not ship this file.
    """
    _check_choice("target platform", target_platform, PLATFORMS, optional=True)
    level = RUNTIME_STYLE_SESSION_LEVEL
    config = session_config(target_platform, "apply")
    disabled = disabled_optimizers(level, target_platform) + list(extra_disabled)
    _write(Path(src), Path(dst), level, config, disabled)
    return {"bytes": Path(dst).stat().st_size, "session_config": config, **ort_summary(Path(dst))}


def ort_summary(path: Path) -> dict[str, Any]:
    """Node counts per ``domain:op``, the ORT format version and saved runtime optimizations of a .ort file."""
    fbs = _ort_tools.fbs()
    buf = bytearray(Path(path).read_bytes())
    if not fbs.InferenceSession.InferenceSession.InferenceSessionBufferHasIdentifier(buf, 0):
        msg = f"convert: {Path(path).name} is not an ORT format model"
        raise StageError(msg)
    session = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(buf, 0)
    graph = session.Model().Graph()
    ops: collections.Counter[str] = collections.Counter()
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        ops[f"{node.Domain().decode() or 'ai.onnx'}:{node.OpType().decode()}"] += 1
    saved: dict[str, int] = {}
    runtime_opts = graph.RuntimeOptimizations()
    if runtime_opts is not None:
        for i in range(runtime_opts.RecordsLength()):
            entry = runtime_opts.Records(i)
            saved[entry.OptimizerName().decode()] = entry.RuntimeOptimizationRecordsLength()
    return {
        "ort_format_version": (session.OrtVersion() or b"").decode(),
        "nodes": sum(ops.values()),
        "op_counts": dict(sorted(ops.items())),
        "saved_runtime_optimizations": dict(sorted(saved.items())),
    }


def check_ort_loads(path: Path) -> None:
    """Open the .ort with the CPU execution provider (saved runtime optimizations replayed); StageError if not."""
    path = Path(path)
    so = ort_runtime.session_options(config=(("session.load_model_format", "ORT"),
                                             ("session.enable_saved_runtime_optimizations", "1")))
    try:
        ort_runtime.inference_session(path, so)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... types
        first = first_line(exc)
        msg = f"convert: {path.name} does not load in onnxruntime {ort_runtime.onnxruntime().__version__}: {first}"
        raise StageError(msg) from exc


# ------------------------------------------------------------------------------------- the stage


def _convert_loadable(src: Path, dst: Path, profile, disabled: tuple[str, ...], decisions: list[str], name: str) -> dict:
    """to_ort, then (runtime style) a load check. onnxruntime 1.32 writes runtime-optimization records for some QDQ
    graphs that it cannot replay ("Not enough produced nodes in the runtime optimization record");
    for those the QDQ fusions are not saved: the accelerator takes the QDQ node units as they are,
    and CPU-side nodes run unfused."""
    kwargs = dict(optimization_style=profile.optimization_style, optimization_level=profile.optimization_level,
                  target_platform=profile.target_platform)
    record = to_ort(src, dst, extra_disabled=disabled, **kwargs)
    if profile.optimization_style != "runtime":  # nothing to retry: the load check after canonicalizing decides
        return record
    try:
        check_ort_loads(dst)
    except StageError as exc:
        qdq = "QDQSelectorActionTransformer"
        if profile.optimization_style != "runtime" or qdq in disabled or "runtime optimization record" not in str(exc):
            raise
        record = to_ort(src, dst, extra_disabled=(*disabled, qdq), **kwargs)
        decisions.append(f"{name}: QDQ fusions not saved for runtime replay: onnxruntime could not replay its own "
                         "record for this graph")
    return record


@dataclass(frozen=True)
class OrtConversion:
    """How a model became its .ort: the converter's version and session settings (manifest ``conversion``)."""

    onnxruntime_version: str
    optimization_style: str
    optimization_level: str
    session_optimization_level: str
    target_platform: str | None
    session_config: dict[str, str]
    disabled_optimizers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"onnxruntime_version": self.onnxruntime_version, "optimization_style": self.optimization_style,
                "optimization_level": self.optimization_level,
                "session_optimization_level": self.session_optimization_level,
                "target_platform": self.target_platform, "session_config": self.session_config,
                "disabled_optimizers": list(self.disabled_optimizers)}


def convert_model(ctx, m, decisions: list[str]):
    """ORT format for one model: runtime style for accelerator targets, fixed for CPU targets; the
    runtime-style model's applied form beside it (for the operator config only, never shipped)."""
    from .ort_format import canonicalize_ort

    profile = ctx.target
    artifact = ctx.work / "bundle" / f"{m.name}.ort"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    # weight-only int8 kept as DequantizeLinear is fp32 arithmetic; onnxruntime's QDQ fusions would
    # turn it into int8 arithmetic the accuracy check never saw, so they stay off unless we quantized
    keep_fp32 = ("QDQSelectorActionTransformer",) if m.weight_only_int8 and m.recipe.name != "static-int8" else ()
    if keep_fp32:
        decisions.append(f"{m.name}: QDQ fusions disabled: weight-only int8 weights are dequantized to fp32 arithmetic")
    applied = ctx.work / f"{m.name}.applied.ort"
    ran: list[bool] = []

    def compute():
        ran.append(True)
        notes: list[str] = []
        record = _convert_loadable(m.current, artifact, profile, keep_fp32, notes, m.name)
        if profile.optimization_style == "runtime":
            to_ort_applied(m.current, applied, target_platform=profile.target_platform,
                           extra_disabled=tuple(x for x in record["disabled_optimizers"] if x != "NchwcTransformer"))
        canonicalize_ort(artifact, artifact)
        check_ort_loads(artifact)
        record = {**record, "bytes": artifact.stat().st_size}  # the shipped bytes (before canonicalizing they vary)
        if ctx.memo is None:
            return record, notes, None
        keep = ctx.memo.folder / f"{ctx.memo.file_key(artifact)}.ort"
        shutil.copyfile(artifact, keep)
        if applied.exists():
            shutil.copyfile(applied, keep.with_suffix(".applied.ort"))
        return record, notes, keep

    if ctx.memo is None:
        record, notes, _ = compute()
    else:  # the same model, style, level and platform convert once for every target (e.g. both Pis)
        key = ("ort", ctx.memo.file_key(m.current), profile.optimization_style, profile.optimization_level,
               profile.target_platform, keep_fp32)
        record, notes, keep = ctx.memo.get_or_compute(key, compute)
        if not ran:  # converted for another target (or an earlier candidate's file is in the way): take the memo's
            shutil.copyfile(keep, artifact)
            applied.unlink(missing_ok=True)
            if keep.with_suffix(".applied.ort").exists():
                shutil.copyfile(keep.with_suffix(".applied.ort"), applied)
    decisions.extend(notes)
    decisions.extend(f"{m.name}: {d}" for d in record["decisions"])
    decisions.append(
        f"{m.name}: ORT format, {profile.optimization_style} optimizations at level "
        f"'{record['session_optimization_level']}', platform {profile.target_platform or 'any'}: "
        f"{record['bytes']} bytes; kernel-type resolver entries sorted so the bytes are reproducible"
    )
    conversion = OrtConversion(record["onnxruntime_version"], record["optimization_style"], record["optimization_level"],
                               record["session_optimization_level"], record["target_platform"],
                               record["session_config"], tuple(record["disabled_optimizers"]))
    return replace(m, artifact=artifact, companions=(), analysis_only=(applied,) if applied.exists() else (),
                   conversion=conversion)
