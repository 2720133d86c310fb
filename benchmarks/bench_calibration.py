"""The calibration and quantization pieces of a static int8 build, on a real model and real samples.

Three figures, each measured here (``--json FILE`` keeps them):

* ``threads``: onnxruntime's calibration at 1, 2 and 4 intra-op threads (its own calibrator and
  session, as quantize_static runs it; optimizations off) - how many of the calibrated ranges differ
  from the 1-thread ones (why edgepack pins the count: ``edgepack.backends.onnxruntime.ranges``);
* ``augment``: onnxruntime's ``MinMaxCalibrater.augment_graph`` against edgepack's linear-time
  ``_augment_minmax`` (median seconds over ``--repeat`` runs, interleaved);
* ``quantize``: quantize_static from calibrated ranges with onnxruntime's own helpers and with
  ``edgepack.backends.onnxruntime.fastpaths`` (median seconds, interleaved; the bytes must match).

    python benchmarks/bench_calibration.py [--model nudenet_yolov8n] [--samples 32] [--repeat 5] [--json FILE]

(the model's calibration split of tests/real_inputs.py: 32 real samples for nudenet_yolov8n).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _fixed(key: str, work: Path) -> Path:
    from real_inputs import SHAPES
    from real_models import find_real_model

    from edgepack.shapes import fix_input_shapes

    path = find_real_model(key)
    if path is None:
        raise SystemExit(f"{key} is not installed: pip install -e '.[dev]'")
    shapes = {s.split("=")[0]: tuple(int(d) for d in s.split("=")[1].split("x")) for s in SHAPES[key]}
    dst = work / f"{key}.onnx"
    onnx.save(fix_input_shapes(onnx.load(str(path)), shapes), str(dst))
    return dst


def _op_types() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return list(set(list(QLinearOpsRegistry.keys()) + list(QDQRegistry.keys())))


def _ranges_at(src: Path, samples: list[dict], threads: int, work: Path) -> dict:
    """onnxruntime's MinMax calibration of ``src`` in a session with ``threads`` intra-op threads."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    from edgepack.backends.onnxruntime.ranges import _reader

    cal = MinMaxCalibrater(str(src), _op_types(), str(work / f"aug{threads}.onnx"))
    cal.augment_graph()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = threads
    cal.infer_session = ort.InferenceSession(cal.augmented_model_path, so, providers=["CPUExecutionProvider"])
    cal.collect_data(_reader(samples))
    return {k: tuple(np.asarray(v).tobytes() for v in t.range_value) for k, t in cal.compute_data().data.items()}


def _threads(src: Path, samples: list[dict], work: Path) -> dict:
    got = {n: _ranges_at(src, samples, n, work) for n in (1, 2, 4)}
    return {"ranges": len(got[1]),
            "differ_from_1_thread": {str(n): sum(got[1][k] != got[n][k] for k in got[1]) for n in (2, 4)}}


def _augment(src: Path, repeat: int, work: Path) -> dict:
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    from edgepack.backends.onnxruntime.ranges import _augment_minmax

    times: dict[str, list[float]] = {"onnxruntime": [], "edgepack": []}
    for _ in range(repeat):
        for side in times:
            cal = MinMaxCalibrater(str(src), _op_types(), str(work / f"aug-{side}.onnx"))
            start = time.perf_counter()
            cal.augment_graph() if side == "onnxruntime" else _augment_minmax(cal)
            times[side].append(time.perf_counter() - start)
    return {side: round(statistics.median(v), 3) for side, v in times.items()}


def _quantize(src: Path, samples: list[dict], repeat: int, work: Path) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgepack.backends.onnxruntime import ranges
    from edgepack.backends.onnxruntime.fastpaths import faster_quantizer

    cache = work / "ranges.json"
    ranges.collect_ranges(src, samples, CalibrationMethod.MinMax, {}, False, cache)

    def once(dst: Path) -> float:
        start = time.perf_counter()
        quantize_static(str(src), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"onnxruntime": [], "fastpaths": []}
    for _ in range(repeat):
        times["onnxruntime"].append(once(work / "q-ort.onnx"))
        with faster_quantizer():
            times["fastpaths"].append(once(work / "q-fast.onnx"))
    same = (work / "q-ort.onnx").read_bytes() == (work / "q-fast.onnx").read_bytes()
    return {**{side: round(statistics.median(v), 3) for side, v in times.items()}, "same_bytes": same}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="nudenet_yolov8n")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from real_inputs import samples

    from edgepack.runtime.host import host_cpu

    feeds = samples(args.model, "calibration")[:args.samples]
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-calib-") as tmp:
        work = Path(tmp)
        src = _fixed(args.model, work)
        out = {"model": args.model, "samples": len(feeds), "repeat": args.repeat, "host_cpu": host_cpu(),
               "threads": _threads(src, feeds, work), "augment_s": _augment(src, args.repeat, work),
               "quantize_static_s": _quantize(src, feeds, args.repeat, work)}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
