"""Bounds on the work untrusted input can cause: a time limit per model run, a size cap on calibration data.

**Time.** Every model run edgepack makes (the fp32 reference, candidates, verification, timing,
``edgepack verify``) is watched: after ``run_seconds()`` an onnxruntime run is stopped through its
``RunOptions.terminate`` flag (onnxruntime checks it between nodes, inside ``Loop`` bodies too) and
becomes one :class:`~edgepack.errors.TimeLimitError` naming the model and the limit. The limit is per
run, not per build: a build makes a bounded number of runs (samples, timing pairs capped by the
code), and a per-run limit names the one model that misbehaves. Default 120 s: the slowest single
run of any model in the test suite takes about a second here, so a model that needs two minutes for
one inference is either hostile or not an edge model; raise it with ``--time-limit SECONDS`` or
``EDGEPACK_TIME_LIMIT``.

Some runs cannot be stopped from outside: an OpenVINO infer request (``cancel()`` does not interrupt
a running node, measured on a ``Loop``), onnxruntime's own calibration runs inside
``quantize_static``, or an onnxruntime kernel that never returns to check the flag. Under the CLI
(:func:`enable_hard_stop`) such a run that outlives its limit by GRACE_SECONDS ends the process: one
``error:`` line, this process's temporary folders removed, exit 2. Library callers get the soft stop
only.

**Size.** ``.npy``/``.npz`` headers are read with numpy's own header readers before any array is
loaded; the bytes they claim must be present in the file (or zip member) and the total of a
calibration folder must stay under ``calibration_cap()`` (2 GiB by default; more with
``EDGEPACK_MAX_CALIBRATION_MB``), so a tiny ``.npz`` that inflates to gigabytes or a header that claims
2^40 samples is one clear error, not a MemoryError.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

from .errors import CalibrationError, StageError, TimeLimitError, UsageError, first_line

DEFAULT_RUN_SECONDS = 120.0
TIME_ENV = "EDGEPACK_TIME_LIMIT"
GRACE_SECONDS = 5.0  # after the limit, how long a stopped run may take to return before a hard stop
CAP_ENV = "EDGEPACK_MAX_CALIBRATION_MB"
DEFAULT_CAP_BYTES = 2 * 2**30
MAX_NPZ_MEMBERS = 1024
MAX_CALIBRATION_FILES = 100_000  # .npy/.npz files read from one calibration folder (each header is checked)
MAX_DEFLATE_RATIO = 1100  # deflate cannot exceed ~1032:1; a member claiming more is malformed

_override: float | None = None
_hard_stop = False


# ---------------------------------------------------------------------------------------- the limit


def parse_seconds(text: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        msg = f"{where} = {text!r} must be a number of seconds above 0"
        raise UsageError(msg)
    return value


def set_run_seconds(seconds: float | None) -> None:
    """The per-run time limit for this process (None: ``EDGEPACK_TIME_LIMIT`` or the default)."""
    global _override
    _override = None if seconds is None else parse_seconds(str(seconds), "--time-limit")


_env_cache: tuple[str | None, float] = (None, DEFAULT_RUN_SECONDS)


def run_seconds() -> float:
    global _env_cache
    if _override is not None:
        return _override
    env = os.environ.get(TIME_ENV)
    if env != _env_cache[0]:  # parsed once per value: this is on the path of every timed run
        _env_cache = (env, parse_seconds(env, TIME_ENV) if env else DEFAULT_RUN_SECONDS)
    return _env_cache[1]


def enable_hard_stop(on: bool = True) -> None:
    """Let a run that cannot be stopped end the process (the CLI turns this on; libraries do not)."""
    global _hard_stop
    _hard_stop = on


def _limit_text(seconds: float) -> str:
    return f"{seconds:g} s"


def over_limit_message(name: str, seconds: float) -> str:
    return (f"{name}: one run took longer than the time limit of {_limit_text(seconds)} and was stopped; if the "
            f"model really needs that long, raise it with --time-limit SECONDS (or {TIME_ENV})")


# ---------------------------------------------------------------------------------------- the watchdog


class _Guard:
    __slots__ = ("name", "deadline", "cancel", "grace", "expired", "done", "seconds", "interrupted", "thread")
    # interrupted: 0, or the exit code of the signal that stopped the run (130 Ctrl-C, 143 SIGTERM)

    def __init__(self, name: str | Callable[[], str], seconds: float, cancel: Callable[[], None] | None):
        self.name, self.seconds, self.cancel = name, seconds, cancel
        self.grace = GRACE_SECONDS if cancel is not None else 0.0  # nothing to wait for without a cancel
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self.done = False
        self.interrupted = 0
        self.thread = threading.get_ident()


class _Watchdog:
    """One daemon thread for every guarded run: it sleeps until the earliest deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._guards: set[_Guard] = set()
        self._wake = math.inf
        self._thread: threading.Thread | None = None

    def add(self, g: _Guard) -> None:
        with self._cond:
            self._guards.add(g)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="edgepack-watchdog", daemon=True)
                self._thread.start()
            if g.deadline < self._wake:
                self._cond.notify()

    def remove(self, g: _Guard) -> None:
        with self._cond:
            g.done = True
            self._guards.discard(g)

    def cancel_all(self, code: int) -> None:
        """Stop every run in flight (Ctrl-C, SIGTERM): their guards expire now."""
        with self._cond:
            now = time.monotonic()  # the grace to return after the stop counts from now (not from 0)
            for g in self._guards:
                g.deadline = min(g.deadline, now)
                g.interrupted = code
            self._cond.notify()

    def stop_thread(self, ident: int | None) -> None:
        """Stop the runs in flight in thread ``ident`` (their guards expire now)."""
        with self._cond:
            now = time.monotonic()
            for g in self._guards:
                if g.thread == ident:
                    g.deadline = min(g.deadline, now)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            fire: list[_Guard] = []
            hard: list[_Guard] = []
            with self._cond:
                now = time.monotonic()
                nxt = math.inf
                for g in self._guards:
                    if not g.expired:
                        if g.deadline <= now:
                            g.expired = True
                            fire.append(g)
                        else:
                            nxt = min(nxt, g.deadline)
                    if g.expired:
                        if g.deadline + g.grace <= now:
                            hard.append(g)
                        else:
                            nxt = min(nxt, g.deadline + g.grace)
                g = None  # noqa: F841 - the loop variable must not keep the last guard (and its run) alive while waiting
                if not fire and not hard:
                    self._wake = nxt
                    self._cond.wait(None if nxt == math.inf else max(nxt - now, 0.001))
                    self._wake = math.inf
                    continue
            for g in fire:
                if g.cancel is not None:
                    try:
                        g.cancel()
                    except Exception:  # noqa: BLE001 - a cancel that fails leaves the hard stop
                        pass
            for g in hard:
                if not g.done and _hard_stop:
                    if g.interrupted:
                        _hard_exit("terminated" if g.interrupted == 143 else "interrupted", g.interrupted)
                    _hard_exit(over_limit_message(g.name() if callable(g.name) else g.name, g.seconds), 2)
                with self._cond:
                    self._guards.discard(g)


_WATCHDOG = _Watchdog()


def stop_runs_of(ident: int | None) -> None:
    """Stop the guarded runs in flight in the thread ``ident`` (a background thread at exit)."""
    _WATCHDOG.stop_thread(ident)


def cancel_all(code: int = 130) -> None:
    """Stop every guarded run in flight (a signal arrived; ``code`` is the exit code it means)."""
    _WATCHDOG.cancel_all(code)


def _hard_exit(message: str, code: int) -> None:
    from .cleanup import remove_own_leftovers

    try:
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
        remove_own_leftovers()
    finally:
        os._exit(code)


class guard:
    """``with guard(name, cancel=fn):`` watch one run; ``.expired`` tells whether the limit stopped it.

    At the limit ``cancel`` is called; a run still going GRACE_SECONDS later (at once without a
    ``cancel``) ends the process when the hard stop is on (see the module docstring)."""

    def __init__(self, name: str | Callable[[], str], cancel: Callable[[], None] | None = None):
        self._g = _Guard(name, run_seconds(), cancel)

    @property
    def expired(self) -> bool:
        return self._g.expired

    @property
    def seconds(self) -> float:
        return self._g.seconds

    def __enter__(self) -> "guard":
        _WATCHDOG.add(self._g)
        return self

    def __exit__(self, *exc: Any) -> None:
        _WATCHDOG.remove(self._g)


def _session_name(sess) -> str:
    path = getattr(sess, "_model_path", None)
    return Path(path).name if isinstance(path, (str, os.PathLike)) else "the model"


def run_ort(sess, feed: dict, name: str | None = None) -> list:
    """``sess.run(None, feed)`` under the time limit; onnxruntime failures become one StageError.

    About 2 us per run (a fresh RunOptions and a watch entry; measured on a 12 us model), so timing
    loops use it too."""
    import onnxruntime as ort

    from .quiet import ort_severity

    options = ort.RunOptions()  # fresh per run: a terminate flag set late never stops the next run
    options.log_severity_level = ort_severity()  # a terminated run's ERROR line repeats what edgepack reports
    # the name is taken now: a closure over ``sess`` would keep the session (and a large model's mapped
    # weights) alive for as long as the watchdog thread holds the guard
    with guard(name or _session_name(sess), lambda: setattr(options, "terminate", True)) as g:
        try:
            return sess.run(None, feed, options)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises Fail/InvalidArgument/RuntimeException...
            if g.expired:
                raise TimeLimitError(over_limit_message(name or _session_name(sess), g.seconds)) from None
            msg = f"onnxruntime failed running the model: {first_line(exc)}"
            raise StageError(msg) from exc


def run_openvino(request, feed: dict, name: str):
    """``request.infer(feed)`` under the time limit (OpenVINO cannot stop a running node: hard stop)."""
    with guard(name, getattr(request, "cancel", None)) as g:
        try:
            return request.infer(feed)
        except Exception:
            if g.expired:
                raise TimeLimitError(over_limit_message(name, g.seconds)) from None
            raise


_steps = threading.local()


def bounded_steps(what: str):
    """Decorator: inside the call, each :func:`step` (one third-party model run each) gets the time
    limit; the last step's watch ends with the call."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            outer = getattr(_steps, "current", None)
            _steps.current = [what, None]
            try:
                return fn(*args, **kwargs)
            finally:
                _end_step()
                _steps.current = outer

        return wrapper

    return deco


def end_step() -> None:
    """The third-party loop has made its last run (see :func:`bounded_steps`)."""
    _end_step()


def _end_step() -> None:
    cur = getattr(_steps, "current", None)
    if cur and cur[1] is not None:
        cur[1].__exit__(None, None, None)
        cur[1] = None


def step() -> None:
    """A third-party loop is about to make one more model run (see :func:`bounded_steps`)."""
    cur = getattr(_steps, "current", None)
    if not cur:
        return
    _end_step()
    cur[1] = guard(cur[0]).__enter__()


# ---------------------------------------------------------------------------------------- data size


def calibration_cap() -> int:
    env = os.environ.get(CAP_ENV)
    if not env:
        return DEFAULT_CAP_BYTES
    try:
        mb = float(env)
    except ValueError:
        mb = float("nan")
    if not (math.isfinite(mb) and mb > 0):
        msg = f"{CAP_ENV} = {env!r} must be a number of megabytes above 0"
        raise UsageError(msg)
    return int(mb * 2**20)


def _header(f, where: str):
    """(shape, dtype, header end offset) from an open .npy stream, with numpy's own readers."""
    import numpy as np

    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            msg = f"{where}: .npy format version {version[0]}.{version[1]} is not supported (numpy writes 1.0 and 2.0)"
            raise CalibrationError(msg)
    except CalibrationError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        msg = f"{where}: not a valid .npy header: {first_line(exc)}"
        raise CalibrationError(msg) from exc
    if dtype.hasobject:
        msg = f"{where}: holds Python objects (dtype {dtype}); only numeric arrays are read (no pickles)"
        raise CalibrationError(msg)
    return tuple(int(d) for d in shape), dtype, f.tell()


def _claimed(shape: tuple[int, ...], dtype) -> int:
    n = 1
    for d in shape:
        n *= d
    return n * dtype.itemsize


def _too_big(where: str, claimed: int, total: int, cap: int) -> CalibrationError:
    return CalibrationError(
        f"{where}: {claimed / 1e6:,.1f} MB of array data would bring the calibration data to {total / 1e6:,.1f} MB, "
        f"over the {cap / 2**20:,.0f} MB cap; use fewer samples or raise it with {CAP_ENV}")


def _check_npy_stream(f, available: int, where: str) -> int:
    shape, dtype, offset = _header(f, where)
    claimed = _claimed(shape, dtype)
    if claimed > available - offset:
        msg = (f"{where}: the header claims shape {list(shape)} of {dtype} ({claimed:,} bytes) but only "
               f"{max(available - offset, 0):,} bytes follow it")
        raise CalibrationError(msg)
    return claimed


class DataBudget:
    """Running total of the array bytes a calibration folder's files claim, against the cap."""

    def __init__(self) -> None:
        self.cap = calibration_cap()
        self.total = 0

    def _add(self, claimed: int, where: str) -> None:
        self.total += claimed
        if self.total > self.cap:
            raise _too_big(where, claimed, self.total, self.cap)

    def check_file(self, path: Path) -> None:
        """Check one .npy or .npz file's headers before numpy loads it."""
        if path.suffix.lower() == ".npy":
            with path.open("rb") as f:
                self._add(_check_npy_stream(f, path.stat().st_size, path.name), path.name)
            return
        try:
            with zipfile.ZipFile(path) as z:
                members = z.infolist()
                if len(members) > MAX_NPZ_MEMBERS:
                    msg = f"{path.name}: {len(members)} members; a calibration .npz holds at most {MAX_NPZ_MEMBERS}"
                    raise CalibrationError(msg)
                for info in members:
                    self._check_member(z, info, path.name)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
            msg = f"calibration file {path.name} cannot be read as numpy data: {first_line(exc)}"
            raise CalibrationError(msg) from exc

    def _check_member(self, z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> None:
        where = f"{name}['{info.filename}']"
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            msg = f"{where}: compression method {info.compress_type} (numpy writes stored or deflated members)"
            raise CalibrationError(msg)
        if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > MAX_DEFLATE_RATIO * max(info.compress_size, 1):
            msg = (f"{where}: claims {info.file_size:,} bytes from {info.compress_size:,} compressed, more than "
                   f"deflate can produce; the file is malformed")
            raise CalibrationError(msg)
        # the member's declared size bounds what zipfile will inflate; the cap bounds the declared size
        if self.total + info.file_size > self.cap:
            raise _too_big(where, info.file_size, self.total + info.file_size, self.cap)
        with z.open(info) as f:
            claimed = _check_npy_stream(f, info.file_size, where)
        self._add(claimed, where)


def check_array_budget(count: int, shape: tuple[int, ...], dtype, what: str) -> None:
    """Before allocating ``count`` samples of ``shape`` (decoded images): under the calibration cap."""
    import numpy as np

    claimed = _claimed((count, *shape), np.dtype(dtype))
    cap = calibration_cap()
    if claimed > cap:
        raise _too_big(what, claimed, claimed, cap)
