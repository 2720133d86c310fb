"""The shipped files of a QNN bundle and its runtime config.

Per model: ``<name>_ctx.onnx`` + ``<name>_ctx_qnn.bin`` (the EPContext model and the context
binary compiled for the profile's ``soc_model``: the phone skips graph compilation) and
``<name>.onnx`` (the QDQ or fp16 model the context was compiled from: the fallback for another
SoC, which the QNN EP then compiles on the device, or for NNAPI/CPU). ``runtime_config.json``
holds the provider options and the order an app tries them in; the manifest's ``runtime`` block
is the same document.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from ..base import Packaging
from . import context, options, session

EP_PACKAGE = "com.qualcomm.qti:onnxruntime-android-qnn"  # the QNN EP plugin AAR (Qualcomm)
ORT_PACKAGE = "com.microsoft.onnxruntime:onnxruntime-android"  # the ONNX Runtime it plugs into
QNN_RUNTIME_PACKAGE = "com.qualcomm.qti:qnn-runtime"  # libQnnHtp.so and the HTP skeleton libraries
VALIDATED = ("onnxruntime-qnn's docs/execution_providers/QNN-ExecutionProvider.md (plugin 2.3.0): validated against "
             f"{ORT_PACKAGE} 1.24.3 and {QNN_RUNTIME_PACKAGE} 2.45.0; Maven Central lists {EP_PACKAGE} up to 2.6.0 "
             "(central.sonatype.com). The versions matching the onnxruntime-qnn wheel that compiled this bundle could not "
             "be checked from the build host (no Maven access): use the plugin AAR of the same version and the qnn-runtime "
             "whose QAIRT version is the bundle's qnn_sdk (a context binary loads only with a compatible QNN runtime)")
RUNTIME_CONFIG = "runtime_config.json"


def names(ctx) -> dict[str, dict[str, str]]:
    """Bundle file names per model: context model, context binary, fallback model."""
    out = {}
    for m in ctx.models:
        out[m.name] = {"context": f"{m.name}_ctx.onnx", "context_binary": f"{m.name}_ctx{context.CONTEXT_SUFFIX}",
                       "fallback": f"{m.name}.onnx"}
    return out


@dataclass(frozen=True)
class QnnConversion:
    """How the chosen candidate became the EPContext model (manifest ``conversion``)."""

    onnxruntime_qnn: str
    qnn_sdk: str
    soc_model: int
    soc: str
    provider_options: dict[str, str]
    context: dict[str, str]  # context_info(): ep_sdk_version, ep_compatibility_info, ...
    files: dict[str, str]
    ir_version: int
    verified_on: str

    def to_json(self) -> dict[str, Any]:
        return {"format": "qnn-epcontext", "compiler": "onnxruntime InferenceSession with ep.context_enable=1, "
                "ep.context_embed_mode=0, session.disable_cpu_ep_fallback=1; model given as bytes, in a fresh process",
                "onnxruntime_qnn": self.onnxruntime_qnn, "qnn_sdk": self.qnn_sdk, "soc_model": self.soc_model,
                "soc": self.soc, "provider_options": self.provider_options, **self.context, "files": self.files,
                "context_model_ir_version": self.ir_version, "verification_backend": self.verified_on}


def recipe_options(recipe: str | None) -> dict[str, str]:
    """Provider options a recipe adds: fp16 runs any float32 node left in fp16 on the HTP."""
    return {"enable_htp_fp16_precision": "1"} if recipe == "fp16" else {}


def device_options(profile, recipe: str | None) -> dict[str, str]:
    return dict(sorted({**options.device_options(profile.provider_options), **recipe_options(recipe)}.items()))


def _lower_ir(ctx_model: Path, ir_version: int) -> int:
    """The EP writes the context model at its own onnx IR (14 with onnxruntime 1.32); the phone's
    onnxruntime-android may only read older IRs. One EPContext node needs nothing newer than the
    model it was compiled from: keep that model's IR version."""
    model = onnx.load_model(str(ctx_model))
    if model.ir_version > ir_version:
        model.ir_version = ir_version
        ctx_model.write_bytes(model.SerializeToString())
    return model.ir_version


def convert_model(ctx, m, decisions: list[str], verified_on: str):
    """The chosen candidate compiled into its EPContext model + context binary, with the fallback beside it."""
    profile = ctx.target
    files = names(ctx)[m.name]
    out = ctx.work / "bundle"
    out.mkdir(parents=True, exist_ok=True)
    fallback = out / files["fallback"]
    shutil.copyfile(m.current, fallback)
    opts = device_options(profile, m.recipe.name)
    ctx_model, binary = context.compile_context(fallback, out, Path(files["context"]).stem, opts)
    source_ir = onnx.load_model(str(fallback), load_external_data=False).ir_version
    ir = _lower_ir(ctx_model, source_ir)
    info = context.context_info(ctx_model)
    soc = options.soc_of(profile.provider_options)
    versions = session.versions()
    decisions.append(f"{m.name}: QNN context binary for {soc.part} ({soc.name}, soc_model {opts['soc_model']}): "
                     f"{binary.name} {binary.stat().st_size:,} bytes, {ctx_model.name} {ctx_model.stat().st_size:,} bytes "
                     f"(QNN SDK {versions['qnn_sdk']}; compiled from the model bytes in a fresh process, so the bytes "
                     "are reproducible)")
    decisions.append(f"{m.name}: {ctx_model.name} written at ONNX IR {ir} (the IR of the model it was compiled from; "
                     "onnxruntime writes its own newest IR, which older onnxruntime-android releases refuse)")
    decisions.append(f"{m.name}: {fallback.name} ({m.recipe.name}) ships beside it for other SoCs (the QNN EP compiles "
                     "it on the device) and for NNAPI or the CPU")
    conversion = QnnConversion(versions["onnxruntime-qnn"], versions["qnn_sdk"], int(opts["soc_model"]), soc.part, opts,
                               info, dict(files), ir, verified_on)
    return replace(m, artifact=ctx_model, companions=(binary, fallback), analysis_only=(), conversion=conversion)


@dataclass(frozen=True)
class QnnPackage(Packaging):
    """What the app needs beside the files (manifest ``reduced_build``)."""

    onnxruntime_qnn: str
    qnn_sdk: str
    runtime_config: str = RUNTIME_CONFIG

    def to_json(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime-qnn", "onnxruntime_qnn": self.onnxruntime_qnn, "qnn_sdk": self.qnn_sdk,
                "runtime_config": self.runtime_config,
                "android": {"packages": [f"{EP_PACKAGE}:{self.onnxruntime_qnn}", ORT_PACKAGE, QNN_RUNTIME_PACKAGE],
                            "versions_checked": VALIDATED},
                "minimal_build": "none: the QNN EP plugin and the QNN runtime are prebuilt AARs; the context binary "
                                 "holds the compiled graph"}

    def summary(self) -> str:
        return (f"runtime: onnxruntime-qnn {self.onnxruntime_qnn} (QNN SDK {self.qnn_sdk}); {self.runtime_config}; "
                f"Android: {EP_PACKAGE} + {ORT_PACKAGE} + {QNN_RUNTIME_PACKAGE}")


def runtime_config(ctx) -> dict[str, Any]:
    """How an app opens the models: the QNN EP with these options on the context model, else the fallback."""
    profile = ctx.target
    recipe = ctx.models[0].recipe.name if ctx.models and ctx.models[0].recipe else None
    soc = options.soc_of(profile.provider_options)
    models = {}
    for m in ctx.models:
        entry: dict[str, Any] = dict(names(ctx)[m.name])
        if m.conversion is not None:
            entry["ep_compatibility_info"] = m.conversion.context.get("ep_compatibility_info", "")
        models[m.name] = entry
    return {
        "execution_provider": "QNN",
        "ep_library": "libonnxruntime_providers_qnn.so",
        "ep_registration_name": session.EP,
        "provider_options": device_options(profile, recipe),
        "session_config": {},
        "soc_model": int(options.device_options(profile.provider_options)["soc_model"]),
        "soc": f"{soc.part} ({soc.name}, HTP V{soc.htp_arch})",
        "models": models,
        "fallback_order": ["QNN HTP with the context model (this SoC)", "QNN HTP with the fallback model (compiles on "
                           "the device; any Snapdragon HTP)", "NNAPI with the fallback model", "CPU"],
        "notes": [
            "register libonnxruntime_providers_qnn.so as 'QNNExecutionProvider', add its EP devices with these provider "
            "options (backend_type htp loads libQnnHtp.so from the app's native libraries)",
            "open the context model by file path: it names its context binary by file name, in the same folder",
            "a context binary loads only on the SoC it was compiled for and with a compatible QNN runtime "
            "(ep_compatibility_info); if the session cannot be created, fall back in the order above",
        ],
    }


def package(ctx, decisions: list[str]) -> tuple[dict[str, Path], QnnPackage]:
    versions = session.versions()
    path = ctx.work / RUNTIME_CONFIG
    path.write_text(json.dumps(runtime_config(ctx), indent=2, sort_keys=True) + "\n", encoding="utf-8", newline="\n")
    decisions.append(f"{RUNTIME_CONFIG}: QNN provider options and the fallback order (context model, fallback model on "
                     "the QNN EP, NNAPI, CPU)")
    return {RUNTIME_CONFIG: path}, QnnPackage(versions["onnxruntime-qnn"], versions["qnn_sdk"])
