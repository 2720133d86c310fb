"""The edgepack exception tree.

Every error a user can cause is an :class:`EdgepackError`; the CLI prints it as
one line ``error: <message>`` and exits with code 2. Third-party errors
(protobuf, onnx, onnxruntime, openvino) are caught where they happen and
re-raised as one of these with ``raise ... from exc``.
"""

from __future__ import annotations


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first non-empty line of a (often multi-line) third-party error message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else (default or type(exc).__name__)


class EdgepackError(Exception):
    """Base class of every error edgepack raises on purpose (bad input, bad usage)."""

    exit_code = 2


class UsageError(EdgepackError):
    """A command line that cannot be acted on (missing or contradictory arguments)."""


class ModelError(EdgepackError):
    """The model file cannot be used: not ONNX, truncated, invalid, unsupported opset or domain."""


class ExternalDataError(ModelError):
    """A tensor's external data is missing, too short, or points outside the model's folder."""


class ShapeError(EdgepackError):
    """A shape given with ``--shape`` is malformed, or a dynamic dimension cannot be decided."""


class ProfileError(EdgepackError):
    """A target profile (TOML) is missing, malformed, or contradicts itself."""


class CalibrationError(EdgepackError):
    """Calibration data does not match the model's inputs (names, shapes, dtypes, finite values)."""


class OutputError(EdgepackError):
    """The output folder cannot be written, or would clobber something it must not."""


class StageError(EdgepackError):
    """A pipeline stage could not produce its result for this model and target."""


class TimeLimitError(EdgepackError):
    """One model run took longer than the time limit (``--time-limit``, ``EDGEPACK_TIME_LIMIT``) and was stopped."""


class BudgetExceeded(EdgepackError):
    """A budget or quality gate failed; the report says which (exit code 1)."""

    exit_code = 1
