"""Calibration samples (quantization data, not the device micro-benchmarks of ``edgepack calibrate``):
load a user's calibration folder and split it into calibration and held-out verification samples.

The layouts a folder may use are in :mod:`edgepack.data.layouts`; here each input's arrays are cast
to its dtype where that keeps the values (with a note), cut into samples and checked. Every sample
returned is a dict {input name: array} with batch dimension 1 (where the model's batch is free).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import CalibrationError, StageError
from ..limits import DataBudget
from ..model import TensorSpec
from .layouts import Source, find_sources, layouts_hint


def dtype_kind(dtype: np.dtype) -> str:
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.floating):
        return "float"
    if np.issubdtype(dtype, np.integer):
        return "int"
    return "other"


def spec_dtype(spec: TensorSpec) -> np.dtype:
    try:
        return np.dtype(spec.dtype)
    except TypeError as exc:
        msg = f"input '{spec.name}' has type '{spec.dtype}', which edgepack cannot feed"
        raise StageError(msg) from exc


# ------------------------------------------------------------------------------ calibration folder


def _cast(spec: TensorSpec, arr: np.ndarray, where: str, notes: list[str]) -> np.ndarray:
    """``arr`` in the input's dtype and native byte order, when that keeps its values (a note says so);
    else a CalibrationError."""
    want = spec_dtype(spec)
    if arr.dtype.byteorder not in ("=", "|") and arr.dtype.newbyteorder("=") != arr.dtype:
        arr = arr.astype(arr.dtype.newbyteorder("="))
        notes.append(f"calibration {where}: byte order converted to this machine's for input '{spec.name}'")
    if arr.dtype == want:
        return arr
    have = arr.dtype
    if have == np.float64 and want == np.float32:
        notes.append(f"calibration {where}: float64 cast to float32 for input '{spec.name}'")
        return arr.astype(np.float32)
    if np.can_cast(have, want, "safe"):
        kept = " (values kept, not rescaled)" if dtype_kind(have) != dtype_kind(want) else ""
        notes.append(f"calibration {where}: {have} widened to {want} for input '{spec.name}'{kept}")
        return arr.astype(want)
    if dtype_kind(want) == "int" and dtype_kind(have) in ("int", "float") and _fits_int(arr, want):
        how = "narrowed" if dtype_kind(have) == "int" else "holds whole numbers: cast"
        notes.append(f"calibration {where}: {have} {how} to {want} for input '{spec.name}' (every value fits)")
        return arr.astype(want)
    if dtype_kind(have) == dtype_kind(want) == "float" and np.all(np.isfinite(arr.astype(want))):
        notes.append(f"calibration {where}: {have} rounded to {want} for input '{spec.name}'")
        return arr.astype(want)
    msg = f"calibration {where} is {have} but model input '{spec.name}' is {want}"
    raise CalibrationError(msg)


def _fits_int(arr: np.ndarray, want: np.dtype) -> bool:
    if arr.size == 0:
        return True
    if dtype_kind(arr.dtype) == "float" and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        return False
    info = np.iinfo(want)
    return bool(arr.min() >= info.min and arr.max() <= info.max)


def _dims_match(want: tuple, got: tuple) -> bool:
    return len(want) == len(got) and all(not isinstance(w, int) or w == g for w, g in zip(want, got))


def _expected(spec: TensorSpec) -> str:
    return "x".join(str(d) if isinstance(d, int) else "N" for d in spec.shape or ())


def _samples_of(spec: TensorSpec, arr: np.ndarray, where: str, one_per_file: bool) -> list[np.ndarray]:
    """The feeds (arrays in the input's shape, batch 1 where the batch is free) that ``arr`` holds:
    samples on an extra leading axis, samples stacked along the batch axis, or - for a file meant to
    hold one sample - that sample with or without its batch axis."""
    shape = spec.shape
    if shape is None:  # rank unknown: samples stacked along axis 0
        return [arr[i:i + 1] for i in range(arr.shape[0])] if arr.ndim else [arr]
    rank = len(shape)
    if arr.ndim == rank + 1:
        for axis, (want, got) in enumerate(zip(shape, arr.shape[1:])):
            if isinstance(want, int) and want != got:
                msg = (f"calibration {where} has shape {list(arr.shape)}: a sample's dim {axis} is {got} "
                       f"but input '{spec.name}' is {_expected(spec)}")
                raise CalibrationError(msg)
        return [np.asarray(arr[i]) for i in range(arr.shape[0])]
    if rank == 0 and arr.ndim == 0 and one_per_file:
        return [arr]
    batch_free = rank > 0 and (not isinstance(shape[0], int) or shape[0] == 1)
    if rank > 0 and arr.ndim == rank - 1 and batch_free and _dims_match(tuple(shape[1:]), arr.shape):
        return [arr[None]]  # one sample without its batch axis
    if arr.ndim != rank or not rank:
        msg = (f"calibration {where} has shape {list(arr.shape)} (rank {arr.ndim}) but input '{spec.name}' has rank "
               f"{rank}: stack samples on axis 0, e.g. [N, {', '.join(str(d) for d in shape[1:])}], "
               f"or add a leading sample axis: [N, {', '.join(str(d) for d in shape)}]")
        raise CalibrationError(msg)
    if not batch_free:
        msg = f"input '{spec.name}' fixes its batch dimension to {shape[0]}; calibration feeds one sample at a time (batch 1)"
        raise CalibrationError(msg)
    for axis, (want, got) in enumerate(zip(shape[1:], arr.shape[1:]), start=1):
        if isinstance(want, int) and want != got:
            msg = f"calibration {where} has shape {list(arr.shape)}; dim {axis} is {got} but input '{spec.name}' is {_expected(spec)}"
            raise CalibrationError(msg)
    return [arr[i:i + 1] for i in range(arr.shape[0])]


def _input_samples(spec: TensorSpec, source: Source, notes: list[str]) -> list[np.ndarray]:
    """Every sample of one input, checked (dtype, shape, finite values), in order."""
    out: list[np.ndarray] = []
    cast_notes: list[str] = []
    for arr, where in source.arrays:
        if arr.ndim > 0 and arr.shape[0] == 0 or arr.ndim == 0 and not source.one_per_file:
            msg = f"calibration {where} holds no samples (shape {list(arr.shape)})"
            raise CalibrationError(msg)
        arr = _cast(spec, arr, source.where if source.one_per_file else where, cast_notes)
        if dtype_kind(arr.dtype) == "float":
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                msg = f"calibration {where} contains {bad} NaN/Inf values"
                raise CalibrationError(msg)
        out += _samples_of(spec, arr, where, source.one_per_file)
    notes += list(dict.fromkeys(cast_notes))  # once per source, not once per file
    if source.one_per_file and len(out) != len(source.arrays):
        notes.append(f"calibration {source.where}: {len(out)} samples from {len(source.arrays)} files")
    return out


def load_calibration(folder: Path, inputs: Sequence[TensorSpec], *, notes: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Per-sample dicts (batch 1) from a calibration folder in any layout of :mod:`edgepack.data.layouts`,
    checked against the model's ``inputs``.

    Casts (float64 to float32, widening, byte order) are appended to ``notes`` when a list is given,
    and so is how images became samples.
    """
    folder = Path(folder)
    notes = notes if notes is not None else []
    if not folder.is_dir():
        msg = f"calibration folder not found: {folder}"
        raise CalibrationError(msg)
    sources = find_sources(folder, inputs, DataBudget())
    names = [s.name for s in inputs]
    if not sources:
        msg = (f"calibration folder {folder.name} has no .npy or .npz files, <input>/ folders or images for the "
               f"model's inputs ({', '.join(names)}); {layouts_hint()}")
        raise CalibrationError(msg)
    missing = [n for n in names if n not in sources]
    if missing:
        msg = (f"calibration folder {folder.name} has no data for input '{missing[0]}' (add {missing[0]}.npy, or a "
               f"{missing[0]}/ folder of one .npy per sample); {layouts_hint()}")
        raise CalibrationError(msg)
    per_input: dict[str, list[np.ndarray]] = {}
    for spec in inputs:
        source = sources[spec.name]
        if source.note:
            notes.append(source.note)
        per_input[spec.name] = _input_samples(spec, source, notes)
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"'{k}' {v}" for k, v in counts.items())
        msg = f"calibration inputs have different sample counts ({listed}); every input needs the same number"
        raise CalibrationError(msg)
    n = next(iter(counts.values()))
    return [{name: samples[i] for name, samples in per_input.items()} for i in range(n)]


def split_calibration(
    samples: list[dict[str, np.ndarray]], holdout_fraction: float = 0.25
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], str]:
    """(calibrate, hold out, note): every k-th sample, evenly spaced, is held out for verification.

    With fewer than 4 samples all of them are used for both, and the note says so.
    """
    if not 0.0 < holdout_fraction < 1.0:
        msg = f"holdout_fraction must be between 0 and 1, not {holdout_fraction}"
        raise CalibrationError(msg)
    n = len(samples)
    if n < 4:
        return list(samples), list(samples), f"only {n} calibration samples: all used both to calibrate and to verify"
    k = min(max(1, math.floor(n * holdout_fraction)), n - 1)
    held = {int(round(i)) for i in np.linspace(0, n - 1, k)}
    calib = [s for i, s in enumerate(samples) if i not in held]
    hold = [s for i, s in enumerate(samples) if i in held]
    return calib, hold, f"{len(calib)} samples calibrate, {len(hold)} evenly spaced samples held out to verify"
