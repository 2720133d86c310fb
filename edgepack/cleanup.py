"""Leftovers: SIGTERM handled like Ctrl-C, folders of processes that died swept away, and a failed
multi-target build saying which bundles it already wrote.

Every temporary folder edgepack makes is named ``edgepack-<pid>-<kind>-...`` (:func:`tmp_prefix`), and
every staging/old folder in OUT ``.<target>.<kind>-<pid>-<random>`` (see :mod:`edgepack.bundle`). A
build that is killed (SIGKILL, power loss) cannot clean up after itself; the next build removes
what dead processes of the same user left (:func:`sweep_temp`). SIGTERM (``kill``, CI timeouts,
``docker stop``) is turned into the same exception as Ctrl-C, so ``finally`` blocks and temporary
folders are cleaned up and the CLI exits with one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator

_TMP = re.compile(r"^edgepack-(\d+)-")


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C (cleanup runs), exit 143."""


def tmp_prefix(kind: str) -> str:
    """Prefix for a temporary folder of this process: ``edgepack-<pid>-<kind>-``."""
    return f"edgepack-{os.getpid()}-{kind}-"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can ask about: leave its folders
    return True


def remove(path: Path) -> None:
    """Remove a file, a symlink (never what it points to) or a folder tree; missing is fine."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, ValueError):
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _mine(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def sweep_temp(folder: Path | None = None) -> list[str]:
    """Remove ``edgepack-<pid>-*`` folders in the temporary folder whose process is gone (same user only)."""
    folder = Path(folder or tempfile.gettempdir())
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP.match(p.name)
        if m and int(m.group(1)) != os.getpid() and _mine(p) and not alive(int(m.group(1))):
            remove(p)
            removed.append(p.name)
    return removed


_outs: set[Path] = set()


def register_out(out: Path) -> None:
    """An output folder this process stages bundles in (for :func:`remove_own_leftovers`)."""
    _outs.add(Path(out))


def remove_own_leftovers() -> None:
    """This process's temporary and staging folders (before a hard exit, which skips ``finally``)."""
    pid = str(os.getpid())
    with contextlib.suppress(OSError):
        for p in Path(tempfile.gettempdir()).glob(f"edgepack-{pid}-*"):
            remove(p)
    ours = re.compile(rf"^\..+\.(staging|old|tmp)-{pid}-[0-9a-f]{{12}}$")
    for out in list(_outs):
        with contextlib.suppress(OSError):
            for p in out.iterdir():
                if ours.match(p.name):
                    remove(p)


def with_written(exc, done: list):
    """The error of a multi-target build, saying which earlier targets' bundles it already wrote
    (they are complete and verified, so they stay)."""
    if not done:
        return exc
    written = ", ".join(f"{r.bundle} ({r.target})" for r in done)
    return type(exc)(f"{exc} [bundles already written by this build and kept: {written}]")


_OWNER = os.getpid()


def _on_signal(signum, frame):  # noqa: ARG001
    if os.getpid() != _OWNER:  # a child forked by a library inherited the handler: end it the default way
        os._exit(128 + signum)
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def _stop_runs_on_signal(read_fd: int) -> None:
    """Python runs a signal handler only between bytecodes, so a model run blocked in C would delay
    it until its time limit. This thread sees the signal at once (set_wakeup_fd) and stops the runs
    in flight; the handler then raises in the main thread."""
    from .limits import cancel_all

    try:
        while True:
            data = os.read(read_fd, 64)
            if not data:  # the command ended and closed the write end
                return
            cancel_all(143 if signal.SIGTERM in data else 130)
    except OSError:
        return
    finally:
        os.close(read_fd)


@contextlib.contextmanager
def signals() -> Iterator[None]:
    """For one CLI command: SIGTERM and SIGINT unwind like Ctrl-C (and stop model runs in flight);
    the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _OWNER
    _OWNER = os.getpid()
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_stop_runs_on_signal, args=(read_fd,), name="edgepack-signals", daemon=True).start()
    for s in before:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)  # the thread's read returns b"" and it ends
