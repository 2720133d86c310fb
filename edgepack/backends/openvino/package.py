"""The shipped IR (``<name>.xml``/``.bin``) with its conversion record, and the bundle's runtime files:
``runtime_config.json`` (device and properties) and ``requirements.txt`` (the openvino that wrote the IR)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...errors import StageError
from ..base import Packaging
from . import ir


@dataclass(frozen=True)
class IrConversion:
    """How the chosen model became its IR (manifest ``conversion``)."""

    openvino_version: str
    compress_to_fp16: bool
    weights: str  # "int8 (NNCF) + fp16", "fp16", "fp32"
    shapes: str  # "fixed" | "dynamic"
    inputs: dict[str, list]
    files: tuple[str, ...]
    op_types: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "openvino-ir",
            "converter": "openvino.convert_model + openvino.save_model",
            "openvino_version": self.openvino_version,
            "compress_to_fp16": self.compress_to_fp16,
            "weights": self.weights,
            "inference_precision_hint": ir.PRECISION_HINT,
            "precision_note": ("compress_to_fp16 changes how weights are stored, not how they are computed; the "
                               "compute precision is INFERENCE_PRECISION_HINT in runtime_config.json"),
            "shapes": self.shapes,
            "inputs": self.inputs,
            "files": list(self.files),
            "op_types": self.op_types,
            "rt_info_removed": list(ir.RT_INFO_DROPPED),
        }


@dataclass(frozen=True)
class OpenVinoPackage(Packaging):
    """The pinned runtime and its config file (manifest ``reduced_build``)."""

    openvino_version: str
    op_types: tuple[str, ...]
    requirements: str = "requirements.txt"
    runtime_config: str = "runtime_config.json"

    def to_json(self) -> dict[str, Any]:
        return {"runtime": "openvino", "openvino_version": self.openvino_version, "requirements": self.requirements,
                "runtime_config": self.runtime_config, "op_count": len(self.op_types), "op_types": list(self.op_types)}

    def summary(self) -> str:
        return (f"runtime: openvino {self.openvino_version} ({len(self.op_types)} op types); "
                f"{self.runtime_config} and {self.requirements}")


_WEIGHTS = {"fp16": "fp16", "none": "fp32"}


def convert_model(ctx, m, decisions: list[str], coverage):
    """The chosen candidate becomes the shipped ``<name>.xml``/``.bin``; conversion and coverage recorded."""
    device = ctx.target.runtime_device or ir.DEVICE_DEFAULT
    if m.current.suffix != ".xml" or m.recipe is None:
        msg = f"{m.name}: convert expects the IR chosen by the quantize stage, got {m.current.name}"
        raise StageError(msg)
    xml = ctx.work / f"{m.name}.xml"
    shutil.copyfile(m.current, xml)
    shutil.copyfile(m.current.with_suffix(".bin"), xml.with_suffix(".bin"))
    inputs = ir.ir_inputs(xml)
    dynamic = any(not isinstance(d, int) for dims in inputs.values() for d in dims)
    if m.fixed_shapes and dynamic:
        msg = f"{m.name}: the IR kept dynamic dimensions although the shapes were fixed ({inputs})"
        raise StageError(msg)
    compress = bool(m.recipe.settings.get("compress_to_fp16"))
    weights = ("int8 (NNCF) + " + ("fp16" if compress else "fp32")) if m.recipe.name == "static-int8" \
        else _WEIGHTS[m.recipe.name]
    ops = ir.ir_ops(xml)
    conversion = IrConversion(ir.openvino_version(), compress, weights, "fixed" if not dynamic else "dynamic", inputs,
                              (xml.name, xml.with_suffix(".bin").name),
                              len([t for t in ops if t not in ("Parameter", "Result", "Constant")]))
    decisions.append(f"{m.name}: OpenVINO IR {xml.name} ({weights} weights, "
                     f"{'fixed' if not dynamic else 'dynamic'} input shapes)")
    cov = coverage(xml, ctx.target)
    decisions.append(f"{m.name}: {cov.nodes_on_accelerator}/{cov.nodes_total} operations supported "
                     f"by the OpenVINO {device} plugin (query_model)")
    return replace(m, current=xml, artifact=xml, companions=(xml.with_suffix(".bin"),), analysis_only=(),
                   conversion=conversion, coverage=cov)


def _runtime_config(ctx, version: str, names: dict[str, tuple[str, str]]) -> dict:
    device = ctx.target.runtime_device or ir.DEVICE_DEFAULT
    return {
        "runtime": "openvino",
        "openvino_version": version,
        "device": device,
        "properties": ir.properties(ir.DEVICE_THREADS),
        "models": {m.name: {"xml": names[m.name][0], "bin": names[m.name][1], "recipe": m.recipe.name,
                            "weights": m.conversion.weights, "shapes": m.conversion.shapes} for m in ctx.models},
        "notes": [
            "pass 'properties' to openvino.Core().compile_model(xml, device, properties)",
            "INFERENCE_PRECISION_HINT sets the compute precision of float layers; fp16 weights in the IR are storage "
            "only (openvino#15439); int8 layers from NNCF run in int8 whatever the hint",
            "INFERENCE_NUM_THREADS 0 lets the plugin choose (all physical cores under the LATENCY hint)",
        ],
    }


def package(ctx, decisions: list[str]) -> tuple[dict[str, Path], OpenVinoPackage]:
    version = ir.openvino_version()
    single = len(ctx.models) == 1
    names: dict[str, tuple[str, str]] = {}
    files: dict[str, Path] = {}  # the IRs themselves were added by the convert stage
    op_types: set[str] = set()
    for m in ctx.models:
        stem = "model" if single else m.name
        names[m.name] = (f"{stem}.xml", f"{stem}.bin")
        op_types |= set(ir.ir_ops(m.artifact)) - {"Parameter", "Result", "Constant"}
    config = ctx.work / "runtime_config.json"
    config.write_text(json.dumps(_runtime_config(ctx, version, names), indent=2, sort_keys=True) + "\n",
                      encoding="utf-8", newline="\n")
    requirements = ctx.work / "requirements.txt"
    requirements.write_text(f"openvino=={version}  # the version that wrote the IR\n", encoding="utf-8", newline="\n")
    files["runtime_config.json"] = config
    files["requirements.txt"] = requirements
    decisions.append(f"bundle pins openvino=={version} (the version that wrote the IR) and records device, "
                     "PERFORMANCE_HINT, INFERENCE_PRECISION_HINT and threads in runtime_config.json")
    return files, OpenVinoPackage(version, tuple(sorted(op_types)))
