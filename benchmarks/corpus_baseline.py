"""Build real models with real calibration data on every target; compare fp32 vs shipped with decoders.

For each model: writes a calibration folder from tests/real_inputs.py (calibration split), runs
``edgepack build MODEL --target all --calibration DIR [--shape ...] -o OUT --force``, records the exit
code and the first error line; for every target that produced a bundle: recipe, artifact size / source
size, and agreement of the *decoded* results (text, class, mask pixels, boxes, notes, embeddings)
between the fp32 model (onnxruntime) and the shipped artifact (onnxruntime for .ort/.onnx, OpenVINO
for .xml) on the heldout split, which calibration never saw. Appends one JSON line per model to --out.

    python benchmarks/corpus_baseline.py --models ppocrv5_rec,ppocrv5_cls --work /tmp/cb --out cb.jsonl
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
from real_inputs import SHAPES, decode, samples, write_calibration_folder  # noqa: E402
from real_models import REAL_MODELS, find_real_model  # noqa: E402

NEW = ["ppocrv5_det", "ppocrv5_rec", "ppocrv5_cls", "wakeword_embedding", "wakeword_melspec", "basic_pitch_nmp",
       "minilm_l3_paraphrase", "picodet_layout_cdla"]


def _runner(path: Path):
    if path.name.endswith("_ctx.onnx"):  # a QNN context model: this host's QNN HTP backend (simulator on x86_64)
        from edgepack.backends.qnn import session

        opts = session.host_options(json.loads((path.parent / "manifest.json").read_text())["runtime"]["provider_options"])
        sess = session.create(path, opts)
        return lambda feed: sess.run(None, feed)
    if path.suffix == ".xml":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU")
        names = [i.get_any_name() for i in compiled.inputs]

        def run(feed):
            res = compiled({n: feed[n] for n in names})
            return [np.asarray(res[o]) for o in compiled.outputs]
        return run
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return lambda feed: sess.run(None, {n: feed[n] for n in names})


def agreement(key: str, ref: list, cand: list) -> dict:
    kind = REAL_MODELS[key].kind
    n = len(ref)
    if kind == "ocr_recognizer":
        return {"decoded_text_identical": sum(a == b for a, b in zip(ref, cand)) / n, "n": n}
    if kind == "cnn_classifier":
        return {"class_agreement": sum(a == b for a, b in zip(ref, cand)) / n, "n": n}
    if kind == "ocr_text_detector":
        pix = [float((a["mask"] == b["mask"]).mean()) for a, b in zip(ref, cand)]
        ious = [float((a["mask"] & b["mask"]).sum() / max(1, (a["mask"] | b["mask"]).sum())) for a, b in zip(ref, cand)]
        return {"mask_pixel_agreement": float(np.mean(pix)), "mask_iou_mean": float(np.mean(ious)), "n": n}
    if kind == "yolo_detector":
        hit = tot = 0
        for a, b in zip(ref, cand):
            h, t = dec.box_agreement(a, b)
            hit, tot = hit + h, tot + t
        return {"confident_boxes_matched": f"{hit}/{tot}", "box_agreement": hit / tot if tot else None, "n": n}
    if key == "basic_pitch_nmp":
        f1 = [dec.notes_f1(a, b) for a, b in zip(ref, cand)]
        return {"note_f1_mean": float(np.mean(f1)), "ref_notes": sum(len(a) for a in ref), "n": n}
    cos = [dec.cosine(a, b) for a, b in zip(ref, cand)]
    return {"cosine_min": float(np.min(cos)), "cosine_mean": float(np.mean(cos)), "n": n}


def _first_error(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if line.startswith("error") or "Error" in line or "error:" in line:
            return line.strip()[:300]
    return stderr.strip().splitlines()[-1][:300] if stderr.strip() else None


def build(models: list[Path], calib: Path | None, shapes: list[str], out: Path) -> dict:
    cmd = ["edgepack", "build", *map(str, models), "--target", "all", "-o", str(out), "--force"]
    if calib is not None:
        cmd += ["--calibration", str(calib)]
    for s in shapes:
        cmd += ["--shape", s]
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    return {"command": " ".join(cmd), "exit": r.returncode, "seconds": round(time.time() - t, 1),
            "first_error": _first_error(r.stderr) if r.returncode else None,
            "stderr_tail": r.stderr.strip().splitlines()[-3:] if r.returncode else []}


def targets(out: Path, source_bytes: int) -> dict:
    res = {}
    for mf in sorted(out.glob("*/manifest.json")):
        m = json.loads(mf.read_text())
        art = m["models"][0]["artifact"]
        parts = {art, art[:-4] + ".bin"} if art.endswith(".xml") else {art}
        if art.endswith("_ctx.onnx"):  # QNN: the context model and its binary (the fallback .onnx is not counted)
            parts = {art, art[:-5] + "_qnn.bin"}
        size = sum(a["bytes"] for a in m["artifacts"] if a["path"] in parts)
        res[mf.parent.name] = {"recipe": m["recipe"]["quantization"]["recipe"], "artifact": art,
                               "size_ratio": round(size / source_bytes, 3)}
    return res


def markdown(lines: list[dict]) -> str:
    """The baseline table (model x target: exit, recipe, size ratio, decoded agreement) as Markdown."""
    out = ["| model | build exit (s) | target | recipe | size ratio | agreement on heldout (decoded) |",
           "|---|---|---|---|---|---|"]
    for e in lines:
        head = f"| {e['model']}{' (no calibration)' if e.get('calibration') in (None, 'None') else ''} | {e['exit']} ({e['seconds']}) "
        if not e["targets"]:
            out.append(head + f"| all | -- | -- | first error: `{e['first_error']}` |")
        for t, info in e["targets"].items():
            agr = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info["agreement"].items())
            out.append(head + f"| {t} | {info['recipe']} | {info['size_ratio']} | {agr} |")
            head = "| | "
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(NEW))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--no-calibration", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="only print --out (JSON lines) as a Markdown table")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown([json.loads(ln) for ln in args.out.read_text().splitlines() if ln.strip()]))
        return 0
    for key in args.models.split(","):
        path = find_real_model(key)
        if path is None:
            print(f"{key}: not installed", file=sys.stderr)
            continue
        calib = None if args.no_calibration else write_calibration_folder(key, args.work / f"calib-{key}")
        out = args.work / f"out-{key}"
        entry = {"model": key, "source_bytes": path.stat().st_size, "calibration": str(calib), **build(
            [path], calib, SHAPES[key], out)}
        entry["targets"] = targets(out, path.stat().st_size) if out.is_dir() else {}
        held = samples(key, "heldout")
        fp32 = _runner(path)
        ref = [decode(key, fp32(f), f) for f in held]
        for t, info in entry["targets"].items():
            try:
                run = _runner(out / t / info["artifact"])
                info["agreement"] = agreement(key, ref, [decode(key, run(f), f) for f in held])
            except Exception as exc:  # noqa: BLE001 - record and go on with the next target
                info["agreement"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        with args.out.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
        print(f"{key}: exit {entry['exit']} in {entry['seconds']} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
