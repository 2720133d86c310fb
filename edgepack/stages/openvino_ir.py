"""The intel-openvino stages: prepare -> quantize (NNCF) -> convert (IR) -> verify -> package.

Same contract as the ONNX Runtime stages: ``stage(ctx, decisions) -> ctx``; every model file is
read from and written to the work folder; decisions hold no measured numbers (bundles are
byte-identical), timings go to ``ctx.measure``.

- quantize: the profile's recipes in order. ``static-int8`` is NNCF post-training quantization of
  the OpenVINO model (never onnxruntime's QLinear*/QDQ ops: OpenVINO cannot import the
  com.microsoft ones, openvino#17461); ``fp16`` is an IR with fp16 weights; ``none`` an fp32 IR.
  Every candidate is run with the OpenVINO CPU plugin on the held-out inputs and checked against
  the fp32 original with the recipe's tolerance; on the host a candidate more than 10% slower than
  the fp32 IR is dropped. Every drop is a decision.
- convert: the chosen IR becomes ``<name>.xml``/``.bin``; coverage from ``Core.query_model``.
- verify: the shipped IR against the fp32 original; compile, first inference and steady-state
  latency in OpenVINO, interleaved with the fp32 ONNX in onnxruntime.
- package: IR files, ``runtime_config.json`` and ``requirements.txt`` into the bundle.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import onnx

from ..errors import StageError
from ..partition import analyze_openvino
from ..pipeline import Context, ModelState
from ..target import Tolerance
from . import openvino_run as ovr
from .prepare import prepare_stage
from .quantize import classify_model
from ..gates import MAX_SLOWDOWN, accept, compare_outputs, round_metrics

__all__ = [
    "OPENVINO_STAGES",
    "ov_convert_stage",
    "ov_package_stage",
    "ov_quantize_stage",
    "ov_verify_stage",
    "prepare_stage",
]

NNCF_PRESET = "mixed"  # asymmetric activations: SiLU/HardSwish outputs go negative (YOLO, MobileNetV3)
STORAGE_NOTE = ("weights are stored in fp16 and decompressed to f32 at load time; this is storage only: the compute "
                "precision is the runtime's INFERENCE_PRECISION_HINT (runtime_config.json, openvino#15439)")


# ------------------------------------------------------------------------------ quantize


def _nncf_quantize(model, m: ModelState, model_class: str):
    """NNCF int8 PTQ on the OpenVINO model with every calibration sample, in order (deterministic:
    no random subset is drawn when subset_size covers the data set)."""
    try:
        import nncf
    except ImportError as exc:
        msg = "static-int8 for OpenVINO needs NNCF: pip install 'edgepack[openvino]'"
        raise StageError(msg) from exc
    nncf.set_log_level(logging.ERROR)
    samples = list(m.calibration)
    # full BiasCorrection: the fast variant cost 1.1 points of top-1 on the sample digits CNN
    # (cosine 0.85 against 0.99 on its worst test image)
    kwargs = {"subset_size": len(samples), "preset": nncf.QuantizationPreset.MIXED, "fast_bias_correction": False}
    if model_class == "matmul-heavy":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    # NNCF draws rich progress bars on stdout/stderr; the CLI's output is ours
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantized = nncf.quantize(model, nncf.Dataset(samples), **kwargs)
    settings = {"tool": "nncf.quantize", "nncf_version": nncf.__version__, "preset": NNCF_PRESET,
                "model_type": "transformer" if model_class == "matmul-heavy" else "default",
                "subset_size": len(samples), "fast_bias_correction": False, "target_device": "ANY"}
    return quantized, settings


def _candidate(ctx: Context, m: ModelState, recipe, model_class: str) -> tuple[Path, dict, list[str]]:
    """Write the recipe's IR; return (xml, settings, notes)."""
    dst = ctx.work / f"{m.name}.{recipe.name}.xml"
    model = ovr.convert(m.prepared)
    notes: list[str] = []
    if recipe.name == "static-int8":
        model, settings = _nncf_quantize(model, m, model_class)
        compress = ctx.target.compress_to_fp16
        settings["compress_to_fp16"] = compress
        if compress:
            notes.append("weights NNCF left in float are stored in fp16 (conversion.compress_to_fp16)")
    elif recipe.name == "fp16":
        compress = True
        settings = {"compress_to_fp16": True}
        notes.append(STORAGE_NOTE)
    elif recipe.name == "none":
        compress = False
        settings = {"compress_to_fp16": False}
    else:
        msg = f"recipe '{recipe.name}' has no OpenVINO implementation (static-int8, fp16 and none do)"
        raise StageError(msg)
    settings["inference_precision_hint"] = ovr.PRECISION_HINT
    ovr.save(model, dst, compress)
    return dst, settings, notes


def _choose(ctx: Context, m: ModelState, decisions: list[str], host: dict) -> ModelState:
    profile = ctx.target
    model_class = classify_model(onnx.load_model(str(m.prepared), load_external_data=False))
    decisions.append(f"{m.name}: model class '{model_class}'")
    fp32_xml = ovr.save(ovr.convert(m.prepared), ctx.work / f"{m.name}.fp32-reference.xml", False)
    fp32_bytes = ovr.ir_bytes(fp32_xml)
    for recipe in profile.recipes:
        if recipe.applies_to not in ("any", model_class):
            decisions.append(f"{m.name}: {recipe.name} skipped: it applies to {recipe.applies_to} models")
            continue
        if recipe.needs_calibration and not m.calibration:
            decisions.append(f"{m.name}: {recipe.name} skipped: no calibration data (--calibration DIR); "
                             "static int8 is not guessed from random numbers")
            continue
        try:
            xml, settings, notes = _candidate(ctx, m, recipe, model_class)
            outputs = ovr.run_ir(xml, list(m.verify_inputs))
        except StageError as exc:
            decisions.append(f"{m.name}: {recipe.name} dropped: {exc}")
            continue
        ops = ovr.ir_ops(xml)
        if recipe.name == "static-int8" and not ops.get("FakeQuantize"):
            decisions.append(f"{m.name}: {recipe.name} dropped: NNCF found nothing to quantize")
            continue
        size = ovr.ir_bytes(xml)
        if recipe.name != "none" and size >= fp32_bytes:
            decisions.append(f"{m.name}: {recipe.name} dropped: it does not make the IR smaller")
            continue
        metrics = round_metrics(compare_outputs(list(m.reference_outputs), outputs))
        ok, why = accept(metrics, recipe.tolerance)
        if not ok:
            decisions.append(f"{m.name}: {recipe.name} dropped: outside tolerance ({why})")
            continue
        if recipe.name == "static-int8":
            lat = ovr.compare_irs(fp32_xml, xml, m.verify_inputs[0])
            host.setdefault(m.name, []).append({"recipe": recipe.name, "vs": "fp32 IR, OpenVINO CPU", **lat})
            if lat["ratio"] is not None and lat["ratio"] > MAX_SLOWDOWN:
                decisions.append(f"{m.name}: {recipe.name} dropped: more than {MAX_SLOWDOWN - 1:.0%} slower than the fp32 "
                                 "IR in OpenVINO on the host (see the build record for the timings)")
                continue
        decisions.append(f"{m.name}: {recipe.name} chosen: {why}")
        if recipe.name in ("fp16", "static-int8") and settings.get("compress_to_fp16"):
            decisions.append(f"{m.name}: fp16 weight storage only; compute precision is INFERENCE_PRECISION_HINT="
                             f"{ovr.PRECISION_HINT} in runtime_config.json")
        chosen = {
            "recipe": recipe.name,
            "why": recipe.reason,
            "tolerance": {k: v for k, v in vars(recipe.tolerance).items() if v is not None},
            "settings": settings,
            "model_class": model_class,
            "bytes_fp32": fp32_bytes,
            "bytes_quantized": size,
            "ops_after": ops,
            "notes": notes,
            "candidate_metrics": metrics,
        }
        return replace(m, current=xml, recipe=chosen, model_class=model_class)
    tried = "; ".join(d.split(": ", 1)[1] for d in decisions if d.startswith(f"{m.name}: ") and "dropped" in d)
    msg = f"{m.name}: no quantization recipe of {profile.name} passed its checks ({tried or 'none applicable'})"
    raise StageError(msg)


def ov_quantize_stage(ctx: Context, decisions: list[str]) -> Context:
    host: dict = {}
    ctx = ctx.with_models([_choose(ctx, m, decisions, host) for m in ctx.models])
    return ctx.measure("candidate_latency", host) if host else ctx


# ------------------------------------------------------------------------------ convert


def _coverage(xml: Path, profile) -> dict:
    cov = analyze_openvino(xml, profile, None, "shipped")
    if not cov.available:
        msg = f"OpenVINO cannot query {xml.name}: {'; '.join(cov.notes)}"
        raise StageError(msg)
    return {"nodes_total": cov.nodes_total, "nodes_on_accelerator": cov.nodes_supported, "partitions": cov.partitions,
            "partition_sizes": list(cov.partition_sizes), "unsupported": [u.to_json() for u in cov.unsupported]}


def ov_convert_stage(ctx: Context, decisions: list[str]) -> Context:
    """The chosen candidate becomes the shipped ``<name>.xml``/``.bin``; record conversion and coverage."""
    device = ctx.target.runtime_device or ovr.DEVICE_DEFAULT
    models = []
    for m in ctx.models:
        if m.current.suffix != ".xml" or m.recipe is None:
            msg = f"{m.name}: convert expects the IR chosen by the quantize stage, got {m.current.name}"
            raise StageError(msg)
        xml = ctx.work / f"{m.name}.xml"
        shutil.copyfile(m.current, xml)
        shutil.copyfile(m.current.with_suffix(".bin"), xml.with_suffix(".bin"))
        inputs = ovr.ir_inputs(xml)
        dynamic = any(not isinstance(d, int) for dims in inputs.values() for d in dims)
        if m.fixed_shapes and dynamic:
            msg = f"{m.name}: the IR kept dynamic dimensions although the shapes were fixed ({inputs})"
            raise StageError(msg)
        recipe = m.recipe["recipe"]
        weights = {"static-int8": "int8 (NNCF) + " + ("fp16" if m.recipe["settings"].get("compress_to_fp16") else "fp32"),
                   "fp16": "fp16", "none": "fp32"}[recipe]
        ops = ovr.ir_ops(xml)
        conversion = {
            "format": "openvino-ir",
            "converter": "openvino.convert_model + openvino.save_model",
            "openvino_version": ovr.openvino_version(),
            "compress_to_fp16": bool(m.recipe["settings"].get("compress_to_fp16")),
            "weights": weights,
            "inference_precision_hint": ovr.PRECISION_HINT,
            "precision_note": ("compress_to_fp16 changes how weights are stored, not how they are computed; the "
                               "compute precision is INFERENCE_PRECISION_HINT in runtime_config.json"),
            "shapes": "fixed" if not dynamic else "dynamic",
            "inputs": inputs,
            "files": [xml.name, xml.with_suffix(".bin").name],
            "op_types": len([t for t in ops if t not in ("Parameter", "Result", "Constant")]),
            "rt_info_removed": list(ovr.RT_INFO_DROPPED),
        }
        decisions.append(f"{m.name}: OpenVINO IR {xml.name} ({weights} weights, "
                         f"{'fixed' if not dynamic else 'dynamic'} input shapes)")
        coverage = _coverage(xml, ctx.target)
        decisions.append(f"{m.name}: {coverage['nodes_on_accelerator']}/{coverage['nodes_total']} operations supported "
                         f"by the OpenVINO {device} plugin (query_model)")
        models.append(replace(m, current=xml, artifact=xml, artifact_extra=(xml.with_suffix(".bin"),),
                              conversion=conversion, coverage=coverage))
    return ctx.with_models(models)


# ------------------------------------------------------------------------------ verify


def ov_verify_stage(ctx: Context, decisions: list[str], *, threads: int = 1) -> Context:
    """The shipped IR against the fp32 original; host timings interleaved with onnxruntime."""
    device = ctx.target.runtime_device or ovr.DEVICE_DEFAULT
    models, measured = [], {}
    for m in ctx.models:
        outs = ovr.run_ir(m.artifact, list(m.verify_inputs), device=device)
        metrics = round_metrics(compare_outputs(list(m.reference_outputs), outs))
        tol = m.recipe["tolerance"]
        ok, why = accept(metrics, Tolerance(**tol))
        if not ok:
            msg = f"{m.name}: the shipped {m.artifact.name} fails verification against the fp32 original: {why}"
            raise StageError(msg)
        decisions.append(f"{m.name}: shipped {m.artifact.name} verified against the fp32 original "
                         f"(OpenVINO {device}): {why}")
        verification = {"passed": True, "inputs": list(m.input_notes), "tolerance": tol, "outputs": metrics}
        sample = m.verify_inputs[0]
        load = ovr.first_load(m.artifact, sample, threads, device)
        lat = ovr.compare_with_onnxruntime(m.source.path, m.artifact, sample, threads=threads, device=device)
        measured[m.name] = {
            "where": (f"this build host: the shipped IR in OpenVINO {device}, the fp32 original ONNX in onnxruntime "
                      "CPUExecutionProvider, interleaved (a measurement of the host, not of the target device)"),
            "session": {"onnxruntime": {"level": "default (all)", "threads": threads},
                        "openvino": {"device": device, **ovr.properties(threads)}},
            "fp32_original": lat["ref"], "shipped": lat["cand"], "ratio": lat["ratio"],
            "speedup": (1.0 / lat["ratio"]) if lat["ratio"] else None,
            "openvino": load,
        }
        models.append(replace(m, verification=verification))
    return ctx.with_models(models).measure("host_latency", measured)


# ------------------------------------------------------------------------------ package


def _runtime_config(ctx: Context, version: str, names: dict[str, tuple[str, str]]) -> dict:
    device = ctx.target.runtime_device or ovr.DEVICE_DEFAULT
    return {
        "runtime": "openvino",
        "openvino_version": version,
        "device": device,
        "properties": ovr.properties(ovr.DEVICE_THREADS),
        "models": {m.name: {"xml": names[m.name][0], "bin": names[m.name][1], "recipe": m.recipe["recipe"],
                            "weights": m.conversion["weights"], "shapes": m.conversion["shapes"]} for m in ctx.models},
        "notes": [
            "pass 'properties' to openvino.Core().compile_model(xml, device, properties)",
            "INFERENCE_PRECISION_HINT sets the compute precision of float layers; fp16 weights in the IR are storage "
            "only (openvino#15439); int8 layers from NNCF run in int8 whatever the hint",
            "INFERENCE_NUM_THREADS 0 lets the plugin choose (all physical cores under the LATENCY hint)",
        ],
    }


def ov_package_stage(ctx: Context, decisions: list[str]) -> Context:
    version = ovr.openvino_version()
    single = len(ctx.models) == 1
    names: dict[str, tuple[str, str]] = {}
    files: dict[str, Path] = {}
    op_types: set[str] = set()
    for m in ctx.models:
        stem = "model" if single else m.name
        names[m.name] = (f"{stem}.xml", f"{stem}.bin")
        files[f"{stem}.xml"] = m.artifact
        files[f"{stem}.bin"] = m.artifact.with_suffix(".bin")
        op_types |= set(ovr.ir_ops(m.artifact)) - {"Parameter", "Result", "Constant"}
    config = ctx.work / "runtime_config.json"
    config.write_text(json.dumps(_runtime_config(ctx, version, names), indent=2, sort_keys=True) + "\n",
                      encoding="utf-8", newline="\n")
    requirements = ctx.work / "requirements.txt"
    requirements.write_text(f"openvino=={version}  # the version that wrote the IR\n", encoding="utf-8", newline="\n")
    files["runtime_config.json"] = config
    files["requirements.txt"] = requirements
    decisions.append(f"bundle pins openvino=={version} (the version that wrote the IR) and records device, "
                     "PERFORMANCE_HINT, INFERENCE_PRECISION_HINT and threads in runtime_config.json")
    ctx = replace(ctx, reduce={"runtime": "openvino", "openvino_version": version, "requirements": "requirements.txt",
                               "runtime_config": "runtime_config.json", "op_count": len(op_types),
                               "op_types": sorted(op_types)})
    return ctx.add_files(files)


OPENVINO_STAGES = (
    ("prepare", prepare_stage),
    ("quantize", ov_quantize_stage),
    ("convert", ov_convert_stage),
    ("verify", ov_verify_stage),
    ("package", ov_package_stage),
)
