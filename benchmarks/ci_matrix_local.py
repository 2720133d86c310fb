#!/usr/bin/env python3
"""docs/ci.md's matrix workflow, run on this machine: one `edgepack compare --targets T` process per
target (the build jobs, each in its own folder), `verify --measure --json` on the bundles this host
can run with their own engine (the measure jobs), then `edgepack merge` (the report job).

    python benchmarks/ci_matrix_local.py [-o OUT] [--model M] [--calibration DIR] [--targets all|T1,T2]
                                         [--measure T1,T2] [--check-all]

Prints the merged report.md; OUT/merged/ holds report.{json,md,html}. Measurements are labelled with
this machine: an x86 host is not a Pi (the workflow measures Pi bundles on an arm64 runner).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def edgepack(*args: str, stdout=None) -> int:
    print("$ edgepack " + " ".join(args), file=sys.stderr)  # the command sequence, as the jobs would run it
    return subprocess.run([sys.executable, "-m", "edgepack", *args], stdout=stdout, cwd=REPO).returncode


def builtin_targets() -> list[str]:
    done = subprocess.run([sys.executable, "-m", "edgepack", "targets", "--json"], capture_output=True, text=True,
                          check=True, cwd=REPO)
    return [t["name"] for t in json.loads(done.stdout)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default="ci-matrix-out")
    ap.add_argument("--model", default=str(REPO / "sample_apps/model/digits_cnn.onnx"))
    ap.add_argument("--calibration", default=str(REPO / "sample_apps/model/calibration"))
    ap.add_argument("--targets", default="all", help="the build jobs' targets (default: every built-in target)")
    ap.add_argument("--measure", default="intel-openvino,rpi4-cpu,rpi5-cpu", help="targets to measure on this machine")
    ap.add_argument("--check-all", action="store_true",
                    help="also run one compare of every target and check the merged report has the same rows")
    args = ap.parse_args()
    out = Path(args.output).resolve()
    reports, measured = [], []
    targets = builtin_targets() if args.targets == "all" else args.targets.split(",")
    for target in targets:  # the build jobs: separate processes, separate folders
        job = out / "jobs" / target
        code = edgepack("compare", args.model, "--targets", target, "-o", str(job), "--calibration", args.calibration,
                        "--jobs", "1", "--force", "--json", stdout=subprocess.DEVNULL)
        if code > 1 or not (job / "report.json").is_file():
            print(f"build job {target} failed ({code})", file=sys.stderr)
            return code or 2
        reports.append(job / "report.json")  # exit 1 (a target not built, a budget) is judged after the merge
    for target in [t for t in args.measure.split(",") if t]:  # the measure jobs
        path = out / "measure" / f"measure-{target}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as fh:
            code = edgepack("verify", str(out / "jobs" / target / target), "--measure", "--runs", "100", "--json",
                            stdout=fh)
        if code != 0:
            print(f"measure job {target} failed ({code}): {json.loads(path.read_text()).get('problems')}", file=sys.stderr)
            return code
        measured.append(path)
    merged = out / "merged"
    code = edgepack("merge", *map(str, reports), *map(str, measured), "-o", str(merged), stdout=subprocess.DEVNULL)
    print((merged / "report.md").read_text())
    if args.check_all:
        same = against_one_compare(args, out, merged, targets)
        code = code or (0 if same else 1)
    return code


VOLATILE = ("host_latency", "stage_seconds", "host", "report")  # timed on the host / bookkeeping of the merge


def against_one_compare(args, out: Path, merged: Path, targets: list[str]) -> bool:
    """The merged report against one `compare` of every target in one process: the same rows (but for
    the host timings), the same budget verdict, the same failed targets."""
    one = out / "one-compare"
    edgepack("compare", args.model, "--targets", ",".join(targets), "-o", str(one), "--calibration", args.calibration,
             "--jobs", "1", "--force", "--json", stdout=subprocess.DEVNULL)
    m = json.loads((merged / "report.json").read_text())
    a = json.loads((one / "report.json").read_text())

    def stable(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in VOLATILE}

    differ = sorted(t for t in set(m["targets"]) | set(a["targets"])
                    if stable(m["targets"].get(t, {})) != stable(a["targets"].get(t, {})))
    same = not differ and m["budgets_passed"] == a["budgets_passed"] and m["failed_targets"] == a["failed_targets"]
    print(f"merged ({len(m['targets'])} rows from {len(m['merged_from'])} jobs) vs one compare of {len(a['targets'])} "
          f"targets: {'the same rows' if not differ else 'rows differ: ' + ', '.join(differ)}, budgets passed "
          f"{m['budgets_passed']} / {a['budgets_passed']}, failed targets {m['failed_targets']} / {a['failed_targets']}")
    return same


if __name__ == "__main__":
    sys.exit(main())
