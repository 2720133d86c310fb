"""Bundle layout, manifest, checksums and the atomic, reproducible write.

A bundle is staged in a hidden folder beside its destination and renamed into place only when
complete, so a killed build leaves the previous bundle or none, never a mix. Nothing in it names
a path, a time or a machine: the same inputs give byte-identical files.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from . import cleanup, safe_io
from .errors import OutputError
from .model import sha256_file
from .pipeline import Context, ModelState

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def toolchain(engine: str = "onnxruntime") -> dict[str, str]:
    import numpy
    import onnx
    import onnxruntime

    from . import __version__

    versions = {"edgepack": __version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "numpy": numpy.__version__, "python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    if engine == "openvino":
        from importlib.metadata import PackageNotFoundError, version

        for dist in ("openvino", "nncf"):
            try:
                versions[dist] = version(dist)
            except PackageNotFoundError:
                pass
    return versions


def _model_entry(m: ModelState, ctx: Context) -> dict[str, Any]:
    info = m.source.info
    if m.coverage is not None:
        coverage = {k: m.coverage[k] for k in ("nodes_total", "nodes_on_accelerator", "partitions", "partition_sizes")}
        coverage["unsupported"] = m.coverage["unsupported"]
    else:
        total = info.nodes_total
        coverage = {"nodes_total": total, "nodes_on_accelerator": total, "partitions": 1, "partition_sizes": [total],
                    "unsupported": [], "note": "CPU target: the CPU execution provider runs every node"}
    return {
        "name": m.name,
        "artifact": m.artifact.name if m.artifact else None,
        "source_model": {"file": info.name, "sha256": info.sha256, "bytes": info.file_bytes + info.external_data_bytes,
                         "inputs": [t.to_json() for t in info.inputs], "outputs": [t.to_json() for t in info.outputs]},
        "shipped_inputs": {k: list(v) for k, v in m.shapes.items()} if m.fixed_shapes else [t.to_json() for t in info.inputs],
        "quantization": m.recipe,
        "conversion": m.conversion,
        "coverage": coverage,
        "verification": m.verification,
        "estimates": m.estimates,
    }


def manifest(ctx: Context, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    p = ctx.target
    models = [_model_entry(m, ctx) for m in ctx.models]

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
        "toolchain": toolchain(p.engine),
        "recipe": {"shapes": top("shipped_inputs"), "quantization": top("quantization"), "conversion": top("conversion"),
                   "decisions": decisions},
        "runtime": runtime_config(ctx),
        "reduced_build": ctx.reduce,
        "coverage": top("coverage"),
        "verification": top("verification"),
        "estimates": top("estimates"),
        "measured": {"record": f"../{p.name}.build.json",
                     "note": "host latencies and stage timings change from run to run; they are kept in the build "
                             "record beside the bundle so the bundle itself stays byte-identical"},
    }


def runtime_config(ctx: Context) -> dict[str, Any]:
    p = ctx.target
    if p.engine == "openvino":
        return {"execution_provider": p.execution_provider, "device": p.runtime_device or "CPU",
                "config_file": (ctx.reduce or {}).get("runtime_config", "runtime_config.json"),
                "notes": ["openvino.Core().compile_model(<xml>, device, properties from the config file)"]}
    cfg: dict[str, Any] = {"execution_provider": p.execution_provider,
                           "provider_options": dict(sorted(p.provider_options.items())), "session_config": {}}
    if p.optimization_style == "runtime":
        cfg["session_config"]["session.enable_saved_runtime_optimizations"] = "1"
        cfg["notes"] = ["replay the saved runtime optimizations on CPU-EP nodes"]
    return cfg


def check_destination(out: Path, target: str, force: bool) -> Path:
    """Refuse to clobber a non-empty bundle folder without --force, and anything but an edgepack
    bundle even with it (see safe_io.check_replaceable); called before any work."""
    dest = out / target
    safe_io.check_replaceable(dest, force)
    return dest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path, target: str) -> None:
    """Remove staging/old folders that a killed build of ``target`` left behind (their process is gone)."""
    for p in out.glob(f".{glob.escape(target)}.*-*"):  # escaped: a name is never a pattern
        parts = p.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and not _alive(int(parts[1])):
            cleanup.remove(p)  # a file or symlink is unlinked, never followed


def write_bundle(ctx: Context, out: Path, readme: str, force: bool) -> tuple[Path, dict[str, Any]]:
    """Stage every file, write the manifest last, then move the bundle into place atomically."""
    dest = check_destination(out, ctx.target.name, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"output folder {out} cannot be created: {exc.strerror or exc}"
        raise OutputError(msg) from None
    clean_leftovers(out, ctx.target.name)
    cleanup.register_out(out)
    staging = out / f".{ctx.target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        files = dict(ctx.files)
        (staging / "README.md").write_text(readme, encoding="utf-8", newline="\n")
        for rel, src in sorted(files.items()):
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            if os.access(src, os.X_OK):
                dst.chmod(0o755)
        artifacts = []
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                artifacts.append({"path": path.relative_to(staging).as_posix(), "bytes": path.stat().st_size,
                                  "sha256": sha256_file(path)})
        doc = manifest(ctx, artifacts)
        text = json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
        (staging / MANIFEST).write_text(text, encoding="utf-8", newline="\n")
        safe_io.swap_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest, doc
