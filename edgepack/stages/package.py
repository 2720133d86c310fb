"""package (``reduce`` for ONNX Runtime): the runtime files of the bundle - an operator config and a
pinned minimal-runtime build, or a runtime config and a pinned requirement - from the backend."""

from __future__ import annotations

from dataclasses import replace

from ..backends import backend_for
from ..pipeline import Context


def package_stage(ctx: Context, decisions: list[str]) -> Context:
    files, package = backend_for(ctx.target).package(ctx, decisions)
    return replace(ctx.add_files(files), package=package)
