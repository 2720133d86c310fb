#!/usr/bin/env python3
"""Top-1 accuracy of a model or an edgepack bundle on the digits test split.

Usage:
  python sample_apps/model/evaluate.py [MODEL] [--data digits_test.npz]

MODEL defaults to digits_cnn.onnx next to this file. Any model with a single float input
of shape [batch,1,8,8] and a [batch,10] scores output works: .onnx or .ort (onnxruntime),
an OpenVINO IR .xml (openvino), or a bundle folder (the model its manifest.json names).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE / "digits_cnn.onnx"
DEFAULT_DATA = HERE / "digits_test.npz"

_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def resolve(model_path: str | Path) -> Path:
    """A bundle folder stands for the model its manifest.json names."""
    path = Path(model_path)
    if path.is_dir():
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        return path / manifest["models"][0]["artifact"]
    return path


def predict_openvino(xml: Path, x: np.ndarray) -> np.ndarray:
    """The first output for x with OpenVINO's CPU plugin, one sample per request if the IR's batch is fixed."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": "1"})
    dim0 = compiled.inputs[0].get_partial_shape()[0]
    bs = dim0.get_length() if dim0.is_static else len(x)
    out = compiled.outputs[0]
    return np.concatenate([np.asarray(compiled(x[i : i + bs].astype(np.float32))[out]) for i in range(0, len(x), bs)])


def predict(model_path: str | Path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Return the model's first output (scores) for x, run in batches."""
    model_path = resolve(model_path)
    if model_path.suffix == ".xml":
        return predict_openvino(model_path, x)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = _NP_TYPES.get(inp.type)
    if dtype is None:
        raise ValueError(f"unsupported model input type {inp.type!r} (expected a float tensor)")
    x = x.astype(dtype, copy=False)
    # A model exported with a fixed batch dimension is fed one sample at a time.
    dim0 = inp.shape[0] if inp.shape else None
    bs = dim0 if isinstance(dim0, int) and dim0 > 0 else batch_size
    out_name = sess.get_outputs()[0].name
    chunks = [
        sess.run([out_name], {inp.name: x[i : i + bs]})[0] for i in range(0, len(x), bs)
    ]
    return np.concatenate(chunks, axis=0)


def accuracy(model_path: str | Path, npz_path: str | Path = DEFAULT_DATA) -> float:
    """Top-1 accuracy of model_path on the npz (keys 'input' [N,1,8,8], 'label' [N])."""
    with np.load(str(npz_path)) as data:
        x = data["input"]
        y = data["label"].astype(np.int64)
    scores = predict(model_path, x)
    scores = scores.reshape(len(x), -1)
    return float((scores.argmax(axis=1) == y).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help="ONNX or ORT model file")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="npz with 'input' and 'label'")
    args = ap.parse_args(argv)
    acc = accuracy(args.model, args.data)
    print(f"top-1 accuracy: {acc:.4f} ({args.model})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
