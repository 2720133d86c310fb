"""`edgepack compare` of all five targets vs the sum of five single-target builds, in one run. JSON out.

Each command runs in a fresh process, one after the other, on the same model, calibration and
shapes. The compare shares intake, calibration and the fp32 reference outputs across targets and
builds the targets in parallel (--jobs). The issue's bar: compare <= 0.7x the sum.

    python benchmarks/bench_compare.py [--model yolo|sample] [--jobs 2] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
TARGETS = ["android-nnapi", "ios-coreml", "intel-openvino", "rpi4-cpu", "rpi5-cpu"]


def _model(name: str, work: Path) -> tuple[Path, list[str], Path]:
    if name == "sample":
        return (REPO / "sample_apps" / "model" / "digits_cnn.onnx", [],
                REPO / "sample_apps" / "model" / "calibration")
    from real_models import find_real_model

    path = find_real_model("nudenet_yolov8n")
    if path is None:
        raise SystemExit("nudenet is not installed: pip install -e '.[dev]'")
    calib = work / "calib"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_calibration.py"), "--out", str(calib), "--size",
                    "320", "--input", "images", "--resize", "letterbox", "--count", "16", "--force"],
                   check=True, capture_output=True)
    return path, ["--shape", "images=1x3x320x320"], calib


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("yolo", "sample"), default="yolo")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="repeat both sides and take the median")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-compare-") as tmp:
        work = Path(tmp)
        model, shape, calib = _model(args.model, work)
        base = [sys.executable, "-m", "edgepack"]
        singles, compares = [], []
        for r in range(args.repeat):
            per_target = {}
            for t in TARGETS:
                per_target[t] = round(_timed([*base, "build", str(model), "--target", t, "-o", str(work / f"single{r}"),
                                              "--force", "--calibration", str(calib), *shape, "--json"]), 2)
            singles.append(per_target)
            compares.append(round(_timed([*base, "compare", str(model), "--targets", "all", "-o", str(work / f"cmp{r}"),
                                          "--force", "--calibration", str(calib), *shape, "--jobs", str(args.jobs),
                                          "--json"]), 2))
        sums = sorted(sum(s.values()) for s in singles)
        compares_sorted = sorted(compares)
        total, cmp = sums[len(sums) // 2], compares_sorted[len(compares_sorted) // 2]
        print(json.dumps({"model": model.name, "targets": TARGETS, "jobs": args.jobs, "cores": os.cpu_count(),
                          "single_builds_seconds": singles, "sum_of_single_builds_seconds": round(total, 2),
                          "compare_seconds": cmp, "ratio": round(cmp / total, 3), "bar": 0.7}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
