"""Quieting noisy foreign tools (progress bars, optimizer chatter) safely when targets build in threads.

``contextlib.redirect_stdout``/``redirect_stderr`` swap the process-wide ``sys.stdout``/``sys.stderr``;
entered from two worker threads at once they restore each other's replacements, and ``sys.stderr``
can stay pointed at a discarded buffer - the CLI's ``error:`` line is then lost. Here every capture
holds one process-wide lock (the noisy tools run one at a time), redirects the Python streams and
the file descriptors 1 and 2 (where C and C++ libraries write), and restores all of it in reverse
order before the lock is released.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from typing import Iterator

_LOCK = threading.RLock()


def one_at_a_time():
    """The process-wide lock of the noisy tools: hold it around other process-wide settings a tool's
    run changes (its logger's level and handlers) so threads restore them in order. Re-entrant."""
    return _LOCK


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed or replaced by something without flush
            pass


@contextlib.contextmanager
def captured_output() -> Iterator[list[str]]:
    """Run the block with everything it prints collected; the yielded list gets the non-empty lines
    (Python's first, then the file descriptors') when the block ends."""
    lines: list[str] = []
    with _LOCK, tempfile.TemporaryFile() as raw:
        _flush()
        saved: list[tuple[int, int]] = []
        for fd in (1, 2):
            try:
                copy = os.dup(fd)
            except OSError:  # no such descriptor (a daemon without stdio): nothing to redirect
                continue
            saved.append((fd, copy))
            os.dup2(raw.fileno(), fd)
        text = io.StringIO()
        streams = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = text
        try:
            yield lines
        finally:
            sys.stdout, sys.stderr = streams
            for fd, copy in reversed(saved):
                os.dup2(copy, fd)
                os.close(copy)
            raw.seek(0)
            written = raw.read().decode("utf-8", errors="replace")
            lines.extend(line for line in (*text.getvalue().splitlines(), *written.splitlines()) if line.strip())
