"""One line on stderr: silence onnxruntime's log and Python warnings in the CLI, unless EDGEPACK_DEBUG=1.

The CLI's contract is that bad input gives ONE ``error:`` line. onnxruntime logs its own failures in
colour before raising them (``[E:onnxruntime:, sequential_executor.cc ...]``, which edgepack then
reports in its own words), and numpy warns on stderr (``RuntimeWarning: invalid value encountered``)
when hostile outputs hold inf/NaN. Severity 3 (ERROR) still prints those failure lines (measured
with onnxruntime 1.32), so the CLI uses 4 (FATAL). ``EDGEPACK_DEBUG=1`` (what ``--debug`` sets)
keeps all of them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from typing import Iterator

DEBUG_ENV = "EDGEPACK_DEBUG"
ORT_QUIET = 4  # FATAL: onnxruntime's ERROR lines repeat what edgepack reports itself
ORT_DEBUG = 2  # WARNING: onnxruntime's own default
_COMMANDS_WITH_MODELS = ("build", "compare", "verify", "inspect", "calibrate")


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def ort_severity() -> int:
    """The onnxruntime log severity for sessions and runs edgepack makes."""
    return ORT_DEBUG if debug() else ORT_QUIET


def _set_ort_default(severity: int) -> None:
    ort = sys.modules.get("onnxruntime")
    if ort is not None and hasattr(ort, "set_default_logger_severity"):
        ort.set_default_logger_severity(severity)


@contextlib.contextmanager
def cli_scope(command: str | None) -> Iterator[None]:
    """For one CLI command: onnxruntime's default logger at FATAL, Python warnings and library
    logging off; everything restored afterwards (tests call ``main`` many times in one process)."""
    if debug():
        yield
        return
    if command in _COMMANDS_WITH_MODELS:
        import onnxruntime  # noqa: F401 - imported here so its default logger can be set before any session

        _set_ort_default(ORT_QUIET)
    previous_disable = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(previous_disable)
            if command in _COMMANDS_WITH_MODELS:
                _set_ort_default(ORT_DEBUG)


def numeric(fn):
    """Decorator for metric code on untrusted outputs: numpy's floating-point warnings are off
    (inf and NaN are handled as values there), unless EDGEPACK_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if debug():
            return fn(*args, **kwargs)
        import numpy as np

        with np.errstate(all="ignore"):  # thread-local in numpy: safe in compare's worker threads
            return fn(*args, **kwargs)

    return wrapper
