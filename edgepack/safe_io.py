"""Writes in OUT that never follow what someone planted there, and replacing only edgepack's own bundles.

* :func:`write_file`: the file is written to a new temporary file beside the destination (opened
  with ``O_CREAT | O_EXCL | O_NOFOLLOW``) and renamed over it with ``os.replace``. A symlink at the
  destination is replaced, never written through; a folder there is refused before any work
  (:func:`check_file_slot`).
* :func:`check_replaceable`: a destination folder is replaced (``--force``) only when it is an
  edgepack bundle (a real folder holding an edgepack ``manifest.json`` and nothing its manifest does
  not list) or empty; a symlink or a file there is refused, with or without ``--force``.
* :func:`refuse_inputs_under`: no input (model, its external data, calibration folder, profile
  file) may lie inside a folder the build replaces.
* :func:`swap_into_place`: the staged bundle is renamed onto its destination; the previous bundle
  is checked again after it was moved aside, and the moved-aside entry is removed whatever it is.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path
from typing import Iterable

from .cleanup import remove
from .errors import OutputError

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 * 2**20
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "a symlink"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if stat.S_ISREG(st.st_mode):
        return "a file"
    return "a special file"


def temp_name(path: Path, kind: str = "tmp") -> Path:
    """``.<name>.<kind>-<pid>-<random>`` beside ``path`` (swept by the next build if this one dies)."""
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def check_file_slot(path: Path) -> None:
    """Refuse, before any work, a destination file edgepack could not replace (a folder is there)."""
    st = _lstat(path)
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        msg = f"{path} is {_kind(st)}; edgepack writes a file there: move it away or choose another -o"
        raise OutputError(msg)


def write_file(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` via a fresh file beside it and ``os.replace``."""
    path = Path(path)
    check_file_slot(path)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, _FLAGS, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except OSError as exc:
        remove(tmp)
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise OutputError(msg) from None
    except BaseException:
        remove(tmp)
        raise


def _bundle_manifest(folder: Path) -> dict | None:
    """The manifest of a real folder (not a symlink) whose ``manifest.json`` is a regular file edgepack wrote."""
    from .render.manifest import SCHEMA_VERSION

    st = _lstat(folder)
    if st is None or not stat.S_ISDIR(st.st_mode):
        return None
    mst = _lstat(folder / MANIFEST)
    if mst is None or not stat.S_ISREG(mst.st_mode) or mst.st_size > MAX_MANIFEST_BYTES:
        return None
    try:
        fd = os.open(folder / MANIFEST, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            doc = json.loads(f.read(MAX_MANIFEST_BYTES + 1).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    ok = (isinstance(doc, dict) and doc.get("schema_version") == SCHEMA_VERSION
          and isinstance(doc.get("artifacts"), list) and isinstance(doc.get("toolchain"), dict)
          and isinstance(doc["toolchain"].get("edgepack"), str) and isinstance(doc.get("target"), dict))
    return doc if ok else None


def is_bundle(folder: Path) -> bool:
    return _bundle_manifest(folder) is not None


def _not_ours(folder: Path, doc: dict) -> list[str]:
    """What a bundle folder holds besides what its manifest lists (the user's notes, links, FIFOs...)."""
    from .manifest_checks import odd_entries

    listed = {a["path"] for a in doc["artifacts"] if isinstance(a, dict) and isinstance(a.get("path"), str)}
    return odd_entries(folder, listed)


def _empty_folder(st: os.stat_result, folder: Path) -> bool:
    if not stat.S_ISDIR(st.st_mode):
        return False
    try:
        with os.scandir(folder) as it:
            return next(it, None) is None
    except OSError:
        return False


def check_replaceable(dest: Path, force: bool) -> None:
    """Refuse to clobber ``dest`` unless it is missing, empty, or (with ``force``) an edgepack bundle."""
    st = _lstat(dest)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        msg = (f"output {dest} exists and is {_kind(st)}, not a bundle folder; edgepack replaces only bundles it "
               "wrote: move it away or choose another -o")
        raise OutputError(msg)
    if _empty_folder(st, dest):
        return
    if not force:
        msg = f"output {dest} already exists and is not empty; pass --force to replace it"
        raise OutputError(msg)
    doc = _bundle_manifest(dest)
    if doc is None:
        msg = (f"output {dest} is not an edgepack bundle (no edgepack {MANIFEST} in it); --force replaces only "
               "bundles edgepack wrote: move it away or choose another -o")
        raise OutputError(msg)
    extra = _not_ours(dest, doc)
    if extra:
        msg = (f"output {dest} is an edgepack bundle but holds more than it lists ({extra[0]}"
               f"{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}); --force replaces only what edgepack "
               "wrote: move those out first")
        raise OutputError(msg)


def _within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def refuse_inputs_under(replaced: Iterable[Path], inputs: Iterable[tuple[str, Path]]) -> None:
    """No input may lie inside (or be) a path the build replaces."""
    targets = [(p, p.resolve()) for p in replaced]
    for label, path in inputs:
        real = Path(path).resolve()
        for given, dest in targets:
            if real == dest or _within(real, dest):
                msg = (f"{label} {path} lies inside the output {given}, which this build replaces; "
                       "move it or choose another -o")
                raise OutputError(msg)


def input_paths(loaded, calibration: Path | None, targets) -> list[tuple[str, Path]]:
    """Every file or folder a build reads: models, their external data, calibration, profile files."""
    from .model import iter_tensors

    found = [("model", lm.path) for lm in loaded]
    for lm in loaded:
        for _, t in iter_tensors(lm.proto.graph):
            found += [(f"external data of {lm.path.name}", lm.path.parent / e.value)
                      for e in t.external_data if e.key == "location"]
    found += [("calibration folder", calibration)] if calibration is not None else []
    return found + [(f"profile of target {t.name}", Path(f)) for t in targets for f in getattr(t, "files", ())]


def swap_into_place(staging: Path, dest: Path) -> None:
    """Rename the complete ``staging`` folder onto ``dest``; another build that got there first wins.

    What stood at ``dest`` is moved aside first and checked again (a bundle or an empty folder
    only, never followed if it is a symlink); it is removed once the new bundle is in place."""
    try:
        if _lstat(dest) is None:
            os.replace(staging, dest)
            return
        check_replaceable(dest, force=True)
        old = temp_name(dest, "old")
        os.replace(dest, old)
        st = _lstat(old)
        if st is None or not (is_bundle(old) or _empty_folder(st, old)):  # changed since the check: put it back
            os.replace(old, dest)
            msg = f"output {dest} changed while this build ran and is no longer a bundle; this build left it alone"
            raise OutputError(msg)
        try:
            os.replace(staging, dest)
        except BaseException:
            os.replace(old, dest)
            raise
        remove(old)
    except OSError as exc:
        msg = f"{dest} was written by another build at the same time; this build left it alone ({exc.strerror})"
        raise OutputError(msg) from exc
