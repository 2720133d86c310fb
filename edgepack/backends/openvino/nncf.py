"""int8 for OpenVINO: NNCF post-training quantization of the OpenVINO model (never onnxruntime's
QLinear*/QDQ ops: OpenVINO cannot import the com.microsoft ones, openvino#17461)."""

from __future__ import annotations

import logging

from ...errors import StageError
from ...runtime.capture import captured_output

NNCF_PRESET = "mixed"  # asymmetric activations: SiLU/HardSwish outputs go negative (YOLO, MobileNetV3)


def nncf_module():
    """The nncf package (imported after OpenVINO, whose import turns NNCF's telemetry off)."""
    from .ir import openvino

    openvino()
    try:
        import nncf
    except ImportError as exc:
        msg = "static-int8 for OpenVINO needs NNCF: pip install 'edgepack[openvino]'"
        raise StageError(msg) from exc
    return nncf


def nncf_quantize(model, samples: list[dict], model_class: str):
    """NNCF int8 PTQ on the OpenVINO model with every calibration sample, in order (deterministic:
    no random subset is drawn when subset_size covers the data set). Returns (model, settings)."""
    nncf = nncf_module()
    nncf.set_log_level(logging.ERROR)
    # full BiasCorrection: the fast variant cost 1.1 points of top-1 on the sample digits CNN
    # (cosine 0.85 against 0.99 on its worst test image)
    kwargs = {"subset_size": len(samples), "preset": nncf.QuantizationPreset.MIXED, "fast_bias_correction": False}
    if model_class == "matmul-heavy":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    # NNCF draws rich progress bars on stdout/stderr; the CLI's output is ours
    with captured_output():
        quantized = nncf.quantize(model, nncf.Dataset(samples), **kwargs)
    settings = {"tool": "nncf.quantize", "nncf_version": nncf.__version__, "preset": NNCF_PRESET,
                "model_type": "transformer" if model_class == "matmul-heavy" else "default",
                "subset_size": len(samples), "fast_bias_correction": False, "target_device": "ANY"}
    return quantized, settings
