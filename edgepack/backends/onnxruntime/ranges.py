"""Calibrated activation ranges that do not depend on the build host, collected two runs at a time.

onnxruntime's ``quantize_static`` runs its calibration graph (the model plus a ReduceMin/ReduceMax per
tensor) in a session with the default intra-op thread count - one per core of the build host - and with
optimizations off the convolutions' results depend on that count: the same model and samples
calibrated at 2 and 4 threads gave 17 and 115 of 290 ranges differing in their last bits from 1 thread
(nudenet YOLOv8n, 32 real samples, AMD EPYC: ``python benchmarks/bench_calibration.py``), so the shipped
int8 bytes depended on how many cores built them.

Here the ranges are collected by onnxruntime's own calibrator (its augmented graph, its range merging,
its ``TensorsData``), in a session pinned to CALIBRATION_THREADS intra-op threads on every host, with up
to :func:`edgepack.runtime.ort.run_workers` samples in flight at once (Run is thread-safe; each run is the
same computation, so the ranges equal a serial collection's), and saved where ``quantize_static``'s
``calibration_cache_path`` reads them back: quantize_static then quantizes exactly as it would have,
without running the model itself.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ... import limits

# Intra-op threads of every calibration run, whatever the host: the count onnxruntime chose by default
# on the two-core hosts that wrote the committed bundle digests, so those bundles keep their bytes.
CALIBRATION_THREADS = 2
WINDOW = 4  # samples computed ahead per worker: the calibrator keeps only their ranges

# quantize_static's extra_options that reach the calibrator, as it maps them (onnxruntime/quantization/quantize.py)
CALIB_EXTRA_OPTIONS = (("CalibTensorRangeSymmetric", "symmetric"), ("CalibMovingAverage", "moving_average"),
                       ("CalibMovingAverageConstant", "averaging_constant"),
                       ("CalibMaxIntermediateOutputs", "max_intermediate_outputs"), ("CalibPercentile", "percentile"))
# extra_options under which quantize_static calibrates a model other than its input, or in pieces
OWN_CALIBRATION = ("SmoothQuant", "CalibStridedMinMax", "TensorQuantOverrides", "BlockSize")


HAS_CALIBRATION_CACHE = "calibration_cache_path"  # quantize_static's keyword (onnxruntime >= 1.25)


def takes_calibration_cache() -> bool:
    """Whether this onnxruntime's quantize_static can save and reuse calibrated ranges."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return HAS_CALIBRATION_CACHE in inspect.signature(quantize_static).parameters


class _SampleReader:
    """onnxruntime CalibrationDataReader over a list of {input name: array} samples."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._samples = samples
        self._next, self._end = 0, len(samples)

    def __len__(self) -> int:
        return len(self._samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read only samples [start, end) (quantize_static's CalibStridedMinMax: a few samples' activations
        in memory at a time)."""
        self._next, self._end = start_index, min(end_index, len(self._samples))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            limits.end_step()
            return None
        limits.step()  # onnxruntime runs the model once per sample: each run gets the time limit
        self._next += 1
        return self._samples[self._next - 1]

    def rewind(self) -> None:
        self._next, self._end = 0, len(self._samples)


def _reader(samples: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_SampleReader, CalibrationDataReader):
        pass

    return Reader(samples)


class PinnedRuns:
    """Stands in for the calibrator's InferenceSession: the same augmented graph at the same level
    (optimizations off), CALIBRATION_THREADS intra-op threads, the calibration samples computed ahead a
    few at a time on ``workers`` threads and handed out in the order the calibrator asks for them."""

    def __init__(self, path: str, samples: list[dict], workers: int):
        from ...runtime.ort import inference_session, session_options

        so = session_options(level_name="disable", threads=CALIBRATION_THREADS,
                             config=(("session.intra_op.allow_spinning", "0"),))  # runs share the cores
        self._sess = inference_session(path, so)
        self._samples, self._workers = samples, workers
        self._next = 0
        self._ready: dict[int, list] = {}

    def get_inputs(self):
        return self._sess.get_inputs()

    def get_outputs(self):
        return self._sess.get_outputs()

    def _run(self, feed: dict) -> list:
        return limits.run_ort(self._sess, feed)

    def run(self, output_names, feed: dict, run_options=None) -> list:
        i = self._next
        if output_names is not None or i >= len(self._samples) or feed is not self._samples[i]:
            return self._sess.run(output_names, feed, run_options)  # not the calibrator's next sample: as asked
        self._next += 1
        if i not in self._ready:
            self._fill(i)
        return self._ready.pop(i)

    def _fill(self, start: int) -> None:
        end = min(len(self._samples), start + self._workers * WINDOW)
        batch = self._samples[start:end]
        if self._workers == 1 or len(batch) == 1:
            self._ready[start] = self._run(batch[0])
            return
        from ...runtime.lane import LANE

        # ahead of the lane's other jobs; this thread runs them too, so two are in flight
        futures = [LANE.submit(self._run, feed, first=True) for feed in batch]
        try:
            for k, out in enumerate(LANE.results(futures, first_only=True)):
                self._ready[start + k] = out
        finally:
            for f in futures:  # after a failure, the window's runs not started yet
                f.cancel()


def pinned_applies(extra: dict[str, Any]) -> bool:
    """Whether quantize_static would calibrate its input model in one pass (so ranges from it can stand in)."""
    return not any(extra.get(key) for key in OWN_CALIBRATION)


def opset_updated(pre: Path, weight_type, activation_type) -> bool:
    """Whether quantize_static upgrades ``pre``'s opset before calibrating (it then calibrates the upgraded copy)."""
    import onnx
    from onnxruntime.quantization.quant_utils import update_opset_version

    model = onnx.load_model(str(pre), load_external_data=False)
    try:
        return update_opset_version(model, weight_type, activation_type) is not model
    except Exception:  # noqa: BLE001 - whatever it cannot decide here, quantize_static decides itself
        return True


def _augment_minmax(calibrator) -> None:
    """What ``MinMaxCalibrater.augment_graph`` (onnxruntime 1.32) writes - a ReduceMin and a ReduceMax (each
    with a Reshape to 1-D) per calibrated tensor, their outputs appended to the graph's in the same order -
    in linear time: onnxruntime rebuilds its value-info table and searches the node list for every node it
    adds (YOLOv8n: 0.24 s against 0.04 s, benchmarks/bench_calibration.py). The nodes go after the graph's own (a valid order: they only read its
    tensors) instead of before each tensor's first consumer; onnxruntime orders the graph itself when it
    loads it, and no node computes differently, so the ranges are the same (tests/test_calibration_threads.py
    compares the int8 bytes with quantize_static's own calibration)."""
    import uuid

    import onnx
    from onnx import helper, numpy_helper

    model = calibrator.model
    tensors, _ = calibrator.select_tensors_to_calibrate(model)
    shape_name = str(uuid.uuid4())
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), shape_name))
    infos = {vi.name: vi for vi in model.graph.value_info}
    infos.update({o.name: o for o in model.graph.output})
    infos.update({i.name: i for i in model.graph.input})

    def op_version(op_type: str) -> int:
        for opset in model.opset_import:
            if onnx.defs.has(op_type, opset.domain):
                return opset.version
        raise RuntimeError(f"Model does not contain a version for '{op_type}'.")

    added = []
    for tensor in tensors:
        if tensor not in infos:
            raise ValueError(f"Unable to guess tensor type for tensor {tensor!r}, "
                             "running shape inference before quantization may resolve this issue.")
        elem_type = infos[tensor].type.tensor_type.elem_type
        for op in ("ReduceMin", "ReduceMax"):
            out = f"{tensor}_{op}"
            reduce = helper.make_node(op, [tensor], [out + "_Reshape"], keepdims=1, name=out)
            if calibrator.per_channel:  # as onnxruntime: axis 1 kept; axes an attribute before opset 18
                axes = [0, *range(2, len(infos[tensor].type.tensor_type.shape.dim))]
                if op_version(op) < 18:
                    reduce.attribute.append(helper.make_attribute("axes", axes))
                else:
                    axes_name = str(uuid.uuid4())
                    model.graph.initializer.append(numpy_helper.from_array(np.array(axes, dtype=np.int64), axes_name))
                    reduce.input.append(axes_name)
            added += [reduce, helper.make_node("Reshape", [out + "_Reshape", shape_name], [out], name=out + "_Reshape")]
            model.graph.output.append(helper.make_tensor_value_info(out, elem_type, [None]))
    model.graph.node.extend(added)
    onnx.save(model, calibrator.augmented_model_path, save_as_external_data=calibrator.use_external_data_format)


def collect_ranges(pre: Path, samples: list[dict], method, extra: dict[str, Any], use_external_data_format: bool,
                   cache: Path) -> None:
    """Calibrate ``pre`` on ``samples`` with onnxruntime's calibrator for ``method`` (a CalibrationMethod)
    and write the ranges to ``cache`` in quantize_static's calibration-cache format."""
    from onnxruntime.quantization.calibrate import (CalibrationMethod, MinMaxCalibrater, create_calibrator,
                                                    save_tensors_data)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    from ...runtime.ort import SEQUENTIAL_ABOVE_BYTES, model_bytes_on_disk, run_workers

    op_types = list(set(list(QLinearOpsRegistry.keys()) + list(QDQRegistry.keys())))  # quantize_static's default
    calib_extra = {key: extra[name] for name, key in CALIB_EXTRA_OPTIONS if name in extra}
    with tempfile.TemporaryDirectory(prefix="calib.", dir=cache.parent) as tmp:
        augmented = str(Path(tmp) / "augmented_model.onnx")
        if method == CalibrationMethod.MinMax:  # as create_calibrator builds it, without the session it opens
            calibrator = MinMaxCalibrater(pre, op_types, augmented, use_external_data_format=use_external_data_format,
                                          symmetric=calib_extra.get("symmetric", False),
                                          moving_average=calib_extra.get("moving_average", False),
                                          averaging_constant=calib_extra.get("averaging_constant", 0.01),
                                          max_intermediate_outputs=calib_extra.get("max_intermediate_outputs"),
                                          per_channel=calib_extra.get("per_channel", False))
            _augment_minmax(calibrator)
        else:
            calibrator = create_calibrator(pre, op_types, augmented_model_path=augmented, calibrate_method=method,
                                           use_external_data_format=use_external_data_format, extra_options=calib_extra)
        lean = model_bytes_on_disk(Path(calibrator.augmented_model_path)) > SEQUENTIAL_ABOVE_BYTES
        calibrator.infer_session = None  # its default-threads session goes before the pinned one loads
        calibrator.infer_session = PinnedRuns(calibrator.augmented_model_path, samples,
                                              run_workers(len(samples), lean))
        calibrator.collect_data(_reader(samples))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache)
