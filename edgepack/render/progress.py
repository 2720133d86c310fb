"""Progress of a build or compare on stderr: each target and its stage."""

from __future__ import annotations

import sys


class Progress:
    """Each target and its stage. On a terminal: one line per target, redrawn in place (targets build
    in parallel, so every one stays visible); otherwise (CI logs) one plain line per step.

    It writes to its own copy of the stderr descriptor, so lines from one target still appear while
    another target's noisy tool has the process's output captured (edgepack.runtime.capture)."""

    def __init__(self, tty: bool, stream=None):
        self.tty = tty
        self.started = 0.0
        self.lines: dict[str, str] = {}  # target (or "" for a general step) -> what it is doing
        self.drawn = 0
        self.stream = stream or sys.stderr
        if stream is None:
            try:
                import os

                self.stream = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8",
                                        errors="replace")
            except (AttributeError, OSError, ValueError):  # no real descriptor (tests capture sys.stderr)
                pass

    def __call__(self, msg: str) -> None:
        import time

        if not self.started:
            self.started = time.perf_counter()
        elapsed = time.perf_counter() - self.started
        if not self.tty:
            self.stream.write(f"... [{elapsed:6.1f}s] {msg}\n")
            self.stream.flush()
            return
        target, sep, stage = msg.partition(": ")
        key, text = (target, stage) if sep and " " not in target else ("", msg)
        self.lines[key] = f"[{elapsed:6.1f}s] {text}"
        up = f"\033[{self.drawn}A" if self.drawn else ""
        body = "".join(f"\r\033[K{name + ': ' if name else ''}{line}\n" for name, line in self.lines.items())
        self.stream.write(up + body)
        self.drawn = len(self.lines)
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\033[{self.drawn}A" + "\r\033[K\n" * self.drawn + f"\033[{self.drawn}A")
            self.stream.flush()
