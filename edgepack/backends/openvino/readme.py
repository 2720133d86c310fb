"""The README.md of an intel-openvino bundle: what goes in and comes out, and a complete snippet that
runs one input with the pinned runtime."""

from __future__ import annotations

from ...render import snippets
from ...render.readme import FOOTER, header_lines, output_lines, preprocessing_lines, reference_lines, snippet_fields


def render(ctx) -> str:
    """README text for an OpenVINO bundle (after the package stage: reads ctx.package)."""
    version = ctx.package.openvino_version if ctx.package else ""
    single = len(ctx.models) == 1
    files = {m.name: ("model" if single else m.name) + ".xml" for m in ctx.models}
    fields = snippet_fields(ctx)
    code = snippets.openvino(files[fields["model"].name], fields["entry"])
    return "\n".join([
        *header_lines(ctx, files),
        *preprocessing_lines(ctx),
        *output_lines(ctx),
        "## Run it",
        "",
        "```bash",
        "python3 -m venv venv && . venv/bin/activate",
        f"pip install -r requirements.txt        # openvino {version}, the version that wrote the IR",
        "```",
        "",
        "In this folder, this runs the reference input once:",
        "",
        "```python",
        code,
        "```",
        "",
        "`runtime_config.json` holds the device, `PERFORMANCE_HINT`, `INFERENCE_PRECISION_HINT` and",
        "`INFERENCE_NUM_THREADS`. fp16 weights in an IR are storage only: the compute precision is",
        "`INFERENCE_PRECISION_HINT`. The `.bin` file must sit beside its `.xml` with the same stem. The runtime",
        "is the stock `openvino` wheel (about 85 MB of libraries installed; no reduced build).",
        "",
        *reference_lines(ctx),
        *FOOTER,
    ])
