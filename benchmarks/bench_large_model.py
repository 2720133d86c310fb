"""Peak memory of `edgepack inspect` and `edgepack build` on a model with more than 2 GB of external weights.

The model is generated here (never committed): a chain of MatMul layers whose fp32 weights live in
one external-data file next to it. Each command runs in a fresh process; the peak RSS of its whole
process tree (sampled from /proc every 20 ms, and never below the process's own getrusage peak) is
compared with the weights' bytes, in total and per build stage. Prints JSON.

    python benchmarks/bench_large_model.py [--gb 2.2] [--targets rpi5-cpu,ios-coreml] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measured import run_edgepack  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WIDTH = 4096

def make_model(folder: Path, gigabytes: float) -> tuple[Path, int]:
    """A MatMul chain [1, 4096] -> ... with ``gigabytes`` of fp32 weights in external data; returns (path, weight bytes)."""
    import onnx
    from onnx import TensorProto, helper

    layer_bytes = WIDTH * WIDTH * 4
    layers = max(1, int(np.ceil(gigabytes * 1e9 / layer_bytes)))
    data_name = "weights.bin"
    inits, nodes = [], []
    rng = np.random.default_rng(0)
    with (folder / data_name).open("wb") as f:
        for i in range(layers):
            w = (rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / np.sqrt(WIDTH)).astype(np.float32)
            offset = f.tell()
            f.write(w.tobytes())
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[WIDTH, WIDTH])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(layer_bytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            inits.append(t)
            src = "x" if i == 0 else f"h{i - 1}"
            out = "y" if i == layers - 1 else f"h{i}"
            nodes.append(helper.make_node("MatMul", [src, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
            nodes.append(helper.make_node("Tanh", [f"m{i}"], [out], name=f"tanh{i}"))
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgepack-bench")
    model.ir_version = 8
    path = folder / "large.onnx"
    path.write_bytes(model.SerializeToString())
    return path, layers * layer_bytes


def run(args: list[str], weight_bytes: int) -> dict:
    r = run_edgepack(args)
    out = {"command": "edgepack " + " ".join(a if "/" not in a else Path(a).name for a in args),
           "returncode": r["returncode"], "seconds": round(r["seconds"], 1),
           "peak_rss_bytes": r["peak_rss_bytes"], "error": r["errors"]}
    if r["peak_rss_bytes"]:
        out["peak_over_weights"] = round(r["peak_rss_bytes"] / weight_bytes, 3)
    out["measured"] = {k: r[k] for k in ("sampled_tree_peak_bytes", "self_maxrss_bytes", "children_maxrss_bytes",
                                         "samples")}
    if r["stages"]:
        out["stages"] = [{**s, "peak_over_weights": round(s["peak_tree_rss_bytes"] / weight_bytes, 3)
                          if s["peak_tree_rss_bytes"] else None} for s in r["stages"]]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.2, help="GB of fp32 weights (default 2.2)")
    ap.add_argument("--targets", default="rpi5-cpu,ios-coreml")
    ap.add_argument("--keep", metavar="DIR", help="keep the model and bundles in DIR")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgepack-large-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        (work / "model").mkdir(parents=True, exist_ok=True)
        model, weight_bytes = make_model(work / "model", args.gb)
        results = [run(["inspect", str(model), "--target", "android-nnapi", "--json"], weight_bytes)]
        for t in args.targets.split(","):
            results.append(run(["build", str(model), "--target", t, "-o", str(work / "out"), "--force", "--json"],
                               weight_bytes))
            bundle = work / "out" / t
            if bundle.is_dir():
                manifest = json.loads((bundle / "manifest.json").read_text())
                results[-1]["recipe"] = manifest["recipe"]["quantization"]["recipe"]
                results[-1]["artifact_bytes"] = sum(a["bytes"] for a in manifest["artifacts"] if a["path"].endswith(".ort"))
        print(json.dumps({"weight_bytes": weight_bytes, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
