"""Mixed precision for OpenVINO: when NNCF's full int8 IR fails its judgement, NNCF's own accuracy
control (``nncf.quantize_with_accuracy_control``) reverts the quantized operations that cost the
most back to float until the loss on calibration samples fits a bound; each attempt halves nothing
by guesswork: it tightens the bound (MAX_DROPS), so attempts keep more in float.

Deterministic and bounded: the validation samples are PROBE_SAMPLES evenly spaced calibration
samples (never the held-out verification inputs the selector judges with), ranked in one worker,
at most MAX_REVERTED operations reverted per attempt, no hyper-parameter tuning. The metric is the
mean over those samples of the worst cosine similarity to the fp32 model's outputs, an output a
Concat makes scored per Concat input (onnxruntime's :mod:`..onnxruntime.mixed_probe` pieces).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import onnx

from ...errors import StageError

PROBE_SAMPLES = 8
MAX_DROPS = (0.01, 0.002)  # absolute drop of the metric (fp32: 1.0) allowed at attempt 1, 2
MAX_REVERTED = 32  # operations NNCF may put back in float per attempt


def _pieces(onnx_path: Path, refs: list[dict]) -> list[tuple[str, int | None, int, int]]:
    from ..onnxruntime.mixed_probe import _pieces as pieces_of

    model = onnx.load_model(str(onnx_path), load_external_data=False)
    return [p for out in model.graph.output for p in pieces_of(model, out.name, refs[0])]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def sample_score(ref: dict, out: dict, pieces) -> float:
    """The worst cosine over the watched pieces of one sample's outputs."""
    worst = 1.0
    for name, axis, start, stop in pieces:
        x, y = np.asarray(ref[name]), np.asarray(out[name])
        if axis is not None:
            x, y = np.take(x, range(start, stop), axis=axis), np.take(y, range(start, stop), axis=axis)
        worst = min(worst, _cosine(x, y) if np.all(np.isfinite(y)) else 0.0)
    return worst


def _quantized_ops(xml: Path) -> set[str]:
    """Names of the operations that read a FakeQuantize output (what NNCF quantized)."""
    from .ir import openvino

    model = openvino().Core().read_model(str(xml))
    names = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            for target in op.output(0).get_target_inputs():
                names.add(target.get_node().get_friendly_name())
    return names


def refine(ctx, m, recipe, candidate, judgement, attempt: int):
    """The NNCF accuracy-controlled candidate of ``attempt``, None after the last bound."""
    if attempt > len(MAX_DROPS) or not m.calibration:
        return None
    from ...records import Candidate
    from ...runtime.capture import captured_output
    from . import ir
    from .nncf import NNCF_PRESET, nncf_module
    from .run import infer as _infer

    nncf = nncf_module()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters  # after nncf_module()

    start = time.perf_counter()
    calibration = list(m.calibration)
    every = max(1, len(calibration) // PROBE_SAMPLES)
    probe = calibration[::every][:PROBE_SAMPLES]
    reference = ir.openvino().Core().compile_model(ir.convert(m.prepared), "CPU")
    request = reference.create_infer_request()
    refs = [_infer(request, reference, feed) for feed in probe]
    pieces = _pieces(m.prepared, refs)

    def validate(compiled, items) -> tuple[float, list[float]]:
        req = compiled.create_infer_request()
        scores = [sample_score(refs[i], _infer(req, compiled, probe[i]), pieces) for i, _ in items]
        return float(np.mean(scores)), scores

    model_type = candidate.settings.get("model_type")
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if model_type == "transformer" else {}
    max_drop = MAX_DROPS[attempt - 1]
    nncf.set_log_level(logging.ERROR)
    try:
        with captured_output():
            quantized = nncf.quantize_with_accuracy_control(
                ir.convert(m.prepared), nncf.Dataset(calibration),
                nncf.Dataset(list(enumerate(probe)), lambda item: item[1]), validate,
                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(calibration), fast_bias_correction=False,
                advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                    max_num_iterations=MAX_REVERTED, ranking_subset_size=len(probe), num_ranking_workers=1),
                **kwargs)
    except StageError:
        raise
    except Exception as exc:  # noqa: BLE001 - NNCF raises assorted errors for models it cannot handle
        msg = f"NNCF accuracy control failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise StageError(msg) from exc
    dst = ctx.work / f"{m.name}.{recipe.name}.mixed{attempt}.xml"
    compress = ctx.target.compress_to_fp16
    ir.save(quantized, dst, compress)
    ops = ir.ir_ops(dst)
    if not ops.get("FakeQuantize"):
        return None
    floated = sorted(_quantized_ops(candidate.path) - _quantized_ops(dst))
    settings = {**candidate.settings, "tool": "nncf.quantize_with_accuracy_control", "preset": NNCF_PRESET,
                "mixed_precision": {
                    "why": f"NNCF full int8 failed its judgement ({judgement.reason})" if attempt == 1 else
                           f"attempt {attempt - 1} failed its judgement ({judgement.reason})",
                    "attempt": attempt, "max_drop": max_drop, "drop_type": "absolute",
                    "metric": "mean over the validation samples of the worst cosine to the fp32 outputs "
                              "(an output a Concat makes: per Concat input)",
                    "validation": f"{len(probe)} evenly spaced calibration samples (never the verification inputs)",
                    "max_reverted": MAX_REVERTED, "float_ops": floated,
                    "fake_quantize": {"full_int8": candidate.ops_after.get("FakeQuantize", 0),
                                      "mixed": ops.get("FakeQuantize", 0)}}}
    notes = (*candidate.notes, f"mixed precision: NNCF accuracy control put {len(floated)} operation(s) back in float "
                               f"(bound: drop <= {max_drop} of the validation cosine)")
    _record_seconds(ctx, m, attempt, time.perf_counter() - start)
    return Candidate(recipe.name, dst, settings, notes, ops, candidate.bytes_fp32, ir.ir_bytes(dst), None)


def _record_seconds(ctx, m, attempt: int, seconds: float) -> None:
    logging.getLogger("edgepack").info("%s: NNCF accuracy control attempt %d took %.1fs", m.name, attempt, seconds)
