"""convert: the chosen candidate becomes the shipped artifact in the backend's format (.ort, IR);
its files (and companions such as a .bin) join the bundle."""

from __future__ import annotations

from ..backends import backend_for
from ..pipeline import Context


def convert_stage(ctx: Context, decisions: list[str]) -> Context:
    backend = backend_for(ctx.target)
    models = [backend.convert(ctx, m, decisions) for m in ctx.models]
    files = {p.name: p for m in models for p in (m.artifact, *m.companions)}
    return ctx.with_models(models).add_files(files)
