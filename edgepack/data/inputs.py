"""The samples a build runs on, made once per model and input shapes and shared by every target:
calibration samples, held-out verification inputs, and the fp32 reference outputs on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CalibrationError, ShapeError, StageError
from ..model import LoadedModel, TensorSpec
from ..shapes import require_fixed
from .calibration import load_calibration, split_calibration
from .generated import apply_int_ranges, generate_inputs, int_input_ranges

GENERATED_SAMPLES = 8
SEED = 0


@dataclass(frozen=True)
class Samples:
    """One model's samples: calibration (empty without a calibration folder), held-out inputs to
    verify on, the fp32 original's outputs on them, and notes saying where they came from."""

    calibration: tuple[dict[str, np.ndarray], ...]
    verify_inputs: tuple[dict[str, np.ndarray], ...]
    reference_outputs: tuple[dict[str, np.ndarray], ...]
    notes: tuple[str, ...]


class SampleSets:
    """Samples per (model, input shapes), computed on first use.

    ``stems``: the file stems of the build's models. A model's calibration data is in
    ``calibration/<stem>/`` when that folder exists (for a single model whose stem is also one of its
    input names, that folder is the input's per-sample folder instead), else in ``calibration`` itself.
    """

    def __init__(self, calibration: Path | None, stems: list[str] | tuple[str, ...] = ()):
        self.calibration = calibration
        self.stems = tuple(stems)
        self._cache: dict = {}

    def folder_for(self, lm: LoadedModel) -> Path | None:
        """The folder ``lm``'s calibration samples come from (None without --calibration)."""
        if self.calibration is None:
            return None
        own = self.calibration / lm.path.stem
        several = len(self.stems) > 1
        if own.is_dir() and (several or lm.path.stem not in {t.name for t in lm.info.inputs}):
            return own
        return self.calibration

    def get(self, lm: LoadedModel, specs: list[TensorSpec], need_fixed_why: str | None, plan) -> Samples:
        key = (lm.info.sha256, lm.path.stem, tuple((s.name, s.shape) for s in specs))
        if key not in self._cache:
            self._cache[key] = self._make(lm, specs, need_fixed_why, plan)
        return self._cache[key]

    def _make(self, lm: LoadedModel, specs: list[TensorSpec], need_fixed_why: str | None, plan) -> Samples:
        from ..runtime.ort import run_model

        notes: list[str] = []
        folder = self.folder_for(lm)
        if folder is not None:
            samples = self._load(lm, folder, specs, notes)
            calib, hold, note = split_calibration(samples)
            notes.append(note)
        else:
            if need_fixed_why:
                require_fixed(plan, lm.info, need_fixed_why)
            if any(not s.is_fixed for s in specs):
                msg = "no calibration data and undecided input dimensions: pass --shape NAME=DIMS or --calibration DIR"
                raise ShapeError(msg)
            ranges = int_input_ranges(lm.proto)
            hold = apply_int_ranges(generate_inputs(specs, GENERATED_SAMPLES, SEED), ranges, SEED)
            calib = []
            bounded = ", ".join(f"{k} in [{lo},{hi})" for k, (lo, hi) in sorted(ranges.items()))
            notes.append(f"{GENERATED_SAMPLES} generated inputs (seed {SEED}: floats ~ N(0,1), ints in [0,10)"
                         + (f"; from the graph: {bounded}" if bounded else "") + ")")
        try:
            refs = run_model(lm.path, hold)
        except StageError as exc:
            source = "the calibration data" if self.calibration is not None else "generated inputs"
            msg = (f"the fp32 model {lm.path.name} does not run on {source}: {exc}; "
                   "pass --calibration DIR with real inputs")
            raise StageError(msg) from exc
        return Samples(tuple(calib), tuple(hold), tuple(refs), tuple(notes))

    def _load(self, lm: LoadedModel, folder: Path, specs: list[TensorSpec], notes: list[str]) -> list[dict]:
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
