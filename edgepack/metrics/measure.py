"""Per-kind metrics: a candidate's outputs against the fp32 original's, in the terms the model's user
sees them. Each returns a dict of metrics with the evidence behind them (``n`` and its ``unit``), and
``not_verifiable`` (a reason) when the fp32 outputs give nothing to compare (all ~0, constant, a
probability map never above its threshold, no confident decision or detection, only blank sequences).

Rules (see README "Verification"):

* classes: top-1 agreement on every decision and on the *confident* ones - where fp32's top-1
  probability is at least ``margin`` (0.2) above its runner-up (softmax applied to scores that are not
  probabilities already); top-k (k = 5, fewer for few classes): fp32's top-1 among the candidate's
  top k. Integer outputs are labels: every element is a decision, compared exactly.
* sequence: per-step argmax agreement and identical decoded sequences (greedy CTC: repeats collapsed,
  the blank, index 0 unless ``blank=K``, dropped; ``ctc=0`` compares the raw argmax paths).
* map: masks thresholded at ``threshold`` (0.5 for values in [0, 1], else the midpoint of the fp32
  range; logit maps 0): pooled pixel agreement and pooled IoU of the masks.
* boxes: :mod:`.boxes`.
* embedding: cosine per sample (over the samples when each holds a single value).
"""

from __future__ import annotations

import numpy as np

from .kinds import OutputKind
from .vector import cosine

CONFIDENCE_MARGIN = 0.2  # a class decision is confident when fp32's top-1 leads its runner-up by this much
TOP_K = 5
TINY = 1e-6  # fp32 values below this everywhere are "all ~0"


def _rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)


def _probabilities(rows: np.ndarray) -> np.ndarray:
    if rows.size and rows.min() >= 0.0 and rows.max() <= 1.0:
        return rows  # softmax or sigmoid outputs already
    e = np.exp(rows - rows.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def degenerate(refs: list[np.ndarray]) -> str | None:
    """Why fp32 float outputs give nothing to compare (all ~0, constant), else None."""
    values = [np.asarray(r, dtype=np.float64) for r in refs]
    if not values or not all(np.isfinite(v).all() for v in values):
        return None  # inf/NaN in the fp32 outputs: judged as values (a candidate cannot match them)
    hi = max(float(np.max(np.abs(v))) if v.size else 0.0 for v in values)
    if hi < TINY:
        return f"the fp32 values are all ~0 (max |value| {hi:.3g})"
    lo_v = min(float(v.min()) for v in values if v.size)
    hi_v = max(float(v.max()) for v in values if v.size)
    if hi_v - lo_v <= TINY * max(1.0, hi):
        return f"the fp32 values are constant ({hi_v:.6g})"
    return None


def classes(kind: OutputKind, refs: list, cands: list) -> dict:
    if all(np.asarray(r).dtype.kind in "iub" for r in refs):
        r = np.concatenate([np.ravel(x) for x in refs])
        c = np.concatenate([np.ravel(x) for x in cands])
        agree = float(np.mean(r == c)) if r.size else None
        return {"top1_agreement": agree, "confident_agreement": agree, "decisions": int(r.size),
                "confident_decisions": int(r.size), "n": int(r.size), "unit": "labels",
                "not_verifiable": None if r.size else "the output holds no labels"}
    r, c = np.concatenate([_rows(x) for x in refs]), np.concatenate([_rows(x) for x in cands])
    tr, tc = r.argmax(axis=1), c.argmax(axis=1)
    p = np.sort(_probabilities(r), axis=1)
    margin = kind.opt("margin", CONFIDENCE_MARGIN)
    confident = (p[:, -1] - p[:, -2] >= margin) if r.shape[1] > 1 else np.ones(len(r), bool)
    out = {"top1_agreement": float(np.mean(tr == tc)), "decisions": int(len(r)),
           "confident_agreement": float(np.mean(tr[confident] == tc[confident])) if confident.any() else None,
           "confident_decisions": int(confident.sum()), "confidence_margin": margin,
           "n": int(confident.sum()), "unit": "confident decisions", "not_verifiable": None}
    k = min(TOP_K, r.shape[1] - 1)
    if k >= 2:
        top = np.argsort(-c, axis=1, kind="stable")[:, :k]
        out["topk_agreement"], out["k"] = float(np.mean((top == tr[:, None]).any(axis=1))), k
    if not confident.any():
        out["not_verifiable"] = (f"no confident fp32 decision (top-1 ahead of the runner-up by >= {margin:g}) "
                                 f"among {len(r)}")
    return out


def _ctc(path: np.ndarray, blank: int) -> tuple[int, ...]:
    keep = np.ones(len(path), bool)
    keep[1:] = path[1:] != path[:-1]
    return tuple(int(i) for i in path[keep] if i != blank)


def sequence(kind: OutputKind, refs: list, cands: list) -> dict:
    blank, ctc = kind.opt("blank", 0), bool(kind.opt("ctc", 1))
    steps = same_steps = same_seq = nonempty = total = 0
    for r, c in zip(refs, cands):
        pr = np.asarray(r).reshape(-1, *np.asarray(r).shape[-2:]).argmax(axis=-1)
        pc = np.asarray(c).reshape(-1, *np.asarray(c).shape[-2:]).argmax(axis=-1)
        steps += pr.size
        same_steps += int(np.count_nonzero(pr == pc))
        for a, b in zip(pr, pc):
            da, db = (_ctc(a, blank), _ctc(b, blank)) if ctc else (tuple(a), tuple(b))
            same_seq += da == db
            nonempty += bool(da)
            total += 1
    out = {"sequence_agreement": same_seq / total if total else None, "step_agreement": same_steps / steps if steps else None,
           "sequences": total, "nonempty_sequences": nonempty, "decoding": f"greedy CTC, blank {blank}" if ctc else "argmax path",
           "n": total, "unit": "sequences", "not_verifiable": None}
    if ctc and not nonempty:
        out["not_verifiable"] = f"every fp32 sequence decodes to nothing (all blank, index {blank})"
    return out


def threshold(kind: OutputKind, refs: list) -> tuple[float, str]:
    if "threshold" in kind.options:
        return float(kind.options["threshold"]), "given" if kind.user else "logit map"
    lo = min(float(np.min(r)) for r in refs)
    hi = max(float(np.max(r)) for r in refs)
    if lo >= 0.0 and hi <= 1.0:
        return 0.5, "values in [0, 1]"
    return (lo + hi) / 2, f"midpoint of the fp32 range [{lo:.4g}, {hi:.4g}]"


def dense(kind: OutputKind, refs: list, cands: list) -> dict:
    thr, basis = threshold(kind, refs)
    agree = total = inter = union = positive = 0
    for r, c in zip(refs, cands):
        mr, mc = np.asarray(r) > thr, np.asarray(c) > thr
        agree += int(np.count_nonzero(mr == mc))
        total += mr.size
        inter += int(np.count_nonzero(mr & mc))
        union += int(np.count_nonzero(mr | mc))
        positive += int(np.count_nonzero(mr))
    out = {"pixel_agreement": agree / total if total else None, "mask_iou": inter / union if union else None,
           "threshold": thr, "threshold_from": basis, "fp32_mask_pixels": positive, "pixels": total,
           "n": total, "unit": "pixels", "not_verifiable": None}
    top = max(float(np.max(r)) for r in refs)
    if positive == 0:
        out["not_verifiable"] = f"the fp32 output never exceeds the threshold {thr:.4g} (max {top:.3g}): its masks are empty"
    elif positive == total:
        out["not_verifiable"] = f"the fp32 output exceeds the threshold {thr:.4g} everywhere: its masks are full"
    return out




def embedding(kind: OutputKind, refs: list, cands: list) -> dict:
    flat_r = [np.asarray(r, dtype=np.float64).ravel() for r in refs]
    flat_c = [np.asarray(c, dtype=np.float64).ravel() for c in cands]
    if all(v.size == 1 for v in flat_r):
        cos = [cosine(np.concatenate(flat_r), np.concatenate(flat_c))]
        over = "the samples (one value each)"
    else:
        cos = [cosine(a, b) for a, b in zip(flat_r, flat_c)]
        over = "each sample"
    return {"cosine_min": min(cos), "cosine_mean": float(np.mean(cos)), "cosine_over": over,
            "n": len(refs), "unit": "samples", "not_verifiable": None}


def measure(kind: OutputKind, refs: list, cands: list) -> dict:
    """The metrics of ``kind`` for one output (fp32 ``refs`` and candidate ``cands``, one array per sample)."""
    from .boxes import boxes

    fn = {"classes": classes, "sequence": sequence, "map": dense, "boxes": boxes, "embedding": embedding}[kind.kind]
    why = degenerate(refs) if kind.kind != "classes" or np.asarray(refs[0]).dtype.kind == "f" else None
    out = fn(kind, refs, cands)
    if why is not None:
        out["not_verifiable"] = why
    return out
