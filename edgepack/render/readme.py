"""The parts every bundle README shares: title, target, reference device, the models, their inputs,
outputs and preprocessing, and the reference pair. Each backend adds how to load its artifacts on the
device with a complete snippet that runs one input (its ``readme``)."""

from __future__ import annotations

import json

from .. import reference


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


def _value_range(m, name: str) -> tuple[float, float] | None:
    import numpy as np

    arrays = [s[name] for s in (*m.calibration, *m.verify_inputs) if name in s and hasattr(s[name], "dtype")]
    arrays = [a for a in arrays if a.size and a.dtype.kind in "fiub"]
    if not arrays:
        return None
    return float(min(np.min(a) for a in arrays)), float(max(np.max(a) for a in arrays))


def preprocessing_lines(ctx) -> list[str]:
    """What the model expects as input: the image preprocessing of the calibration folder's
    preprocess.toml, or the tensors' dtype and shape and the range the calibration data spans."""
    lines = ["## Inputs: the preprocessing the model expects", ""]
    for m in ctx.models:
        p = m.preprocessing
        if p:
            h, w = p["size"]
            steps = [f"decode the image as {p['color']}", f"resize to {h}x{w} ({p['resize']}"
                     + (f", pad value {p['pad_value']})" if p["resize"] == "letterbox" else ")"),
                     f"multiply each pixel (0-255) by {p['scale']:.6g}",
                     f"subtract mean {p['mean']} and divide by std {p['std']} per channel",
                     f"lay out as {p['layout']} with a batch axis of 1"]
            lines.append(f"`{m.name}` input `{p['input']}` is an image (from the calibration folder's "
                         "preprocess.toml; also `models[].preprocessing` in manifest.json): "
                         + "; ".join(steps) + ".")
            continue
        for t in m.source.info.inputs:
            shape = m.shapes.get(t.name, t.shape) if m.fixed_shapes else t.shape
            dims = "[" + ", ".join(str(d) if isinstance(d, int) else str(d or "?") for d in (shape or ())) + "]"
            span = _value_range(m, t.name)
            if m.real_samples and span is not None:
                source = f"the calibration data span [{span[0]:.6g}, {span[1]:.6g}]: feed values prepared the same way"
            elif span is not None:
                source = ("there was no calibration data (the build verified on generated inputs): feed what the "
                          "model was trained on")
            else:
                source = "no samples recorded"
            lines.append(f"- `{m.name}` input `{t.name}`: a raw {t.dtype} tensor {dims} (no image preprocessing "
                         f"recorded); {source}.")
    lines.append("")
    return lines


def output_lines(ctx) -> list[str]:
    """The outputs of each model: name, dtype, shape (as the reference run gave it) and what they look like."""
    from .manifest import outputs

    lines = ["## Outputs", ""]
    for m in ctx.models:
        for o in outputs(m):
            dims = "[" + ", ".join(str(d) for d in (o["shape"] or ())) + "]"
            lines.append(f"- `{m.name}` output `{o['name']}`: {o['dtype']} {dims} - {o['meaning']}")
    lines += ["", "(what an output means is inferred from its shape and the reference values; the model's own "
              "documentation has the final word)", ""]
    return lines


def reference_lines(ctx) -> list[str]:
    """Where the reference pair is and how to check a first run with it."""
    entries = [(m, reference.entry(m)) for m in ctx.models]
    entries = [(m, e) for m, e in entries if e]
    if not entries:
        return []
    lines = ["## Check the first run", "",
             "`reference/` holds one input and the fp32 original's outputs on it (raw little-endian, C order; "
             "`models[].reference` in manifest.json has names, dtypes and shapes). Run the input on the device "
             "and compare: per output, equal within 1e-5 of max(|reference|, 1), or cosine similarity at least "
             "the recipe's `cosine_min` (and the same top-1 class where the recipe asks for top-1 agreement). "
             "`edgepack verify` does this on any machine; the sample apps do it on their first run.", ""]
    for m, e in entries:
        for t in e["inputs"] + e["outputs"]:
            lines.append(f"- `{t['file']}`: `{m.name}` {'input' if t in e['inputs'] else 'output'} `{t['name']}` "
                         f"{t['dtype']} {t['shape']}")
    lines.append("")
    return lines


def snippet_fields(ctx) -> dict:
    """Names the snippets use: the first model's artifact, its reference input files, its first output."""
    m = ctx.models[0]
    e = reference.entry(m) or {"inputs": [], "outputs": []}
    first_out = m.source.info.outputs[0].name if m.source.info.outputs else ""
    return {"model": m, "entry": e, "first_output": json.dumps(first_out)}


FOOTER = [
    "`manifest.json` lists every file with its sha256, the decisions behind the recipe, and the",
    "verification of the shipped model against the fp32 original.",
    "",
]


def output_meaning(spec, value) -> str:
    """What an output looks like, from its shape and the reference run's values - an inference,
    worded as one (edgepack does not know what the model was trained to say)."""
    import numpy as np

    if not isinstance(value, np.ndarray):
        return "not a tensor (a sequence or map output): read it with the runtime's own types"
    shape = value.shape
    if value.dtype.kind in "iub":
        return f"integer values {list(shape)} (e.g. labels or indices)"
    if len(shape) == 2 and shape[-1] > 1:
        rows = value.astype(np.float64)
        n = shape[-1]
        if np.all(rows >= 0) and np.all(rows <= 1) and np.allclose(rows.sum(axis=-1), 1.0, atol=1e-3):
            return f"looks like class probabilities: {n} per sample, summing to 1 (argmax = predicted class)"
        return f"looks like class scores (logits): {n} per sample (argmax = predicted class; softmax for probabilities)"
    if len(shape) == 4:
        return f"a [{shape[1]}, {shape[2]}, {shape[3]}] map per sample (e.g. a feature, segmentation or heat map)"
    if len(shape) == 3:
        return f"a [{shape[1]}, {shape[2]}] matrix per sample (e.g. a sequence of vectors or detection rows)"
    if len(shape) == 2:
        return "one value per sample"
    return f"a tensor of shape {list(shape)}"
