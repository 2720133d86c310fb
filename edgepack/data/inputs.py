"""The samples a build runs on, made once per model and input shapes and shared by every target:
calibration samples, the disjoint verification samples, and the fp32 reference outputs on them.

The split (:func:`split_rule`): with n real samples, a target whose recipes calibrate (static int8)
verifies on ``max(32, n/4)`` evenly spaced samples when n >= 48 (the rest, at least 16, calibrate); with
32 <= n < 48 on all but 16; with 2 <= n < 32 on half of them; with one sample on that sample, which also
calibrates (recorded as not disjoint). Fewer than 32 verification samples is reported as "weakly
verified, n=K". A target none of whose recipes calibrates verifies on every sample. Without a
calibration folder the model is verified on generated inputs (also "weakly verified", and outputs they
cannot exercise are "not verifiable").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CalibrationError, ShapeError, StageError
from ..model import LoadedModel, TensorSpec
from ..records import Evidence
from ..shapes import require_fixed
from .calibration import load_calibration
from .generated import apply_int_ranges, generate_inputs, int_input_ranges

GENERATED_SAMPLES = 8
SEED = 0
SPLIT_RULE = ("n >= 48: max(32, n/4) evenly spaced samples verify, the rest calibrate; 32 <= n < 48: all but 16 "
              "verify; 2 <= n < 32: half verify; n = 1: the sample calibrates and verifies")


def split_rule(n: int) -> int:
    """How many of ``n`` samples verify when the rest calibrate (0: too few to split)."""
    if n >= 48:
        return max(32, math.ceil(n / 4))
    if n >= 32:
        return n - 16
    return n // 2


def held_out(n: int) -> tuple[int, ...]:
    """The evenly spaced indices of the verification samples among ``n``."""
    v = split_rule(n)
    return tuple(sorted({int(round(i)) for i in np.linspace(0, n - 1, v)})) if v else ()


class ReferenceFailure(StageError):
    """The fp32 model does not run on the samples: bad input for every target (the build stops, as it
    does when the first sample fails while the targets are planned)."""


@dataclass(frozen=True)
class Samples:
    """One model's samples for one target: calibration (empty without a calibration folder or a
    calibrating recipe), the inputs to verify on, the fp32 original's outputs on them, where they come
    from (``evidence``) and notes saying so."""

    calibration: tuple[dict[str, np.ndarray], ...]
    verify_inputs: tuple[dict[str, np.ndarray], ...]
    reference_outputs: Sequence[dict[str, np.ndarray]]  # a Pending while the lane computes them
    notes: tuple[str, ...]
    evidence: Evidence | None = None
    key: str = ""


@dataclass
class _Loaded:
    samples: list[dict[str, np.ndarray]]
    notes: list[str]
    generated: bool
    refs: dict = field(default_factory=dict)  # subset name -> fp32 outputs


class SampleSets:
    """Samples per (model, input shapes), loaded on first use; reference outputs per subset.

    ``stems``: the file stems of the build's models. A model's calibration data is in
    ``calibration/<stem>/`` when that folder exists (for a single model whose stem is also one of its
    input names, that folder is the input's per-sample folder instead), else in ``calibration`` itself.
    """

    def __init__(self, calibration: Path | None, stems: list[str] | tuple[str, ...] = ()):
        self.calibration = calibration
        self.stems = tuple(stems)
        self._cache: dict = {}
        self._views: dict = {}

    def folder_for(self, lm: LoadedModel) -> Path | None:
        """The folder ``lm``'s calibration samples come from (None without --calibration)."""
        if self.calibration is None:
            return None
        own = self.calibration / lm.path.stem
        several = len(self.stems) > 1
        if own.is_dir() and (several or lm.path.stem not in {t.name for t in lm.info.inputs}):
            return own
        return self.calibration

    def get(self, lm: LoadedModel, specs: list[TensorSpec], need_fixed_why: str | None, plan,
            calibrates: bool = True) -> Samples:
        """The samples for a target whose recipes calibrate (``calibrates``) or not."""
        key = (lm.info.sha256, lm.path.stem, tuple((s.name, s.shape) for s in specs))
        if key not in self._cache:
            self._cache[key] = self._load(lm, specs, need_fixed_why, plan)
        if (key, calibrates) not in self._views:  # one object per view: targets share it (and memo keys on it)
            self._views[(key, calibrates)] = self._view(lm, self._cache[key], key, calibrates)
        return self._views[(key, calibrates)]

    def _view(self, lm: LoadedModel, loaded: _Loaded, key, calibrates: bool) -> Samples:
        n = len(loaded.samples)
        if loaded.generated:
            evidence = Evidence("generated inputs", n, True)
            return self._samples(lm, loaded, "generated", tuple(range(n)), (), evidence, key)
        if not calibrates:
            split = {"total": n, "calibration": 0, "verification": n, "rule": "no recipe of this target calibrates: "
                     "every sample verifies"}
            evidence = Evidence("calibration folder", n, True, split)
            note = f"{n} samples verify (no recipe of this target calibrates)"
            return self._samples(lm, loaded, "all", tuple(range(n)), (), evidence, key, note)
        held = held_out(n)
        if not held:
            split = {"total": n, "calibration": n, "verification": n, "rule": SPLIT_RULE}
            evidence = Evidence("calibration folder", n, False, split)
            note = f"only {n} calibration sample: it calibrates and verifies"
            return self._samples(lm, loaded, "all", tuple(range(n)), tuple(range(n)), evidence, key, note)
        calib = tuple(i for i in range(n) if i not in set(held))
        split = {"total": n, "calibration": len(calib), "verification": len(held), "rule": SPLIT_RULE,
                 "held_out": list(held)}
        evidence = Evidence("calibration folder", len(held), True, split)
        note = f"{len(calib)} samples calibrate, {len(held)} evenly spaced samples held out to verify"
        return self._samples(lm, loaded, "held-out", held, calib, evidence, key, note)

    def _samples(self, lm, loaded: _Loaded, subset: str, verify: tuple, calib: tuple, evidence: Evidence, key,
                 note: str | None = None) -> Samples:
        if subset not in loaded.refs:
            loaded.refs[subset] = self._reference(lm, [loaded.samples[i] for i in verify])
        notes = (*loaded.notes, note) if note else tuple(loaded.notes)
        return Samples(tuple(loaded.samples[i] for i in calib), tuple(loaded.samples[i] for i in verify),
                       loaded.refs[subset], notes, evidence, f"{key!r}:{subset}")

    def _load(self, lm: LoadedModel, specs: list[TensorSpec], need_fixed_why: str | None, plan) -> _Loaded:
        notes: list[str] = []
        folder = self.folder_for(lm)
        if folder is not None:
            return _Loaded(self._load_folder(lm, folder, specs, notes), notes, False)
        if need_fixed_why:
            require_fixed(plan, lm.info, need_fixed_why)
        if any(not s.is_fixed for s in specs):
            msg = "no calibration data and undecided input dimensions: pass --shape NAME=DIMS or --calibration DIR"
            raise ShapeError(msg)
        ranges = int_input_ranges(lm.proto)
        samples = apply_int_ranges(generate_inputs(specs, GENERATED_SAMPLES, SEED), ranges, SEED)
        bounded = ", ".join(f"{k} in [{lo},{hi})" for k, (lo, hi) in sorted(ranges.items()))
        notes.append(f"{GENERATED_SAMPLES} generated inputs (seed {SEED}: floats ~ N(0,1), ints in [0,10)"
                     + (f"; from the graph: {bounded}" if bounded else "") + ")")
        return _Loaded(samples, notes, True)

    def _reference(self, lm: LoadedModel, inputs: list[dict]):
        """The fp32 original's outputs on ``inputs``, run exactly as stored (onnxruntime's optimizations
        off: no graph rewrite of this host's onnxruntime - x86 NCHWc layouts, fused convolutions - sits
        between the model and its ground truth; the prepare stage's rewrite check compares against the
        same run). A sequence whose first output is computed now (the plan reads the outputs' kinds from
        it) and the rest on the background lane (the prepare stage waits for them at its end, so a sample
        the model fails on fails the build there)."""
        from ..runtime.ort import queue_model_runs

        source = "the calibration data" if self.calibration is not None else "generated inputs"

        def wrap(exc: BaseException) -> BaseException:
            if not isinstance(exc, StageError):
                return exc
            return ReferenceFailure(f"the fp32 model {lm.path.name} does not run on {source}: {exc}; "
                                    "pass --calibration DIR with real inputs")

        try:
            outputs = queue_model_runs(lm.path, inputs, level="disable", wrap=wrap)
        except StageError as exc:  # onnxruntime cannot load it
            raise wrap(exc) from exc
        outputs[0]  # noqa: B018 - computed now: a model that cannot run on the samples fails the plan
        return outputs

    def _load_folder(self, lm: LoadedModel, folder: Path, specs: list[TensorSpec], notes: list[str]) -> list[dict]:
        several = len(self.stems) > 1
        try:
            samples = load_calibration(folder, specs, notes=notes)
        except CalibrationError as exc:
            if several and folder == self.calibration:
                msg = (f"{exc} (with several models, give each its own folder: "
                       f"{self.calibration.name}/{lm.path.stem}/ for {lm.path.name})")
                raise CalibrationError(msg) from exc
            raise
        if several:
            where = f"{self.calibration.name}/{lm.path.stem}/" if folder != self.calibration else f"{folder.name}/"
            notes.insert(0, f"calibration data for {lm.path.name} from {where}")
        return samples
