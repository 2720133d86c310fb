"""Decode a YOLOv8 output ([1, 4 + classes, anchors]: cx, cy, w, h, class scores) into boxes, and
compare two decodings of the same image (e.g. x86 vs aarch64 onnxruntime)."""

from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two xyxy boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def decode(output0: np.ndarray, conf: float = 0.25, iou_max: float = 0.45) -> list[tuple[int, float, np.ndarray]]:
    """[(class, score, xyxy)] above ``conf``, greedy per-class NMS at ``iou_max``, best first."""
    y = np.asarray(output0, np.float64)[0]
    scores, classes = y[4:].max(axis=0), y[4:].argmax(axis=0)
    keep = np.flatnonzero(scores >= conf)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    cx, cy, w, h = y[:4]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    out: list[tuple[int, float, np.ndarray]] = []
    for i in keep:
        if all(c != classes[i] or iou(b, boxes[i]) <= iou_max for c, _, b in out):
            out.append((int(classes[i]), float(scores[i]), boxes[i]))
    return out


def disagreements(a: list, b: list, *, conf: float, margin: float = 0.05, iou_min: float = 0.9) -> list[str]:
    """Detections of ``a`` clearly above ``conf`` (by ``margin``) without a same-class box in ``b`` at
    IoU >= ``iou_min`` and score >= conf - margin, and the same from ``b`` to ``a``. Borderline boxes,
    whose score sits within ``margin`` of the threshold, may appear on one side only."""
    problems = []
    for name, src, dst in (("a", a, b), ("b", b, a)):
        for cls, score, box in src:
            if score < conf + margin:
                continue
            best = max((iou(box, d) for c, s, d in dst if c == cls and s >= conf - margin), default=0.0)
            if best < iou_min:
                problems.append(f"{name}: class {cls} score {score:.3f} at {np.round(box, 1).tolist()} "
                                f"has no match (best IoU {best:.3f})")
    return problems
