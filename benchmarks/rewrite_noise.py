"""Measure onnxruntime's own noise and our rewrites' deviation on the real models, with real inputs.

For every model of tests/real_models.py that has real inputs (tests/real_inputs.py): the verification
inputs a build with ``--calibration`` uses (the held-out part of the calibration split), the input
shapes of tests/real_inputs.SHAPES, then exactly what the prepare stage does
(edgepack.stages.prepare / edgepack.rewrite_check):

* the unrewritten graph (shapes fixed) run with optimizations off = the reference;
* onnxruntime's basic / extended / default levels on the original graph = the noise (per output:
  max error relative to the output's range, 1 - pooled cosine);
* our rewrites run with optimizations off: basic optimization, and basic optimization after the
  decompositions NNAPI and Core ML get; their deviation, the limit the check sets, and the ratio
  deviation / noise (what MARGIN must cover);
* negative controls: the NNAPI decomposition with its HardSigmoid/HardSwish slopes off by 1% and by
  0.1% (what a wrong rewrite looks like; the check must refuse it).

    python benchmarks/rewrite_noise.py [--models ppocrv5_det,basic_pitch_nmp] [--json out.json]

Prints a Markdown table; host CPU and onnxruntime version at the top (the numbers are this host's).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(1, str(REPO))


def _measure(key: str, work: Path) -> dict:
    import onnx
    from real_inputs import SHAPES, samples
    from real_models import find_real_model

    from edgepack import partition
    from edgepack.data.calibration import split_calibration
    from edgepack.errors import StageError
    from edgepack.model import load_model
    from edgepack.rewrite_check import deviation, measure_noise
    from edgepack.runtime.ort import run_model
    from edgepack.shapes import fix_input_shapes, parse_shape_args
    from edgepack.target import load_target
    from edgepack.transforms import ort_optimize, prepare_graph

    path = find_real_model(key)
    if path is None:
        return {"model": key, "skipped": "not installed"}
    _, hold, _ = split_calibration(samples(key, "calibration"))
    lm = load_model(path)
    shapes = parse_shape_args(SHAPES[key])
    proto = fix_input_shapes(lm.proto, shapes) if shapes else lm.proto
    base = work / f"{key}.base.onnx"
    note = None
    try:
        ort_optimize(proto, path.parent.resolve(), base, "disable")
        unoptimized = run_model(base, hold, level="disable")
        noise = measure_noise(base, hold, unoptimized, run_model(path, hold))
    except StageError as exc:  # as prepare does: fixed shapes rejected -> the model's dynamic dims
        note = f"fixed shapes rejected ({str(exc)[:80]}); dynamic dims kept"
        proto = lm.proto
        ort_optimize(proto, path.parent.resolve(), base, "disable")
        unoptimized = run_model(base, hold, level="disable")
        noise = measure_noise(base, hold, unoptimized, run_model(path, hold))
    entry = {"model": key, "samples": len(hold), "noise_err": noise.worst_err(),
             "noise_cos": max(d.cos for d in noise.outputs.values()), "rewrites": {}}
    if note:
        entry["note"] = note
    variants = {"basic": frozenset()}
    for target in ("android-nnapi", "ios-coreml"):
        ops = partition.decomposable_ops(load_target(target), set(lm.info.op_histogram))
        if ops:
            variants[f"decomposed {'/'.join(sorted(ops))} ({target})"] = ops
    first = next((ops for name, ops in variants.items() if ops), None)
    if first is not None:
        variants["slopes off by 1% (negative control)"] = ("wrong", first, 1e-2)
        variants["slopes off by 0.1% (negative control)"] = ("wrong", first, 1e-3)
    for name, ops in variants.items():
        dst = work / f"{key}.{len(entry['rewrites'])}.onnx"
        if isinstance(ops, tuple):
            prepare_graph(_wrong_slopes(proto, ops[1], ops[2]), path.parent.resolve(), dst)
        else:
            prepare_graph(proto, path.parent.resolve(), dst, decompose_ops=ops)
        dev = deviation(list(unoptimized), run_model(dst, hold, level="disable"))
        ok, why = noise.check(dev)
        worst = max(dev.items(), key=lambda kv: kv[1].err)
        limit = noise.limits(worst[0], worst[1].magnitude, worst[1].scale)[0]
        own = noise.outputs[worst[0]].err
        entry["rewrites"][name] = {"err": worst[1].err, "cos": max(d.cos for d in dev.values()), "limit": limit,
                                   "ratio_to_noise": (worst[1].err / own) if own else None, "passes": ok, "check": why}
    return entry


def _wrong_slopes(proto, ops, delta: float):
    """The decomposition of ``ops`` with every slope constant (not 0, 1/2 or 1) scaled by 1 + delta."""
    import numpy as np
    from onnx import numpy_helper

    from edgepack.transforms import decompose

    out, _ = decompose(proto, set(ops))
    for t in out.graph.initializer:
        if t.name.startswith("edgepack_const"):
            v = numpy_helper.to_array(t)
            if float(v) not in (0.0, 0.5, 1.0):
                t.CopyFrom(numpy_helper.from_array((v * (1 + delta)).astype(np.float32), t.name))
    return out


def markdown(entries: list[dict]) -> str:
    rows = ["| model | samples | onnxruntime's own noise (err of range / 1-cos) | rewrite | rewrite err | "
            "ratio to noise | limit | passes |", "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if "skipped" in e:
            rows.append(f"| {e['model']} | -- | {e['skipped']} | | | | | |")
            continue
        head = f"| {e['model']} | {e['samples']} | {e['noise_err']:.2e} / {e['noise_cos']:.1e} "
        for name, r in e["rewrites"].items():
            ratio = f"{r['ratio_to_noise']:.2f}" if r["ratio_to_noise"] is not None else "-"
            rows.append(head + f"| {name} | {r['err']:.2e} | {ratio} | {r['limit']:.2e} | {'yes' if r['passes'] else 'NO'} |")
            head = "| | | "
    return "\n".join(rows)


def main(argv=None) -> int:
    from real_inputs import SHAPES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SHAPES), help="comma list of tests/real_models.py keys")
    ap.add_argument("--json", type=Path, help="also write the measurements as JSON")
    args = ap.parse_args(argv)
    import onnxruntime

    from edgepack.runtime.host import host_cpu

    entries = []
    with tempfile.TemporaryDirectory(prefix="edgepack-noise-") as tmp:
        for key in args.models.split(","):
            entries.append(_measure(key, Path(tmp)))
            print(f"{key}: done", file=sys.stderr, flush=True)
    print(f"host: {host_cpu()}; onnxruntime {onnxruntime.__version__}\n")
    print(markdown(entries))
    if args.json:
        args.json.write_text(json.dumps(entries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
