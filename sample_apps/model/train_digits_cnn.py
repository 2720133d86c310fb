#!/usr/bin/env python3
"""Train the edgepack sample model: a small CNN on scikit-learn's digits dataset.

Writes, next to this script:
  digits_cnn.onnx          the exported model (opset 17, input "input" [batch,1,8,8], output "logits" [batch,10])
  calibration/input.npy    64 float32 samples [64,1,8,8] from the TRAIN split (for quantization calibration)
  digits_test.npz          held-out test split: "input" float32 [N,1,8,8], "label" int64 [N]

Retrain:
  pip install torch==2.13.0 scikit-learn onnx onnxruntime
  python sample_apps/model/train_digits_cnn.py
"""
from __future__ import annotations

import collections
import os
import random
import sys
import warnings
from pathlib import Path

# Single thread + deterministic kernels; must be set before torch initialises its pools.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
EPOCHS = 40
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4
N_CALIB = 64
OPSET = 17

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "digits_cnn.onnx"
CALIB_DIR = HERE / "calibration"
TEST_NPZ = HERE / "digits_test.npz"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set / pool already started
        pass
    torch.use_deterministic_algorithms(True)


class DigitsCNN(nn.Module):
    """~17k parameters. 8x8 -> conv/bn/relu x2 -> maxpool 4x4 -> conv/bn/hardswish -> GAP -> linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.Hardswish(),  # mobile-style activation; edgepack rewrites it
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # exported as GlobalAveragePool
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def load_data():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8] in [0,1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.3, random_state=0, stratify=y
    )
    return (
        np.ascontiguousarray(x_tr, dtype=np.float32),
        np.ascontiguousarray(x_te, dtype=np.float32),
        y_tr.astype(np.int64),
        y_te.astype(np.int64),
    )


def train(model: nn.Module, x_tr: np.ndarray, y_tr: np.ndarray) -> None:
    xt = torch.from_numpy(x_tr)
    yt = torch.from_numpy(y_tr)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (len(xt) + BATCH_SIZE - 1) // BATCH_SIZE
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, epochs=EPOCHS, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(xt), BATCH_SIZE):
            idx = perm[i : i + BATCH_SIZE]
            xb, yb = xt[idx], yt[idx]
            # light augmentation: random 1-pixel shifts (deterministic via gen)
            shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == yb).sum().item()
            total += len(idx)
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:3d}  loss {loss_sum / total:.4f}  train_acc {correct / total:.4f}")


@torch.no_grad()
def torch_predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    return model(torch.from_numpy(x)).numpy()


def export_onnx(model: nn.Module, path: Path) -> None:
    model.eval()
    dummy = torch.zeros(1, 1, 8, 8, dtype=torch.float32)
    # Expected noise: legacy-exporter deprecation notice, and the constant-folding hint that
    # only matters when the model is in training mode (ours is in eval mode).
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", message=".*constant folding be turned off.*")
    # Legacy (TorchScript) exporter. TrainingMode.PRESERVE with the model in eval mode keeps
    # BatchNormalization as its own node (inference form, running stats); plain EVAL mode
    # would let the exporter fold BN into the preceding Conv.
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET,
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.PRESERVE,
        dynamo=False,
    )


def main() -> int:
    seed_everything(SEED)
    x_tr, x_te, y_tr, y_te = load_data()
    print(f"train {x_tr.shape}  test {x_te.shape}")

    model = DigitsCNN()
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    train(model, x_tr, y_tr)

    torch_logits = torch_predict(model, x_te)
    torch_acc = float((torch_logits.argmax(1) == y_te).mean())
    print(f"torch test accuracy: {torch_acc:.4f}")

    export_onnx(model, ONNX_PATH)

    import onnx
    import onnxruntime as ort

    m = onnx.load(str(ONNX_PATH))
    onnx.checker.check_model(m, full_check=True)
    hist = collections.Counter(n.op_type for n in m.graph.node)
    print("op histogram:", dict(sorted(hist.items())))
    if hist.get("BatchNormalization", 0) == 0:
        print("WARNING: no BatchNormalization node in exported graph", file=sys.stderr)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(ONNX_PATH), so, providers=["CPUExecutionProvider"])
    ort_logits = sess.run(["logits"], {"input": x_te})[0]
    ort_acc = float((ort_logits.argmax(1) == y_te).mean())
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    same_pred = bool((ort_logits.argmax(1) == torch_logits.argmax(1)).all())
    print(f"onnxruntime test accuracy: {ort_acc:.4f}  max|logit diff| {max_diff:.2e}  same predictions: {same_pred}")
    if not same_pred:
        raise SystemExit("onnxruntime predictions differ from torch")

    CALIB_DIR.mkdir(exist_ok=True)
    calib = np.ascontiguousarray(x_tr[:N_CALIB], dtype=np.float32)
    np.save(CALIB_DIR / "input.npy", calib)
    np.savez(TEST_NPZ, input=x_te, label=y_te)
    print(f"wrote {ONNX_PATH.name} ({ONNX_PATH.stat().st_size} bytes), "
          f"calibration/input.npy {calib.shape}, {TEST_NPZ.name} ({len(y_te)} samples)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
