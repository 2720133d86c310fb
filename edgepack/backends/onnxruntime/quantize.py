"""Quantize a model file with one recipe (static-int8, dynamic-int8, fp16, none).

``quantize(src, dst, recipe, calibration, is_accelerator=...)`` reads ``src``, writes the
quantized model to ``dst`` and returns a JSON-able decision record: what was done, with which
settings, node counts before and after, and why.

onnxruntime is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.version_converter

from ... import limits
from ...errors import CalibrationError, StageError, first_line
from ...flops import classify
from ...model import iter_tensors
from ...runtime.capture import captured_output
from . import ranges
from .fastpaths import faster_quantizer
from .ranges import HAS_CALIBRATION_CACHE, _reader, _SampleReader, takes_calibration_cache  # noqa: F401
from .mixed_probe import range_mixing_later
from ...target import Recipe
from ...transforms import LARGE_MODEL_BYTES

DYNAMIC_OP_TYPES = ("MatMul", "Gemm")  # never Conv: ConvInteger runs slower than fp32 Conv (onnxruntime#9694)
_QUANT_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}
STREAM_ABOVE_BYTES = 256 * 2**20  # dynamic int8 of larger models goes one weight at a time


# ------------------------------------------------------------------------------ helpers


def _op_counts(path: Path) -> dict[str, int]:
    model = onnx.load_model(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _model_bytes(path: Path) -> int:
    """File size plus the bytes of its external data."""
    model = onnx.load_model(str(path), load_external_data=False)
    external = 0
    for _, t in iter_tensors(model.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            external += int(info.get("length", 0) or 0)
    return path.stat().st_size + external



def _fail(what: str, exc: BaseException) -> StageError:
    from ...foreign import describe, is_foreign

    msg = describe(exc, "onnxruntime quantizer", what) if is_foreign(exc) else f"{what} failed: {first_line(exc)}"
    return StageError(msg)


_saves = threading.local()  # the work folder of the quant_pre_process running in this thread


class _SavesInWorkFolder:
    """onnxruntime's symbolic shape inference, when it fails, saves ``sym_shape_infer_temp.onnx`` and a
    ``<uuid>.data`` into the *current working folder* (onnxruntime/tools/symbolic_shape_infer.py) - the
    user's folder. Its module's ``onnx`` is this stand-in: relative paths are saved into the work folder
    of the quant_pre_process running in that thread (the same thread: targets build in parallel)."""

    def __init__(self, module):
        self._onnx = module

    def __getattr__(self, name):
        return getattr(self._onnx, name)

    def save_model(self, proto, f, *args, **kwargs):
        folder = getattr(_saves, "folder", None)
        if folder is not None and isinstance(f, (str, os.PathLike)) and not os.path.isabs(f):
            f = os.path.join(folder, f)
        return self._onnx.save_model(proto, f, *args, **kwargs)


def _quiet_symbolic_saves() -> None:
    from onnxruntime.tools import symbolic_shape_infer

    if not isinstance(symbolic_shape_infer.onnx, _SavesInWorkFolder):
        symbolic_shape_infer.onnx = _SavesInWorkFolder(symbolic_shape_infer.onnx)


# quant_pre_process's own pass is onnxruntime's basic level - what the prepare stage applied and checked (or
# refused, when it moved the outputs beyond onnxruntime's own noise): not run twice, nor against that check
_OPTIMIZED = ("its basic optimizations skipped: the prepare stage applied them (BatchNorm folded into Conv) "
              "where they passed its check")


def _static_shapes_known(src: Path, large: bool) -> bool:
    """Whether onnx's own shape inference gives every node output of ``src`` a fully static shape: then
    onnxruntime's symbolic shape inference has nothing to add (it exists for the dimensions onnx cannot
    infer) and quant_pre_process skips it - and the sympy import it needs. False for large models and
    for graphs with subgraphs (If/Loop/Scan: a branch's tensors may share names with another's)."""
    if large:
        return False
    try:
        model = onnx.load_model(str(src), load_external_data=False)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node
               for a in n.attribute):
            return False
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - onnx raises assorted errors on graphs it cannot infer
        return False
    known = {v.name: v for v in (*model.graph.value_info, *model.graph.output)}
    for node in model.graph.node:
        for out in filter(None, node.output):
            v = known.get(out)
            if v is None or not v.type.HasField("tensor_type") or not v.type.tensor_type.HasField("shape"):
                return False
            if any(not d.HasField("dim_value") for d in v.type.tensor_type.shape.dim):
                return False
    return True


def _preprocess(src: Path, dst: Path, notes: list[str]) -> Path:
    """onnxruntime's quant_pre_process (symbolic shapes + basic optimizations); ``src`` if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    large = _model_bytes(src) > LARGE_MODEL_BYTES
    tries = (False, True)  # symbolic shape inference, then onnx's alone
    if _static_shapes_known(src, large):
        tries = (False,)  # if onnx's alone fails below, only the symbolic pass is left to try
        try:
            quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001 - then the full pre-processing below says why
            notes.append(f"quant_pre_process (skip_symbolic_shape=True) failed: {first_line(exc)}")
        else:
            notes.append("pre-processed with onnxruntime quant_pre_process (onnx shape inference: every tensor's shape "
                         f"is static and known, so symbolic inference has nothing to add; {_OPTIMIZED})")
            return dst
    _quiet_symbolic_saves()
    for skip_symbolic in tries:
        try:
            _saves.folder = str(dst.parent)
            quant_pre_process(str(src), str(dst), skip_optimization=True, skip_symbolic_shape=skip_symbolic,
                              save_as_external_data=large)
        except Exception as exc:  # noqa: BLE001 - symbolic shape inference raises assorted errors
            notes.append(f"quant_pre_process (skip_symbolic_shape={skip_symbolic}) failed: {first_line(exc)}")
            continue
        finally:
            _saves.folder = None
        notes.append(f"pre-processed with onnxruntime quant_pre_process ({'onnx' if skip_symbolic else 'symbolic'} "
                     f"shape inference; {_OPTIMIZED})")
        return dst
    notes.append("quantizing the model as given (pre-processing failed)")
    return src


def _quantizer_input(src: Path, dst: Path, per_channel: bool, notes: list[str]) -> Path:
    """The model the quantizer reads: pre-processed beside ``dst``, at opset 13+ for per-channel weights
    (per-channel DequantizeLinear needs its 'axis')."""
    pre = _preprocess(src, dst.with_name(dst.stem + ".pre.onnx"), notes)
    return _at_least_opset(pre, 13, notes) if per_channel else pre


# ------------------------------------------------------------------------------ recipes


def _static_int8(src: Path, dst: Path, recipe: Recipe, calibration, is_accelerator: bool, notes: list[str]) -> dict:
    if not calibration:
        msg = "recipe 'static-int8' needs calibration data: pass --calibration DIR with one .npy per model input"
        raise CalibrationError(msg)
    if recipe.activation_type is None:
        notes.append("no activation_type in the recipe: uint8 activations (U8S8, the widest-supported kernel pair)")
    if is_accelerator:
        notes.append("accelerator target: asymmetric activations, symmetric weights, a dedicated QDQ pair per consumer")
    pre = _quantizer_input(src, dst, recipe.per_channel, notes)
    mixing = range_mixing_later(pre, calibration)  # its runs go on beside the calibration's Python
    culprits: dict[str, str] = {}

    def then() -> tuple[Path, tuple[str, ...]]:
        named, found = mixing()
        culprits.update(found)
        return named, tuple(found)

    settings = quantize_qdq(pre, dst, recipe, calibration, is_accelerator=is_accelerator, then=then)
    if culprits:
        settings["float_culprits"] = [{"node": n, "why": w} for n, w in sorted(culprits.items())]
        notes.append(f"{len(culprits)} node(s) at the outputs kept float: " + "; ".join(sorted(set(culprits.values()))))
    return settings


CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")

@limits.bounded_steps("onnxruntime static int8 calibration")
def quantize_qdq(pre: Path, dst: Path, recipe: Recipe, calibration, *, is_accelerator: bool, method: str = "MinMax",
                 calib_options: dict | None = None, exclude: tuple[str, ...] = (), cache: Path | None = None,
                 then=None) -> dict:
    """onnxruntime quantize_static on the pre-processed model ``pre`` with the recipe's types (QDQ).

    ``method`` and ``calib_options`` (CalibMovingAverage, CalibPercentile ...) choose the calibration;
    ``exclude`` names nodes kept in float (mixed precision); with ``cache`` the calibrated ranges are
    saved there on the first call and read back (no model runs) on later ones, where onnxruntime can.
    ``then``: called after the calibration, returns (the model to quantize - ``pre`` with the same
    tensors -, the nodes to exclude) in place of ``pre`` and ``exclude``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    act = recipe.activation_type or "uint8"
    weight = recipe.weight_type or "int8"
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True, **(calib_options or {})}
    if is_accelerator:
        # one DQ per consumer: an EP partition boundary never shares a DQ node with a CPU-side consumer
        extra["DedicatedQDQPair"] = True
    settings: dict[str, Any] = {
        "format": "QDQ",
        "activation_type": act,
        "weight_type": weight,
        "per_channel": recipe.per_channel,
        "calibrate_method": method,
        "calibration_samples": len(calibration),
        "extra_options": extra,
    }
    if exclude:
        settings["nodes_to_exclude"] = sorted(exclude)
    kwargs: dict[str, Any] = {}
    reader = _reader(calibration)
    act_type, weight_type = getattr(QuantType, _QUANT_TYPES[act]), getattr(QuantType, _QUANT_TYPES[weight])
    external = _model_bytes(pre) > LARGE_MODEL_BYTES
    pinned = takes_calibration_cache() and ranges.pinned_applies(extra)
    with contextlib.ExitStack() as stack:
        if cache is None and pinned:  # this call's own ranges: never a file another model left under the name
            own = stack.enter_context(tempfile.TemporaryDirectory(prefix="ranges.", dir=dst.parent))
            cache = Path(own) / "ranges.json"
        if cache is not None and takes_calibration_cache():
            kwargs[HAS_CALIBRATION_CACHE] = str(cache)
        quiet = captured_output if method != "MinMax" else contextlib.nullcontext  # histogram calibrators print
        try:
            if (cache is not None and not cache.is_file() and pinned
                    and not ranges.opset_updated(pre, weight_type, act_type)):
                with quiet():
                    ranges.collect_ranges(pre, calibration, getattr(CalibrationMethod, method), extra, external, cache)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises Fail/InvalidArgument/ValueError...
            raise _fail("static int8 quantization (onnxruntime quantize_static)", exc) from exc
        if then is not None:  # what to keep float, found while the calibration ran
            pre, exclude = then()
            if exclude:
                settings["nodes_to_exclude"] = sorted(exclude)
        if cache is not None and cache.is_file():
            reader = None  # the ranges are calibrated: quantize_static reads them instead of running the model
        try:
            with quiet(), faster_quantizer():
                quantize_static(
                    str(pre),
                    str(dst),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    per_channel=recipe.per_channel,
                    activation_type=act_type,
                    weight_type=weight_type,
                    calibrate_method=getattr(CalibrationMethod, method),
                    use_external_data_format=external,
                    nodes_to_exclude=list(exclude),
                    extra_options=extra,
                    **kwargs,
                )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises Fail/InvalidArgument/ValueError...
            raise _fail("static int8 quantization (onnxruntime quantize_static)", exc) from exc
    return settings


def _at_least_opset(path: Path, opset: int, notes: list[str]) -> Path:
    """The model at ``path`` upgraded to ``opset`` with onnx's version converter if it is older."""
    model = onnx.load_model(str(path), load_external_data=False)
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset or _model_bytes(path) > LARGE_MODEL_BYTES:
        return path
    try:
        upgraded = onnx.version_converter.convert_version(onnx.load_model(str(path)), opset)
    except Exception as exc:  # noqa: BLE001 - the converter lacks adapters for some ops
        notes.append(f"opset {current} could not be upgraded to {opset} for per-channel weights: {first_line(exc)}")
        return path
    out = path.with_name(path.stem + f".opset{opset}.onnx")
    onnx.save_model(upgraded, str(out))
    notes.append(f"opset {current} upgraded to {opset} (per-channel DequantizeLinear needs its 'axis')")
    return out


def _streams(src: Path, notes: list[str]) -> onnx.ModelProto | None:
    """``src`` loaded without its external data when it is quantized one weight at a time (see
    :mod:`.streamed`), else None: only when its weights exceed STREAM_ABOVE_BYTES, where
    whole-model quantization needs several times their bytes."""
    from .streamed import can_stream

    size = _model_bytes(src)
    if size <= STREAM_ABOVE_BYTES:
        return None
    model = onnx.load_model(str(src), load_external_data=False)
    if not can_stream(model):
        notes.append(f"model of {size / 2**20:.0f} MiB quantized whole: some MatMul/Gemm types are unknown "
                     "or weights sit in subgraphs, so it cannot be quantized one weight at a time")
        return None
    notes.append(f"model of {size / 2**20:.0f} MiB (above {STREAM_ABOVE_BYTES // 2**20} MiB): quant_pre_process "
                 "skipped (it loads the whole model several times; the prepare stage already ran onnxruntime's "
                 "basic optimizations); each MatMul/Gemm quantized on its own by quantize_dynamic with the same "
                 "settings, one weight in memory at a time")
    return model


def _dynamic_int8(src: Path, dst: Path, recipe: Recipe, notes: list[str]) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    notes.append("op types limited to MatMul/Gemm so Convs never become ConvInteger (slower than fp32 Conv on CPU)")
    notes.append("onnxruntime rewrites each Gemm as MatMul + Add before quantizing (MatMulInteger has no Gemm form)")
    settings = {
        "weight_type": "int8",
        "per_channel": recipe.per_channel,
        "op_types_to_quantize": list(DYNAMIC_OP_TYPES),
    }

    def run(pre: Path, out: Path, large: bool) -> None:
        quantize_dynamic(
            str(pre),
            str(out),
            op_types_to_quantize=list(DYNAMIC_OP_TYPES),
            per_channel=recipe.per_channel,
            weight_type=QuantType.QInt8,
            use_external_data_format=large,
        )

    try:
        model = _streams(src, notes)
        if model is not None:
            from .streamed import quantize_dynamic_streamed

            quantize_dynamic_streamed(src, dst, list(DYNAMIC_OP_TYPES), lambda a, b: run(a, b, False), model)
            del model
        else:
            pre = _quantizer_input(src, dst, recipe.per_channel, notes)
            run(pre, dst, _model_bytes(pre) > LARGE_MODEL_BYTES)
    except Exception as exc:  # noqa: BLE001
        raise _fail("dynamic int8 quantization (onnxruntime quantize_dynamic)", exc) from exc
    return settings


def _convert_types_only(model: onnx.ModelProto, convert, block: list[str]) -> onnx.ModelProto:
    """Run the fp16 converter on the graph with every external tensor stood in by an empty one (the
    converter flips its type without reading data), then put the external references back."""
    model = onnx.shape_inference.infer_shapes(model)  # shapes come from dims: no weights needed
    saved = {}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            saved[t.name] = (list(t.dims), [(e.key, e.value) for e in t.external_data])
            del t.dims[:]
            t.dims.append(0)
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
    half = convert(model, keep_io_types=True, op_block_list=block, disable_shape_infer=True)
    for t in half.graph.initializer:
        if t.name in saved:
            dims, entries = saved[t.name]
            del t.dims[:]
            t.dims.extend(dims)
            for key, value in entries:
                e = t.external_data.add()
                e.key, e.value = key, value
            t.data_location = onnx.TensorProto.EXTERNAL
    # value_info the converter made from the stand-ins carries their empty shape: drop it, runtimes re-infer
    kept = [v for v in half.graph.value_info if v.name not in saved]
    del half.graph.value_info[:]
    half.graph.value_info.extend(kept)
    return half


def _stream_external_weights(model: onnx.ModelProto, src_dir: Path, dst: Path) -> None:
    """Write ``model`` to ``dst`` with its external weights copied into ``dst``.data, converting the
    tensors whose type the fp16 converter flipped to FLOAT16 (their bytes are still float32)."""
    from onnxruntime.transformers.float16 import convert_np_to_float16

    from .streamed import ExternalWeights, read_external

    weights = ExternalWeights(dst, align=64)  # aligned as onnx's own writer does for mmap
    try:
        for t in model.graph.initializer:
            if t.data_location != onnx.TensorProto.EXTERNAL:
                continue
            raw = read_external(t, src_dir)
            if t.data_type == onnx.TensorProto.FLOAT16 and raw.nbytes == 4 * int(np.prod(t.dims, dtype=np.int64)):
                raw = convert_np_to_float16(raw.view(np.float32)).astype(np.float16).view(np.uint8)
            weights.put(t, raw.tobytes())
            del raw
    finally:
        weights.close()
    dst.write_bytes(model.SerializeToString())


def _fp16(src: Path, dst: Path, notes: list[str]) -> dict:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # Q/DQ scales must stay float32 below opset 19; their outputs get a Cast like any blocked op
    block = [*DEFAULT_OP_BLOCK_LIST, "QuantizeLinear", "DequantizeLinear"]
    try:
        model = onnx.load_model(str(src), load_external_data=False)
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        if external:
            # graph types converted without the weights, then the weights stream through one tensor at a time
            half = _convert_types_only(model, convert_float_to_float16, block)
            _stream_external_weights(half, src.parent, dst)
            notes.append("external weights converted one tensor at a time (peak memory: the largest tensor)")
        else:
            half = convert_float_to_float16(onnx.load_model(str(src)), keep_io_types=True, op_block_list=block)
            large = half.ByteSize() > LARGE_MODEL_BYTES
            onnx.save_model(half, str(dst), save_as_external_data=large, location=dst.name + ".data" if large else None)
    except Exception as exc:  # noqa: BLE001
        raise _fail("fp16 conversion (onnxruntime.transformers.float16)", exc) from exc
    notes.append("float32 weights and activations to float16; graph inputs/outputs stay float32 (Cast at the edges)")
    return {"keep_io_types": True, "converter": "onnxruntime.transformers.float16.convert_float_to_float16",
            "kept_float32": ["QuantizeLinear", "DequantizeLinear", "onnxruntime's default block list"]}


# ------------------------------------------------------------------------------ public


def quantize(
    src: Path,
    dst: Path,
    recipe: Recipe,
    calibration: list[dict[str, np.ndarray]] | None,
    *,
    is_accelerator: bool,
) -> dict:
    """Apply ``recipe`` to the model at ``src`` (the prepare stage's graph: onnxruntime's basic optimizations
    are not applied again here), write it to ``dst``, return the decision record.

    ``calibration`` is a list of samples ({input name: array with batch 1}); static int8 needs it.
    Static int8 writes its pre-processed input next to ``dst`` as ``<dst stem>.pre.onnx``.
    """
    src, dst = Path(src), Path(dst)
    notes: list[str] = []
    try:
        model = onnx.load_model(str(src), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise _fail(f"reading {src.name}", exc) from exc
    model_class, evidence = classify(model)
    if recipe.name == "static-int8":
        settings = _static_int8(src, dst, recipe, calibration, is_accelerator, notes)
        action = "static int8 quantization, QDQ format"
    elif recipe.name == "dynamic-int8":
        settings = _dynamic_int8(src, dst, recipe, notes)
        action = "dynamic int8 quantization of MatMul/Gemm weights"
    elif recipe.name == "fp16":
        settings = _fp16(src, dst, notes)
        action = "fp16 conversion"
    elif recipe.name == "none":
        shutil.copyfile(src, dst)
        settings = {}
        action = "none: fp32 model copied unchanged"
    else:
        msg = f"unknown quantization recipe '{recipe.name}'; choose one of: static-int8, dynamic-int8, fp16, none"
        raise StageError(msg)
    before, after = _op_counts(src), _op_counts(dst)
    return {
        "recipe": recipe.name,
        "action": action,
        "applies_to": recipe.applies_to,
        "model_class": model_class,
        "model_class_evidence": evidence,
        "settings": settings,
        "nodes_before": sum(before.values()),
        "nodes_after": sum(after.values()),
        "ops_before": before,
        "ops_after": after,
        "bytes_before": _model_bytes(src),
        "bytes_after": _model_bytes(dst),
        "why": recipe.reason,
        "notes": notes,
    }
