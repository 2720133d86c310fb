"""Raw numeric comparison of outputs (cosine, max abs/rel error, top-1 of [N,C] outputs), their rounding
and the host speed bar (MAX_SLOWDOWN). Graph rewrites are checked in :mod:`edgepack.rewrite_check`.

Whether a candidate is *accepted* is decided in one place only, :func:`edgepack.judge.judge` (metrics
that fit each output, the profile's bars per kind, not-verifiable outputs never passed); it uses
:func:`compare_outputs` for the numbers every output gets.
"""

from __future__ import annotations

import numpy as np

from .errors import StageError
from .metrics.vector import cosine
from .quiet import numeric

MAX_SLOWDOWN = 1.10  # a candidate (recipe, rewrite) may run at most 10% slower than what it replaces on the host


def round_metrics(metrics: dict) -> dict:
    """Metrics as they are recorded: floats to 6 significant digits (byte-stable JSON)."""

    def r(v):
        return float(f"{v:.6g}") if isinstance(v, float) else v

    return {name: {k: r(v) for k, v in m.items()} for name, m in metrics.items()}


def _is_classifier(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and shape[-1] > 1




def _compare_one(name: str, refs: list[np.ndarray], cands: list[np.ndarray]) -> dict:
    cosines, max_abs, max_ref, nonfinite, ref_nonfinite = [], 0.0, 0.0, 0, 0
    agree = total = 0
    classifier = all(_is_classifier(r.shape) for r in refs)
    for i, (r, c) in enumerate(zip(refs, cands)):
        if r.shape != c.shape:
            msg = f"output '{name}' sample {i}: candidate shape {list(c.shape)} differs from reference {list(r.shape)}"
            raise StageError(msg)
        rf = np.asarray(r, dtype=np.float64).ravel()
        cf = np.asarray(c, dtype=np.float64).ravel()
        bad = int(np.count_nonzero(~np.isfinite(cf)))
        nonfinite += bad
        ref_nonfinite += int(np.count_nonzero(~np.isfinite(rf)))
        if bad:
            cosines.append(0.0)
            continue
        cosines.append(cosine(rf, cf))
        if rf.size:
            max_abs = max(max_abs, float(np.max(np.abs(rf - cf))))
            max_ref = max(max_ref, float(np.max(np.abs(rf))))
        if classifier:
            agree += int(np.count_nonzero(np.argmax(r, axis=-1) == np.argmax(c, axis=-1)))
            total += r.shape[0]
    out: dict = {
        "cosine_min": min(cosines) if cosines else 1.0,
        "max_abs_err": None if nonfinite else max_abs,
        "max_rel_err": None if nonfinite else (max_abs / max_ref if max_ref > 0 else max_abs),
        "ref_max_abs": max_ref,
        "top1_agreement": (agree / total if total else None) if classifier else None,
        "samples": len(refs),
    }
    if nonfinite:
        out["nonfinite_values"] = nonfinite
        if ref_nonfinite:
            out["reference_nonfinite_values"] = ref_nonfinite
    return out


def _as_array(value) -> np.ndarray:
    """Outputs as arrays; a sequence of maps (scikit-learn's ZipMap) becomes rows of values by sorted key."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float64)
    return np.asarray(value)


def scaled_error(metrics: dict) -> float:
    """Largest output error relative to max(|reference|, 1).

    The unit floor keeps float32 rounding of tiny outputs (a sigmoid map near 1e-5) from reading
    as a large relative change; outputs of magnitude above 1 are judged fully relatively.
    """
    worst = 0.0
    for m in metrics.values():
        if m.get("max_abs_err") is None:
            return float("inf")
        worst = max(worst, m["max_abs_err"] / max(m.get("ref_max_abs") or 0.0, 1.0))
    return worst




@numeric  # inf/NaN in hostile outputs are values here, not warnings on stderr
def compare_outputs(ref: list[dict[str, np.ndarray]], cand: list[dict[str, np.ndarray]]) -> dict:
    """Per output name: cosine_min, max_abs_err, max_rel_err (to max |ref|), top1_agreement (classifiers)."""
    if len(ref) != len(cand):
        msg = f"reference has {len(ref)} samples but the candidate {len(cand)}"
        raise StageError(msg)
    if not ref:
        msg = "no samples to compare"
        raise StageError(msg)
    metrics = {}
    for name in ref[0]:
        if any(name not in c for c in cand):
            msg = f"candidate model has no output '{name}'"
            raise StageError(msg)
        metrics[name] = _compare_one(name, [_as_array(r[name]) for r in ref], [_as_array(c[name]) for c in cand])
    return metrics
