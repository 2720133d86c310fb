"""Checks of our own graph rewrites that compare like with like, against onnxruntime's own noise.

A rewrite (decompositions, basic optimization, weight-only int8 protection) is judged against the
original graph run with the SAME session settings (optimizations off, one thread), on the build's
verification inputs. What it may change is not a fixed number: float32 reassociation on a large
convolution moves a detector's map by 1e-4 of its range while a small classifier moves by 1e-9.
So the tolerance is measured on this model and these inputs: onnxruntime evaluates the original
graph at its basic, extended and default optimization levels, and each evaluation's deviation from
the unoptimized run is noise it ships to every user. A rewrite passes when, on every output,

* its largest error relative to the output's range (max - min of the reference) is within
  ``MARGIN`` x that noise, or ``FLOOR_ULPS`` float32 ulps of the output's magnitude where onnxruntime's
  levels agree bit for bit, and
* one minus the cosine of all its values (all samples pooled) is within ``MARGIN`` x the noise's,
  or ``COSINE_FLOOR``;

and non-finite values sit where the reference has them. Since the limits never go below the floors, a
rewrite within the floors on every output passes whatever the noise is, and the noise (three more
runs of the graph) is measured only for a rewrite that moves an output beyond them (:func:`within_floor`).

MARGIN = 4: on the real models of tests/real_models.py with real inputs, our correct rewrites
deviate by at most 1.28x the noise measured this way (PP-OCRv5 recognizer with its HardSwish
decomposed; see benchmarks/rewrite_noise.py), so 4 leaves 3x headroom while a wrong rewrite
(a wrong constant, a dropped node) moves outputs by 1e-3 to 1 of their range.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metrics.vector import cosine
from .quiet import numeric

MARGIN = 4.0
FLOOR_ULPS = 32  # where onnxruntime's levels agree bit for bit: a rewrite may still round differently
COSINE_FLOOR = 1e-10  # 1 - cosine of float32 outputs that differ by ~30 ulps is ~1e-11
NOISE_LEVELS = ("basic", "extended")  # plus onnxruntime's default level: the build's reference outputs
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Deviation:
    """How far one output moved: ``err`` = max |ref - cand| / ``scale`` (the reference's range over
    all samples, or its magnitude where the range is 0), ``cos`` = 1 - cosine of all values pooled,
    ``nonfinite`` = positions where the candidate's NaN/Inf do not match the reference's."""

    err: float
    cos: float
    nonfinite: int
    scale: float
    magnitude: float  # largest finite |ref|


def _as_array(value) -> np.ndarray:
    if isinstance(value, list) and value and isinstance(value[0], dict):  # scikit-learn's ZipMap
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float64)
    return np.asarray(value, dtype=np.float64)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    """One minus the cosine of all values pooled (0 when both are zero, 1 when only one is)."""
    return max(0.0, 1.0 - cosine(a, b))


@numeric
def _all_finite(refs: list[np.ndarray], cands: list[np.ndarray]) -> Deviation | None:
    """The Deviation of same-shaped, all-finite outputs (the common case) without masks; None otherwise.
    Identical to the masked computation of :func:`_one` (same values, same order)."""
    if any(r.shape != c.shape for r, c in zip(refs, cands)):
        return None
    a = np.concatenate([r.ravel() for r in refs]) if refs else np.zeros(0)
    b = np.concatenate([c.ravel() for c in cands]) if cands else np.zeros(0)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    magnitude = float(np.max(np.abs(a))) if a.size else 0.0
    span = float(np.max(a) - np.min(a)) if a.size else 0.0
    scale = span if span > 0 else (magnitude if magnitude > 0 else 1.0)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    return Deviation(err / scale, _cos(a, b), 0, scale, magnitude)


@numeric
def _one(refs: list[np.ndarray], cands: list[np.ndarray]) -> Deviation:
    fast = _all_finite(refs, cands)
    if fast is not None:
        return fast
    finite_ref = [r[np.isfinite(r)] for r in refs]
    values = np.concatenate([f.ravel() for f in finite_ref]) if finite_ref else np.zeros(0)
    magnitude = float(np.max(np.abs(values))) if values.size else 0.0
    span = float(np.max(values) - np.min(values)) if values.size else 0.0
    scale = span if span > 0 else (magnitude if magnitude > 0 else 1.0)
    err, nonfinite = 0.0, 0
    a_parts, b_parts = [], []
    for r, c in zip(refs, cands):
        if r.shape != c.shape:
            return Deviation(float("inf"), 1.0, int(max(r.size, c.size)), scale, magnitude)
        both = np.isfinite(r) & np.isfinite(c)
        same_special = ~np.isfinite(r) & ((r == c) | (np.isnan(r) & np.isnan(c)))
        nonfinite += int(np.count_nonzero(~both & ~same_special))
        if np.any(both):
            err = max(err, float(np.max(np.abs(r[both] - c[both]))))
        a_parts.append(r[both].ravel())
        b_parts.append(c[both].ravel())
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    return Deviation(err / scale, _cos(a, b), nonfinite, scale, magnitude)


def deviation(ref: list[dict], cand: list[dict]) -> dict[str, Deviation]:
    """Per output of ``ref`` (one dict of outputs per sample): how far ``cand`` moved from it."""
    out = {}
    for name in ref[0]:
        if any(name not in c for c in cand) or len(ref) != len(cand):
            out[name] = Deviation(float("inf"), 1.0, 1, 1.0, 0.0)
            continue
        out[name] = _one([_as_array(r[name]) for r in ref], [_as_array(c[name]) for c in cand])
    return out


@dataclass(frozen=True)
class Noise:
    """onnxruntime's own deviation on this model and these inputs: per output, the worst over its
    optimization levels of the deviation from the unoptimized run."""

    outputs: dict[str, Deviation]
    samples: int
    evaluations: tuple[str, ...]

    def limits(self, name: str, magnitude: float, scale: float) -> tuple[float, float]:
        """(error limit relative to the range, 1 - cosine limit) for output ``name``."""
        noise = self.outputs.get(name)
        err = noise.err if noise is not None and np.isfinite(noise.err) else 0.0
        cos = noise.cos if noise is not None and np.isfinite(noise.cos) else 0.0
        floor = FLOOR_ULPS * FLOAT32_EPS * magnitude / scale if scale > 0 else 0.0
        return max(MARGIN * err, floor), max(MARGIN * cos, COSINE_FLOOR)

    def worst_err(self) -> float:
        return max((d.err for d in self.outputs.values() if np.isfinite(d.err)), default=0.0)

    def check(self, dev: dict[str, Deviation]) -> tuple[bool, str]:
        """(passes, what it shows): the worst output's error and its limit, or the output that failed."""
        worst_ratio, text = -1.0, "no outputs"
        for name, d in sorted(dev.items()):
            if d.nonfinite:
                return False, f"output '{name}': {d.nonfinite} NaN/Inf values where the original has finite ones"
            err_limit, cos_limit = self.limits(name, d.magnitude, d.scale)
            if not d.err <= err_limit:
                return False, (f"output '{name}' moved by {d.err:.1e} of its range (limit {err_limit:.1e}: "
                               f"{self._basis(name, err_limit)})")
            if not d.cos <= cos_limit:
                return False, f"output '{name}': 1 - cosine {d.cos:.1e} (limit {cos_limit:.1e})"
            ratio = d.err / err_limit if err_limit > 0 else 0.0
            if ratio > worst_ratio:
                worst_ratio = ratio
                text = (f"largest change {d.err:.1e} of the range of '{name}' (limit {err_limit:.1e}: "
                        f"{self._basis(name, err_limit)})")
        return True, text

    def _basis(self, name: str, err_limit: float) -> str:
        noise = self.outputs.get(name)
        if noise is None or not MARGIN * noise.err >= err_limit:
            return f"{FLOOR_ULPS} float32 ulps of its magnitude, above onnxruntime's own {noise.err if noise else 0:.1e}"
        return f"{MARGIN:g} x onnxruntime's own {noise.err:.1e}"

    def describe(self) -> str:
        return (f"onnxruntime's {', '.join(self.evaluations)} levels differ from its unoptimized run by up to "
                f"{self.worst_err():.1e} of an output's range on these {self.samples} samples")


def within_floor(dev: dict[str, Deviation]) -> str | None:
    """What the check shows when every output of ``dev`` is within the floors (FLOOR_ULPS float32 ulps of
    its magnitude, COSINE_FLOOR) - a rewrite that passes whatever onnxruntime's own noise is, since the
    limits are never below the floors -, else None (the noise must be measured to judge it)."""
    worst, text = -1.0, None
    for name, d in sorted(dev.items()):
        floor = FLOOR_ULPS * FLOAT32_EPS * d.magnitude / d.scale if d.scale > 0 else 0.0
        if d.nonfinite or not d.err <= floor or not d.cos <= COSINE_FLOOR:
            return None
        ratio = d.err / floor if floor > 0 else 0.0
        if ratio > worst:
            worst = ratio
            text = (f"largest change {d.err:.1e} of the range of '{name}' (limit {floor:.1e}: {FLOOR_ULPS} float32 "
                    "ulps of its magnitude; within it, onnxruntime's own noise need not be measured)")
    return text


def measure_noise(base: Path, inputs: list[dict], unoptimized: list[dict], default_level: list[dict] | None) -> Noise:
    """The Noise of the graph at ``base`` (the original, as stored) on ``inputs``: its runs at
    NOISE_LEVELS, and ``default_level`` (the original's outputs at onnxruntime's default level, when
    computed already), each against ``unoptimized`` (its run with optimizations off)."""
    from .runtime.ort import run_model

    runs = {level: run_model(base, inputs, level=level) for level in NOISE_LEVELS}
    if default_level is not None:
        runs["default"] = default_level
    worst: dict[str, Deviation] = {}
    for outputs in runs.values():
        for name, d in deviation(unoptimized, outputs).items():
            old = worst.get(name)
            worst[name] = d if old is None else Deviation(max(old.err, d.err), max(old.cos, d.cos), 0,
                                                           d.scale, d.magnitude)
    return Noise(worst, len(inputs), tuple(runs))
