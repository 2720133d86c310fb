#!/usr/bin/env python3
"""Top-1 accuracy of the digits model on its test split - as edgepack's own metric, or on its own.

As edgepack's metric (``--eval``): the build gives ``evaluate`` a runner for the fp32 model and for every
candidate, on whatever engine the bundle runs on (onnxruntime for .onnx/.ort, OpenVINO for an IR):

  edgepack build sample_apps/model/digits_cnn.onnx --target all --calibration sample_apps/model/calibration \\
      -o out --eval sample_apps/model/evaluate.py:evaluate --max-accuracy-drop 0.01

On its own:

  python sample_apps/model/evaluate.py [MODEL] [--data digits_test.npz]

MODEL defaults to digits_cnn.onnx next to this file: an .onnx or .ort (onnxruntime), an OpenVINO
.xml (openvino), or a bundle folder (the model its manifest.json names), with one float input
[batch,1,8,8] and a [batch,10] scores output.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE / "digits_cnn.onnx"
DEFAULT_DATA = HERE / "digits_test.npz"
BATCH = 256


def evaluate(runner, npz_path: str | Path = DEFAULT_DATA) -> float:
    """Top-1 accuracy of ``runner`` (``runner(feed) -> {output name: array}``) on the test split.

    A bundle whose batch dimension is fixed (``runner.input_shapes``) is fed that many samples at a time."""
    with np.load(str(npz_path)) as data:
        x = data["input"].astype(np.float32)
        y = data["label"].astype(np.int64)
    scores = _scores(runner, x)
    return float((scores.argmax(axis=1) == y).mean())


def _scores(runner, x: np.ndarray) -> np.ndarray:
    """The first output for every row of ``x``, fed in batches (of the fixed size, last one padded, when the
    model's batch dimension is fixed)."""
    name, dims = next(iter(runner.input_shapes.items()))
    fixed = bool(dims) and isinstance(dims[0], int) and dims[0] > 0
    bs = dims[0] if fixed else BATCH
    out = runner.output_names[0]
    chunks = []
    for i in range(0, len(x), bs):
        part = x[i:i + bs]
        feed = np.concatenate([part, np.zeros((bs - len(part), *part.shape[1:]), part.dtype)]) if fixed else part
        chunks.append(np.asarray(runner({name: feed})[out]).reshape(len(feed), -1)[:len(part)])
    return np.concatenate(chunks)


def resolve(model_path: str | Path) -> Path:
    """A bundle folder stands for the model its manifest.json names."""
    path = Path(model_path)
    if path.is_dir():
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        return path / manifest["models"][0]["artifact"]
    return path


class _Runner:
    """A runner like edgepack's, for this script's command line: onnxruntime, or OpenVINO for a .xml."""

    def __init__(self, model_path: str | Path):
        path = resolve(model_path)
        if path.suffix == ".xml":
            import openvino as ov

            compiled = ov.Core().compile_model(str(path), "CPU")
            request = compiled.create_infer_request()
            self.input_shapes = {p.get_any_name(): [d.get_length() if d.is_static else None
                                                    for d in p.get_partial_shape()] for p in compiled.inputs}
            self.output_names = [p.get_any_name() for p in compiled.outputs]
            self._run = lambda feed: {n: np.array(request.infer(feed)[p]) for n, p in
                                      zip(self.output_names, compiled.outputs)}
            return
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.input_shapes = {i.name: [d if isinstance(d, int) else None for d in i.shape] for i in sess.get_inputs()}
        self.output_names = [o.name for o in sess.get_outputs()]
        self._run = lambda feed: dict(zip(self.output_names, sess.run(None, feed)))

    def __call__(self, feed: dict) -> dict:
        return self._run(feed)


def predict(model_path: str | Path, x: np.ndarray) -> np.ndarray:
    """Return the model's first output (scores) for x, run in batches."""
    return _scores(_Runner(model_path), x.astype(np.float32, copy=False))


def accuracy(model_path: str | Path, npz_path: str | Path = DEFAULT_DATA) -> float:
    """Top-1 accuracy of model_path on the npz (keys 'input' [N,1,8,8], 'label' [N])."""
    return evaluate(_Runner(model_path), npz_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help="ONNX, ORT or OpenVINO .xml model file")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="npz with 'input' and 'label'")
    args = ap.parse_args(argv)
    acc = accuracy(args.model, args.data)
    print(f"top-1 accuracy: {acc:.4f} ({args.model})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
