"""``manifest.json``, rendered from the stages' records at the end of a build.

It names no path, time or machine: the same inputs give the same bytes. Host measurements live in
the build record beside the bundle (``<target>.build.json``), which the manifest points to.
"""

from __future__ import annotations

import sys
from typing import Any

from .. import reference
from ..records import ShippedCoverage

SCHEMA_VERSION = 1
CPU_COVERAGE_NOTE = "CPU target: the CPU execution provider runs every node"


def toolchain(backend) -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime

    from .. import __version__

    versions = {"edgepack": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "numpy": numpy.__version__, "python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    return {**versions, **backend.toolchain()}


def _json(record) -> Any:
    return record.to_json() if record is not None else None


def model_entry(m) -> dict[str, Any]:
    info = m.source.info
    coverage = m.coverage if m.coverage is not None else ShippedCoverage.whole_graph(info.nodes_total, CPU_COVERAGE_NOTE)
    return {
        "name": m.name,
        "artifact": m.artifact.name if m.artifact else None,
        "source_model": {"file": info.name, "sha256": info.sha256, "bytes": info.file_bytes + info.external_data_bytes,
                         "inputs": [t.to_json() for t in info.inputs], "outputs": [t.to_json() for t in info.outputs]},
        "shipped_inputs": {k: list(v) for k, v in m.shapes.items()} if m.fixed_shapes else [t.to_json() for t in info.inputs],
        "quantization": _json(m.recipe),
        "conversion": _json(m.conversion),
        "coverage": coverage.to_json(),
        "verification": _json(m.verification),
        "estimates": _json(m.estimates),
        **({"preprocessing": m.preprocessing} if m.preprocessing else {}),
        "outputs": outputs(m),
        "reference": reference.entry(m),
    }


def outputs(m) -> list[dict[str, Any]]:
    """The shipped model's outputs: name, dtype, shape as the reference run gave them (the source's
    declared shape when there is no reference run), and what they look like (see render.readme)."""
    from .readme import output_meaning

    ran = m.reference_outputs[0] if m.reference_outputs else {}
    out = []
    for t in m.source.info.outputs:
        value = ran.get(t.name)
        shape = [int(d) for d in value.shape] if hasattr(value, "shape") else t.to_json()["shape"]
        out.append({"name": t.name, "dtype": t.dtype, "shape": shape, "meaning": output_meaning(t, value)})
    return out


def manifest(ctx, artifacts: list[dict[str, Any]], backend) -> dict[str, Any]:
    p = ctx.target
    models = [model_entry(m) for m in ctx.models]

    def top(key: str):
        return models[0][key] if len(models) == 1 else {m["name"]: m[key] for m in models}

    decisions = [f"{r.stage}: {d}" for r in ctx.records for d in r.decisions]
    return {
        "schema_version": SCHEMA_VERSION,
        "target": {"name": p.name, "profile": p.source, "family": p.family, "engine": p.engine,
                   "execution_provider": p.execution_provider, "provider_options": dict(sorted(p.provider_options.items())),
                   "arch": p.arch, "abi": p.abi, "device": p.device.name},
        "source_model": top("source_model"),
        "models": models,
        "artifacts": artifacts,
        "toolchain": toolchain(backend),
        "recipe": {"shapes": top("shipped_inputs"), "quantization": top("quantization"), "conversion": top("conversion"),
                   "decisions": decisions},
        "runtime": backend.runtime_config(ctx),
        "reduced_build": _json(ctx.package),
        "coverage": top("coverage"),
        "verification": top("verification"),
        "estimates": top("estimates"),
        "measured": {"record": f"../{p.name}.build.json",
                     "note": "host latencies and stage timings change from run to run; they are kept in the build "
                             "record beside the bundle so the bundle itself stays byte-identical"},
    }
