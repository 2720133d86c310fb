"""Decoded agreement of every shipped bundle with its fp32 model, on held-out real inputs (issue #13).

For a CTC text recognizer, a text-line classifier, a text detector and a YOLO-style detector: writes a
calibration folder from tests/real_inputs.py (the calibration split), runs ``edgepack build MODEL
--target all --calibration DIR [--shape ...]``, then runs the fp32 model (onnxruntime) and each shipped
artifact (onnxruntime for .ort, OpenVINO for .xml) on the *held-out* split - sources calibration never
saw - and compares what the user sees, with the model's own package's decoding (tests/_corpus_decode.py):

* recognizer: identical CTC-decoded text (bar: >= 95% of the lines);
* classifier: same class on the confident fp32 decisions (top-1 probability ahead of the runner-up by
  >= 0.2; bar: >= 95%), and on all;
* text detector: DB mask pixels (threshold 0.3, as PaddleOCR; bar: >= 99%) and mask IoU;
* YOLO detector: confident detections (score >= 0.5) matched both ways by same class at IoU >= 0.5 (bar: 95%).

Also recorded per bundle: the recipe, artifact bytes / source bytes, and what the manifest says of its
verification (status, n). ``--edgepack`` runs another edgepack (e.g. the previous commit's venv) for a
before/after comparison. Appends one JSON line per model to --out; ``--markdown`` prints the table.

    python benchmarks/bench_agreement.py --work /tmp/ba --out ba.jsonl
    python benchmarks/bench_agreement.py --out ba.jsonl --markdown
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
sys.path.insert(1, str(Path(__file__).resolve().parent))

import _corpus_decode as dec  # noqa: E402
from corpus_baseline import _first_error, _runner, targets  # noqa: E402
from real_inputs import SHAPES, decode, samples, write_calibration_folder  # noqa: E402
from real_models import REAL_MODELS, find_real_model  # noqa: E402

MODELS = ["ppocrv5_rec", "ppocrv5_cls", "ppocrv4_det", "nudenet_yolov8n"]
BARS = {"ocr_recognizer": ("decoded_text_identical", 0.95), "cnn_classifier": ("confident_class_agreement", 0.95),
        "ocr_text_detector": ("mask_pixel_agreement", 0.99), "yolo_detector": ("box_agreement", 0.95)}
MARGIN = 0.2


def _confident(raw: np.ndarray) -> bool:
    p = np.sort(np.asarray(raw, np.float64).reshape(-1))
    return len(p) < 2 or p[-1] - p[-2] >= MARGIN


def agreement(key: str, feeds: list[dict], ref_raw: list, cand_raw: list) -> dict:
    kind = REAL_MODELS[key].kind
    ref = [decode(key, r, f) for r, f in zip(ref_raw, feeds)]
    cand = [decode(key, c, f) for c, f in zip(cand_raw, feeds)]
    n = len(ref)
    if kind == "ocr_recognizer":
        return {"decoded_text_identical": sum(a == b for a, b in zip(ref, cand)) / n, "n": n,
                "nonempty_fp32": sum(bool(a) for a in ref)}
    if kind == "cnn_classifier":
        conf = [i for i, r in enumerate(ref_raw) if _confident(r[0])]
        return {"confident_class_agreement": sum(ref[i] == cand[i] for i in conf) / len(conf) if conf else None,
                "n": len(conf), "class_agreement_all": sum(a == b for a, b in zip(ref, cand)) / n, "n_all": n}
    if kind == "ocr_text_detector":
        agree = sum(int((a["mask"] == b["mask"]).sum()) for a, b in zip(ref, cand))
        total = sum(a["mask"].size for a in ref)
        inter = sum(int((a["mask"] & b["mask"]).sum()) for a, b in zip(ref, cand))
        union = sum(int((a["mask"] | b["mask"]).sum()) for a, b in zip(ref, cand))
        return {"mask_pixel_agreement": agree / total, "mask_iou": inter / union if union else None, "n": n,
                "pixels": total}
    hit_r = tot_r = hit_c = tot_c = 0
    for a, b in zip(ref, cand):
        h, t = dec.box_agreement(a, b)
        hit_r, tot_r = hit_r + h, tot_r + t
        h, t = dec.box_agreement(b, a)
        hit_c, tot_c = hit_c + h, tot_c + t
    tot = tot_r + tot_c
    return {"box_agreement": (hit_r + hit_c) / tot if tot else None, "fp32_confident_matched": f"{hit_r}/{tot_r}",
            "shipped_confident_matched": f"{hit_c}/{tot_c}", "n": tot, "images": n}


def _verification(bundle: Path) -> dict:
    m = json.loads((bundle / "manifest.json").read_text())
    model = m["models"][0]
    ver = model.get("verification") or {}
    attempts = (model.get("quantization") or {}).get("attempts", [])
    return {"status": ver.get("status", "(no status: before #13)"),
            "n": (ver.get("evidence") or {}).get("samples"),
            "dropped": [f"{a['recipe']}: {a['reason'][:160]}" for a in attempts if a["outcome"] == "dropped"]}


def run(key: str, work: Path, edgepack: str) -> dict:
    path = find_real_model(key)
    calib = write_calibration_folder(key, work / f"calib-{key}")
    out = work / f"out-{key}"
    cmd = [edgepack, "build", str(path), "--target", "all", "-o", str(out), "--force", "--calibration", str(calib)]
    for s in SHAPES[key]:
        cmd += ["--shape", s]
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    entry = {"model": key, "kind": REAL_MODELS[key].kind, "edgepack": edgepack, "exit": r.returncode,
             "seconds": round(time.time() - start, 1), "first_error": _first_error(r.stderr) if r.returncode else None,
             "calibration_samples": len(samples(key, "calibration"))}
    entry["targets"] = targets(out, path.stat().st_size) if out.is_dir() else {}
    feeds = samples(key, "heldout")
    fp32 = _runner(path)
    ref = [fp32(f) for f in feeds]
    for t, info in entry["targets"].items():
        info.update(_verification(out / t))
        try:
            shipped = _runner(out / t / info["artifact"])
            info["agreement"] = agreement(key, feeds, ref, [shipped(f) for f in feeds])
        except Exception as exc:  # noqa: BLE001 - record and go on with the next target
            info["agreement"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        metric, bar = BARS[entry["kind"]]
        value = info["agreement"].get(metric)
        info["meets_bar"] = None if value is None else value >= bar
    return entry


def markdown(lines: list[dict]) -> str:
    out = ["| model | edgepack | target | recipe | size ratio | manifest says | decoded agreement on held-out (n) | "
           "issue bar | recipes dropped |", "|---|---|---|---|---|---|---|---|---|"]
    for e in lines:
        who = "before" if "core-base" in e["edgepack"] else "this branch"
        if not e["targets"]:
            out.append(f"| {e['model']} | {who} | all | -- | -- | exit {e['exit']}: `{e['first_error']}` | | | |")
        for t, info in e["targets"].items():
            metric, bar = BARS[e["kind"]]
            agr = info["agreement"]
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in agr.items())
            verdict = "-" if info.get("meets_bar") is None else ("meets" if info["meets_bar"] else "**misses**")
            says = f"{info['status']}" + (f", n={info['n']}" if info.get("n") else "")
            dropped = "; ".join(info.get("dropped", [])).replace("|", "/")
            out.append(f"| {e['model']} | {who} | {t} | {info['recipe']} | {info['size_ratio']} | {says} | {shown} | "
                       f"{metric} >= {bar}: {verdict} | {dropped} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--edgepack", default="edgepack", help="the edgepack command to run (another venv's for 'before')")
    ap.add_argument("--markdown", action="store_true", help="only print --out (JSON lines) as a Markdown table")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown([json.loads(ln) for ln in args.out.read_text().splitlines() if ln.strip()]))
        return 0
    if args.work is None:
        ap.error("--work is required to build")
    for key in args.models.split(","):
        if find_real_model(key) is None:
            print(f"{key}: not installed", file=sys.stderr)
            continue
        entry = run(key, args.work, args.edgepack)
        with args.out.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        print(f"{key}: exit {entry['exit']} in {entry['seconds']} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
