"""convert: the chosen candidate's shipped artifact (.ort, IR) and its files (and companions such as a
.bin) join the bundle. The recipe selection already converted every candidate it judged (the converted
file is what was checked); this stage records the chosen one's conversion, and converts a model that
reached it unconverted."""

from __future__ import annotations

from dataclasses import replace

from ..backends import backend_for
from ..pipeline import Context


def convert_stage(ctx: Context, decisions: list[str]) -> Context:
    backend = backend_for(ctx.target)
    models = []
    for m in ctx.models:
        if m.artifact is None:
            m = backend.convert(ctx, m, decisions)
        else:
            decisions.extend(m.conversion_notes)
        models.append(replace(m, conversion_notes=()))
    files = {p.name: p for m in models for p in (m.artifact, *m.companions)}
    return ctx.with_models(models).add_files(files)
