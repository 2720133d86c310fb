"""YOLO-style heads: decode boxes as the model's users do and compare the confident detections.

A head is ``[N, 4+C, A]`` (``channels-first``, Ultralytics YOLOv8/11) or ``[N, A, 4+C]`` (``anchors-first``):
per anchor cx, cy, w, h, then C class scores (with ``objectness=1`` a score column comes first and
multiplies them, YOLOv5). Decoding: class = argmax of the scores, score = its value; anchors scoring at
least ``LOW`` (0.25, Ultralytics' default ``conf``) go through class-wise greedy NMS at IoU 0.45, at
most 300 kept (Ultralytics ``max_det``).

Agreement: a detection is *confident* at score >= ``conf`` (0.5). Each confident fp32 detection must
have a candidate detection (score >= LOW) of the same class at IoU >= 0.5, and each confident
candidate detection one in the fp32 output: ``box_agreement`` = matched / (confident fp32 + confident
candidate). Both ways, so a candidate that loses its detections and one that invents them both fail -
e.g. an int8 YOLOv8 whose output Concat shares one uint8 scale between boxes (0..640) and scores
(0..1): its scores collapse while the whole-tensor cosine stays above 0.998.
"""

from __future__ import annotations

import numpy as np

from .kinds import OutputKind

LOW = 0.25
CONF = 0.5
NMS_IOU = 0.45
MATCH_IOU = 0.5
MAX_DET = 300
MAX_NMS = 30000


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def decode(head: np.ndarray, layout: str, objectness: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per batch row: (classes, scores, xyxy boxes) after NMS, best first."""
    head = np.asarray(head, dtype=np.float64)
    rows = head if layout == "anchors-first" else np.swapaxes(head, 1, 2)  # -> [N, A, 4+C]
    out = []
    for r in rows:
        first = 5 if objectness else 4
        scores_all = r[:, first:] * (r[:, 4:5] if objectness else 1.0)
        cls = scores_all.argmax(axis=1)
        score = scores_all[np.arange(len(r)), cls]
        keep = np.flatnonzero(score >= LOW)
        keep = keep[np.argsort(-score[keep], kind="stable")][:MAX_NMS]
        cx, cy, w, h = r[keep, 0], r[keep, 1], r[keep, 2], r[keep, 3]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        chosen: list[int] = []
        alive = np.ones(len(keep), bool)
        for i in range(len(keep)):
            if not alive[i]:
                continue
            chosen.append(i)
            if len(chosen) >= MAX_DET:
                break
            same = (cls[keep] == cls[keep[i]]) & alive
            same[: i + 1] = False
            idx = np.flatnonzero(same)
            if idx.size:
                alive[idx[_iou(xyxy[i], xyxy[idx]) > NMS_IOU]] = False
        sel = np.array(chosen, dtype=np.int64)
        out.append((cls[keep][sel], score[keep][sel], xyxy[sel]))
    return out


def _matched(src, dst, conf: float) -> tuple[int, int]:
    """(matched, confident) for the confident detections of ``src`` against all detections of ``dst``."""
    cls_s, score_s, box_s = src
    cls_d, _, box_d = dst
    hit = total = 0
    for c, s, b in zip(cls_s, score_s, box_s):
        if s < conf:
            continue
        total += 1
        same = box_d[cls_d == c]
        hit += bool(same.size and (_iou(b, same) >= MATCH_IOU).any())
    return hit, total


def boxes(kind: OutputKind, refs: list, cands: list) -> dict:
    layout = kind.opt("layout", "channels-first")
    objectness = bool(kind.opt("objectness", 0))
    conf = float(kind.opt("conf", CONF))
    hit_r = tot_r = hit_c = tot_c = 0
    for r, c in zip(refs, cands):
        for dr, dc in zip(decode(r, layout, objectness), decode(c, layout, objectness)):
            h, t = _matched(dr, dc, conf)
            hit_r, tot_r = hit_r + h, tot_r + t
            h, t = _matched(dc, dr, conf)
            hit_c, tot_c = hit_c + h, tot_c + t
    total = tot_r + tot_c
    out = {"box_agreement": (hit_r + hit_c) / total if total else None,
           "fp32_confident": tot_r, "fp32_matched": hit_r, "candidate_confident": tot_c, "candidate_matched": hit_c,
           "conf": conf, "layout": layout, "objectness": objectness, "n": total, "unit": "confident detections",
           "not_verifiable": None}
    if not total:
        out["not_verifiable"] = f"no confident detection (score >= {conf:g}) by the fp32 model or the candidate"
    return out
