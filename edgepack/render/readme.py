"""The parts every bundle README shares: title, target, reference device, the models and their inputs.
Each backend adds how to load its artifacts on the device (its ``readme``)."""

from __future__ import annotations


def inputs_list(ctx, files: dict[str, str] | None = None) -> str:
    """One line per model input: the file it goes into, its dtype and shape as shipped."""
    lines = []
    for m in ctx.models:
        name = files[m.name] if files else m.artifact.name
        for t in m.source.info.inputs:
            shape = m.shapes.get(t.name, t.shape) if m.fixed_shapes else t.shape
            dims = "x".join(str(d) if isinstance(d, int) else str(d or "?") for d in (shape or ()))
            lines.append(f"- `{name}` input `{t.name}`: {t.dtype} [{dims}]")
    return "\n".join(lines)


def header_lines(ctx, files: dict[str, str] | None = None) -> list[str]:
    """Title, target, reference device, the models with their recipes, and their inputs."""
    p = ctx.target
    name = (lambda m: files[m.name]) if files else (lambda m: m.name)
    recipes = ", ".join(f"`{name(x)}` {x.recipe.name}" for x in ctx.models if x.recipe)
    return [f"# {p.name} bundle", "", f"{p.description}. Reference device: {p.device.name}.", "",
            f"Models: {recipes}. Inputs:", "", inputs_list(ctx, files), ""]


FOOTER = [
    "`manifest.json` lists every file with its sha256, the decisions behind the recipe, and the",
    "verification of the shipped model against the fp32 original.",
    "",
]
