"""``edgepack inspect --target <qnn profile>``: what the QNN EP takes, asked of the EP before building.

The HTP has no float32 path, so the prepared fp32 graph is asked about in the two forms a build
tries: QDQ (quantized with two generated samples - the numbers do not matter for placement, the
node types do) and fp16. Both are placed by the QNN EP itself with the profile's ``soc_model``,
first with CPU fallback disabled as in the build, then, if that fails, with fallback allowed to
learn what QNN refuses and why (:mod:`.coverage`). A few seconds for a small CNN.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ...cleanup import tmp_prefix
from ...errors import StageError
from ...partition import Coverage
from . import coverage, qdq, session
from .package import device_options

PLACEMENT_SAMPLES = 2  # generated calibration samples for the placement-only QDQ model
PREPARE_NOTES = [
    "fix input shapes, constant-fold and fold BatchNormalization (onnxruntime basic optimizations)",
    "opset 13 or newer, onnxruntime's qnn_preprocess_model fusions (Gelu, LpNormalization, SpaceToDepth)",
    "QDQ with QNN's rules (uint8, then uint16 activations; int8 symmetric per-channel weights), graph-output Concats "
    "in float; fp16 as the fallback; each candidate runs on this host's QNN HTP backend and the first within its "
    "tolerance ships",
]


def unavailable(profile, scenario: str, why: str) -> Coverage:
    return Coverage(profile.name, profile.execution_provider, scenario, False, notes=(why,))


def scenarios(prepared: Path, specs, profile) -> list[Coverage]:
    """Coverage of the prepared graph as QDQ and as fp16, each from the QNN EP."""
    from ...data.generated import generate_inputs

    out = []
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("qnn-inspect")) as tmp:
        ready = Path(tmp) / "qnn.onnx"
        try:
            qdq.prepare_for_qnn(prepared, ready)
        except StageError as exc:
            return [unavailable(profile, "after prepare", str(exc))]
        soc = device_options(profile, None)["soc_model"]
        quantized = Path(tmp) / "qdq.onnx"
        scenario = f"after prepare, QDQ uint8 on the HTP (soc_model {soc})"
        try:
            qdq.quantize_qdq(ready, quantized, "static-int8", generate_inputs(specs, PLACEMENT_SAMPLES, 0))
            out.append(coverage.analyze(quantized, profile, session.host_options(device_options(profile, None)), scenario,
                                        (f"quantized with {PLACEMENT_SAMPLES} generated samples for placement only: the "
                                         "node types decide placement, the numbers do not",)))
        except StageError as exc:
            out.append(unavailable(profile, scenario, str(exc)))
        half = Path(tmp) / "fp16.onnx"
        scenario = f"after prepare, fp16 on the HTP (soc_model {soc})"
        try:
            qdq.fp16_model(ready, half)
            out.append(coverage.analyze(half, profile, session.host_options(device_options(profile, "fp16")), scenario))
        except StageError as exc:
            out.append(unavailable(profile, scenario, str(exc)))
    return out
