"""Calibration samples (quantization data, not the device micro-benchmarks of ``edgepack calibrate``):
load a user's calibration folder and split it into calibration and held-out verification samples.

A calibration folder holds ``<input name>.npy`` files (samples stacked on axis 0) and/or
``.npz`` files keyed by input name. It may also hold image files plus a ``preprocess.toml``
that turns them into the samples of one input (see :mod:`edgepack.data.images`).
Every sample returned is a dict {input name: array} with batch dimension 1. Files are read
with ``allow_pickle=False``.
"""

from __future__ import annotations


import math
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .._toml_check import did_you_mean
from ..errors import CalibrationError, ShapeError, StageError, first_line
from ..limits import DataBudget, check_array_budget
from ..model import TensorSpec
from . import images as _images

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


def _read_arrays(folder: Path, *, allow_empty: bool = False) -> dict[str, tuple[np.ndarray, str]]:
    """{name: (array, file it came from)} for every .npy and .npz member in ``folder``."""
    if not folder.is_dir():
        msg = f"calibration folder not found: {folder}"
        raise CalibrationError(msg)
    arrays: dict[str, tuple[np.ndarray, str]] = {}

    def add(name: str, arr: np.ndarray, where: str) -> None:
        if name in arrays:
            msg = f"calibration input '{name}' is given twice ({arrays[name][1]} and {where})"
            raise CalibrationError(msg)
        arrays[name] = (arr, where)

    budget = DataBudget()  # headers checked against file sizes and a cap before numpy loads anything
    for path in sorted(folder.iterdir()):
        suffix = path.suffix.lower()
        if not path.is_file() or suffix not in (".npy", ".npz"):
            continue
        try:
            budget.check_file(path)
            if suffix == ".npy":
                add(path.stem, np.load(path, allow_pickle=False), path.name)
            else:
                with np.load(path, allow_pickle=False) as npz:
                    for key in npz.files:
                        add(key, npz[key], f"{path.name}['{key}']")
        except CalibrationError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            first = first_line(exc)
            msg = f"calibration file {path.name} cannot be read as numpy data: {first}"
            raise CalibrationError(msg) from exc
    if not arrays and not allow_empty:
        msg = (
            f"calibration folder {folder.name} has no .npy or .npz files (expected one <input name>.npy per model input, "
            f"or image files with a {_images.PREPROCESS_FILE})"
        )
        raise CalibrationError(msg)
    return arrays


def _check_dtype(spec: TensorSpec, arr: np.ndarray, where: str, notes: list[str]) -> np.ndarray:
    want = spec_dtype(spec)
    if arr.dtype == want:
        return arr
    if arr.dtype == np.float64 and want == np.float32:
        notes.append(f"calibration {where}: float64 cast to float32 for input '{spec.name}'")
        return arr.astype(np.float32)
    if dtype_kind(arr.dtype) == dtype_kind(want) == "int" and np.can_cast(arr.dtype, want, "safe"):
        notes.append(f"calibration {where}: {arr.dtype} widened to {want} for input '{spec.name}'")
        return arr.astype(want)
    msg = f"calibration {where} is {arr.dtype} but model input '{spec.name}' is {want}"
    raise CalibrationError(msg)


def _sample_axis(spec: TensorSpec, arr: np.ndarray) -> bool:
    """True when ``arr`` holds whole samples on a leading axis of its own (rank = input rank + 1);
    False when samples are stacked along the input's batch dimension (same rank)."""
    return spec.shape is not None and arr.ndim == len(spec.shape) + 1


def _check_shape(spec: TensorSpec, arr: np.ndarray, where: str) -> None:
    if spec.shape is None:
        return
    if _sample_axis(spec, arr):
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape[1:])):
            if isinstance(want, int) and want != got:
                expected = "x".join(str(d) if isinstance(d, int) else "N" for d in spec.shape)
                msg = (f"calibration {where} has shape {list(arr.shape)}: a sample's dim {axis} is {got} "
                       f"but input '{spec.name}' is {expected}")
                raise CalibrationError(msg)
        return
    if arr.ndim != len(spec.shape) or not spec.shape:
        msg = (
            f"calibration {where} has shape {list(arr.shape)} (rank {arr.ndim}) but input '{spec.name}' has rank "
            f"{len(spec.shape)}: stack samples on axis 0, e.g. [N, {', '.join(str(d) for d in spec.shape[1:])}], "
            f"or add a leading sample axis: [N, {', '.join(str(d) for d in spec.shape)}]"
        )
        raise CalibrationError(msg)
    first = spec.shape[0] if spec.shape else None
    if isinstance(first, int) and first != 1:
        msg = f"input '{spec.name}' fixes its batch dimension to {first}; calibration feeds one sample at a time (batch 1)"
        raise CalibrationError(msg)
    for axis, (want, got) in enumerate(zip(spec.shape[1:], arr.shape[1:]), start=1):
        if isinstance(want, int) and want != got:
            expected = "x".join(str(d) if isinstance(d, int) else "N" for d in spec.shape)
            msg = f"calibration {where} has shape {list(arr.shape)}; dim {axis} is {got} but input '{spec.name}' is {expected}"
            raise CalibrationError(msg)


def load_calibration(folder: Path, inputs: Sequence[TensorSpec], *, notes: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Per-sample dicts (batch 1) from a calibration folder, checked against the model's ``inputs``.

    Casts (float64 to float32, int widening) are appended to ``notes`` when a list is given.
    Image files with a ``preprocess.toml`` feed the one input it names (and a note says how).
    """
    folder = Path(folder)
    notes = notes if notes is not None else []
    if not folder.is_dir():
        msg = f"calibration folder not found: {folder}"
        raise CalibrationError(msg)
    plan = _images.plan_images(folder, inputs)  # validates preprocess.toml; decodes nothing yet
    arrays = _read_arrays(folder, allow_empty=plan is not None)
    if plan is not None:
        name = plan.spec.name
        if name in arrays:
            msg = (
                f"calibration input '{name}' is given twice ({plan.where} and {arrays[name][1]}); "
                f"keep either the images or the numpy file"
            )
            raise CalibrationError(msg)
        check_array_budget(len(plan.files), plan.sample_shape, plan.dtype, plan.where)
        arrays[name] = (_images.decode_images(plan), plan.where)
        notes.append(plan.note())
    names = [s.name for s in inputs]
    for name, (_, where) in arrays.items():
        if name not in names:
            msg = f"calibration {where} names no model input '{name}'{did_you_mean(name, names)}; inputs: {', '.join(names)}"
            raise CalibrationError(msg)
    missing = [n for n in names if n not in arrays]
    if missing:
        msg = f"calibration folder {folder.name} has no data for input '{missing[0]}' (add {missing[0]}.npy)"
        raise CalibrationError(msg)
    checked: dict[str, np.ndarray] = {}
    for spec in inputs:
        arr, where = arrays[spec.name]
        if arr.ndim == 0 or arr.shape[0] == 0:
            msg = f"calibration {where} holds no samples (shape {list(arr.shape)})"
            raise CalibrationError(msg)
        arr = _check_dtype(spec, arr, where, notes)
        _check_shape(spec, arr, where)
        if dtype_kind(arr.dtype) == "float":
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                msg = f"calibration {where} contains {bad} NaN/Inf values"
                raise CalibrationError(msg)
        checked[spec.name] = arr
    counts = {name: arr.shape[0] for name, arr in checked.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"'{k}' {v}" for k, v in counts.items())
        msg = f"calibration inputs have different sample counts ({listed}); every input needs the same number"
        raise CalibrationError(msg)
    n = next(iter(counts.values()))
    specs = {spec.name: spec for spec in inputs}
    return [{name: (np.asarray(arr[i]) if _sample_axis(specs[name], arr) else arr[i : i + 1]) for name, arr in checked.items()}
            for i in range(n)]


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
