"""Bundle layout, checksums and the atomic, reproducible write (the manifest's content is rendered
by :mod:`edgepack.render.manifest`).

A bundle is staged in a hidden folder beside its destination and renamed into place only when
complete, so a killed build leaves the previous bundle or none, never a mix. Nothing in it names
a path, a time or a machine: the same inputs give byte-identical files.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from . import cleanup, safe_io
from .errors import OutputError
from .model import sha256_file
from .pipeline import Context

MANIFEST = "manifest.json"


def check_destination(out: Path, target: str, force: bool) -> Path:
    """Refuse to clobber a non-empty bundle folder without --force, and anything but an edgepack
    bundle even with it (see safe_io.check_replaceable); called before any work."""
    dest = out / target
    safe_io.check_replaceable(dest, force)
    return dest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path, target: str) -> None:
    """Remove staging/old folders that a killed build of ``target`` left behind (their process is gone)."""
    for p in out.glob(f".{glob.escape(target)}.*-*"):  # escaped: a name is never a pattern
        parts = p.name.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isdigit() and not _alive(int(parts[1])):
            cleanup.remove(p)  # a file or symlink is unlinked, never followed


def write_bundle(ctx: Context, out: Path, readme: str, force: bool,
                 render_manifest) -> tuple[Path, dict[str, Any]]:
    """Stage every file, write the manifest last (``render_manifest(artifacts)``), then move the
    bundle into place atomically."""
    dest = check_destination(out, ctx.target.name, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"output folder {out} cannot be created: {exc.strerror or exc}"
        raise OutputError(msg) from None
    clean_leftovers(out, ctx.target.name)
    cleanup.register_out(out)
    staging = out / f".{ctx.target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        files = dict(ctx.files)
        (staging / "README.md").write_text(readme, encoding="utf-8", newline="\n")
        for rel, src in sorted(files.items()):
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            if os.access(src, os.X_OK):
                dst.chmod(0o755)
        artifacts = []
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                artifacts.append({"path": path.relative_to(staging).as_posix(), "bytes": path.stat().st_size,
                                  "sha256": sha256_file(path)})
        doc = render_manifest(artifacts)
        text = json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
        (staging / MANIFEST).write_text(text, encoding="utf-8", newline="\n")
        safe_io.swap_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest, doc
