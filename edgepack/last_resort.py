"""The CLI's last line of defence: failures that untrusted input causes deep inside a library.

Input is checked where it is read (profiles, manifests, calibration headers, reports), but a parser
or a library can still give up on hostile input in ways no check foresaw: Python's recursion limit
(JSON/TOML nested thousands deep), memory (a declared size that does fit the checks but not this
machine), text that is not valid UTF-8, a NUL character in a path. :func:`user_failure` turns those
into one ``error:`` line (exit 2). Anything else, a ``ValueError`` that is not about a NUL included,
is re-raised: it is a bug and must stay visible as one.
"""

from __future__ import annotations


def user_failure(exc: BaseException) -> str | None:
    """One line for a failure caused by input, or None when ``exc`` looks like a bug."""
    if isinstance(exc, RecursionError):
        return "an input is nested too deeply to read (a JSON, TOML or model structure thousands of levels deep)"
    if isinstance(exc, MemoryError):
        return "out of memory while handling the input (a model, calibration data or file too large for this machine)"
    if isinstance(exc, UnicodeError):
        return f"an input holds text that is not valid UTF-8 ({type(exc).__name__}: {str(exc)[:120]})"
    if isinstance(exc, ValueError) and ("null byte" in str(exc) or "null character" in str(exc)):
        return "a path or name contains a NUL character"
    return None
