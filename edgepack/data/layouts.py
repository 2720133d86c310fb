"""Where a calibration folder keeps its samples: the layouts edgepack reads, found per model input.

* ``<input>.npy``: the input's samples stacked on axis 0 (or on an extra leading axis);
* ``.npz`` files keyed by input name: one file holding every sample, or one file per sample (every
  file then holds every input; samples are taken in file name order);
* ``<input>/`` folders of ``.npy`` files, one sample each (file name order);
* image files with a ``preprocess.toml`` (:mod:`edgepack.data.images`), in the folder or in an
  ``<input>/`` folder.

Each input comes from exactly one of them. Every ``.npy``/``.npz`` header is checked against its
file's size and the data cap before numpy reads it (:class:`edgepack.limits.DataBudget`); files are
read with ``allow_pickle=False``; hidden files (``.x.npy``, macOS ``._x.npy``) are skipped.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .._toml_check import did_you_mean
from ..errors import CalibrationError, first_line
from ..limits import MAX_CALIBRATION_FILES, DataBudget, check_array_budget
from ..model import TensorSpec
from . import images as _images

LAYOUTS = ("<input>.npy with the samples stacked on axis 0; .npz files keyed by input name (one holding every "
           "sample, or one per sample); <input>/ folders of .npy files, one sample each; image files with a "
           f"{_images.PREPROCESS_FILE}; with several models, one such folder per model: DIR/<model file stem>/")


def layouts_hint() -> str:
    return f"calibration layouts edgepack reads: {LAYOUTS}"


@dataclass
class Source:
    """One input's data: arrays in sample order (each holds one or more samples), where they came from."""

    name: str
    where: str  # for messages and notes: "x.npy", "8 .npz files ['x']", "x/ (8 .npy files)"
    arrays: list[tuple[np.ndarray, str]] = field(default_factory=list)  # (array, file it came from)
    one_per_file: bool = False  # each file is meant to hold one sample
    note: str | None = None  # how images became samples


def _visible(paths) -> list[Path]:
    return sorted((p for p in paths if not p.name.startswith(".")), key=lambda p: p.name)


def _check_headers(files: list[Path], budget: DataBudget, prefix: str = "") -> None:
    """Every file's headers against its size and the data cap, before numpy reads any of them."""
    for path in files:
        try:
            budget.check_file(path)
        except CalibrationError as exc:
            if prefix and str(exc).startswith(path.name):
                raise CalibrationError(prefix + str(exc)) from exc
            raise
        except OSError as exc:
            msg = f"calibration file {prefix}{path.name} cannot be read: {exc.strerror or exc}"
            raise CalibrationError(msg) from exc


def _load(path: Path, where: str | None = None):
    """The array of a .npy file or the {key: array} of a .npz file (headers checked already)."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except CalibrationError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        msg = f"calibration file {where or path.name} cannot be read as numpy data: {first_line(exc)}"
        raise CalibrationError(msg) from exc


def _count(files: list[Path], folder: Path) -> None:
    if len(files) > MAX_CALIBRATION_FILES:
        msg = f"calibration folder {folder.name} holds {len(files):,} data files; at most {MAX_CALIBRATION_FILES:,} are read"
        raise CalibrationError(msg)


class _Found:
    def __init__(self) -> None:
        self.sources: dict[str, Source] = {}

    def add(self, source: Source) -> None:
        old = self.sources.get(source.name)
        if old is not None:
            msg = f"calibration input '{source.name}' is given twice ({old.where} and {source.where})"
            raise CalibrationError(msg)
        self.sources[source.name] = source


def _npz_sources(files: list[Path], found: _Found) -> None:
    """.npz files: each key once (stacked samples), or every file with the same keys (one file per sample)."""
    contents = [(f, _load(f)) for f in files]
    seen: dict[str, int] = {}
    for _, arrays in contents:
        for key in arrays:
            seen[key] = seen.get(key, 0) + 1
    if all(n == 1 for n in seen.values()):
        for f, arrays in contents:
            for key, arr in arrays.items():
                found.add(Source(key, f"{f.name}['{key}']", [(arr, f"{f.name}['{key}']")]))
        return
    keys = sorted(seen)
    for f, arrays in contents:
        if sorted(arrays) != keys:
            missing = [k for k in keys if k not in arrays]
            msg = (f"calibration .npz files hold different inputs: {f.name} has "
                   f"{', '.join(sorted(arrays)) or 'nothing'}{' but not ' + ', '.join(missing) if missing else ''}; "
                   f"with one .npz per sample every file holds every input ({', '.join(keys)})")
            raise CalibrationError(msg)
    names = f"{contents[0][0].name} .. {contents[-1][0].name}"
    for key in keys:
        found.add(Source(key, f"{len(contents)} .npz files ({names})['{key}']",
                         [(arrays[key], f"{f.name}['{key}']") for f, arrays in contents], one_per_file=True))


def _input_folder(sub: Path, spec: TensorSpec, budget: DataBudget) -> Source:
    """``<input>/``: images with a preprocess.toml, or one .npy file per sample."""
    plan = _images.plan_images(sub, [spec])
    if plan is not None:
        check_array_budget(len(plan.files), plan.sample_shape, plan.dtype, plan.where)
        return Source(spec.name, plan.where, [(_images.decode_images(plan), plan.where)], note=plan.note())
    entries = list(sub.iterdir())
    files = _visible(p for p in entries if p.is_file() and p.suffix.lower() == ".npy")
    _count(files, sub)
    if not files:
        others = sorted({p.suffix.lower() or p.name for p in entries if p.is_file() and not p.name.startswith(".")})
        msg = (f"calibration folder {sub.parent.name}/{sub.name}/ for input '{spec.name}' has no .npy files "
               f"{'(it holds ' + ', '.join(others) + ')' if others else '(it is empty)'}; {layouts_hint()}")
        raise CalibrationError(msg)
    _check_headers(files, budget, f"{sub.name}/")
    where = f"{sub.name}/ ({len(files)} .npy files)"
    return Source(spec.name, where, [(_load(f, f"{sub.name}/{f.name}"), f"{sub.name}/{f.name}") for f in files],
                  one_per_file=True)


def find_sources(folder: Path, inputs: Sequence[TensorSpec], budget: DataBudget) -> dict[str, Source]:
    """Every input's Source in ``folder`` (inputs without data are simply absent; the caller says so).
    A file or folder that names no model input is an error that lists the inputs and the layouts."""
    found = _Found()
    names = [s.name for s in inputs]
    plan = _images.plan_images(folder, inputs)  # validates preprocess.toml; decodes nothing yet
    entries = list(folder.iterdir())
    npy = _visible(p for p in entries if p.is_file() and p.suffix.lower() == ".npy")
    npz = _visible(p for p in entries if p.is_file() and p.suffix.lower() == ".npz")
    _count(npy + npz, folder)
    _check_headers(npy + npz, budget)
    for f in npy:
        _check_name(f.stem, f.name, names)
        found.add(Source(f.stem, f.name, [(_load(f), f.name)]))
    _npz_sources(npz, found)
    for name, source in found.sources.items():
        _check_name(name, source.where, names)
    specs = {s.name: s for s in inputs}
    for sub in _visible(p for p in entries if p.is_dir()):
        if sub.name in specs:
            found.add(_input_folder(sub, specs[sub.name], budget))
    if plan is not None:
        if plan.spec.name in found.sources:
            msg = (f"calibration input '{plan.spec.name}' is given twice ({plan.where} and "
                   f"{found.sources[plan.spec.name].where}); keep either the images or the numpy data")
            raise CalibrationError(msg)
        check_array_budget(len(plan.files), plan.sample_shape, plan.dtype, plan.where)
        found.add(Source(plan.spec.name, plan.where, [(_images.decode_images(plan), plan.where)], note=plan.note()))
    return found.sources


def _check_name(name: str, where: str, names: list[str]) -> None:
    if name not in names:
        msg = (f"calibration {where} names no model input '{name}'{did_you_mean(name, names)}; inputs: "
               f"{', '.join(names)}; {layouts_hint()}")
        raise CalibrationError(msg)
