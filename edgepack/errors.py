"""The edgepack exception tree, and the line between a foreign tool's error and a bug of ours.

Every error a user can cause is an :class:`EdgepackError`; the CLI prints it as
one line ``error: <message>`` and exits with code 2. Third-party errors
(protobuf, onnx, onnxruntime, openvino) are caught where they happen and
re-raised as one of these with ``raise ... from exc``; inside a stage, the known
foreign error types (:func:`foreign_error_types`) become a :class:`StageError`.
Anything else is a bug: an :class:`InternalError`, which no caller mistakes for
bad input (exit 70, a hint to rerun with ``--debug`` and report it).
"""

from __future__ import annotations

import sys


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


class InternalError(Exception):
    """A bug in edgepack: an exception no code path expected, with where it happened. Deliberately not
    an EdgepackError, so nothing reports it as bad input or as one more target that failed."""

    exit_code = 70  # EX_SOFTWARE (sysexits.h)

    def __init__(self, where: str, exc: BaseException):
        super().__init__(where, exc)
        self.where = where
        self.original = exc

    def __str__(self) -> str:
        return (f"internal error in {self.where}: {type(self.original).__name__}: {first_line(self.original)} — this "
                "is a bug in edgepack; rerun with --debug for the traceback and please report it")


# Foreign exception types that mean "this tool cannot process this input" (or hit one of its limits),
# by module: None = every exception class the module defines. Looked up only in modules already
# imported - a library that was never imported cannot have raised.
_FOREIGN: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("onnxruntime.capi.onnxruntime_pybind11_state", None),  # Fail, InvalidGraph, InvalidArgument, NotImplemented...
    ("onnx.onnx_cpp2py_export.checker", ("ValidationError",)),
    ("onnx.onnx_cpp2py_export.shape_inference", ("InferenceError",)),
    ("google.protobuf.message", ("DecodeError",)),
    ("openvino._pyopenvino", ("OpConversionFailure", "OpValidationFailure", "GeneralFailure", "InitializationFailure",
                              "NotImplementedFailure")),
    ("openvino.exceptions", ("OVError", "OVTypeError", "UserInputError")),
    ("nncf.errors", None),
    ("numpy.linalg", ("LinAlgError",)),
)


def foreign_error_types(extra: tuple[type[BaseException], ...] = ()) -> tuple[type[BaseException], ...]:
    """The known foreign error types (plus ``extra``, e.g. a backend's own), and OSError: I/O failed."""
    found: list[type[BaseException]] = [OSError]
    for module_name, names in _FOREIGN:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        if names is None:
            names = tuple(n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Exception))
        found += [getattr(module, n) for n in names if isinstance(getattr(module, n, None), type)]
    return (*found, *extra)
