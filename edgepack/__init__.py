"""edgepack: package ONNX models for phones, laptops and single-board computers.

Public API (imports are lazy so ``edgepack --help`` stays instant)::

    import edgepack

    results = edgepack.build("model.onnx", ["android-nnapi", "rpi5-cpu"], "out", calibration="calib/")
    report = edgepack.compare("model.onnx", "all", "out", calibration="calib/", budgets={"max-bundle-mb": 8})
    findings = edgepack.verify("out/rpi5-cpu")
    merged = edgepack.merge(["a/report.json", "b/report.json"], "merged")

Every function raises an :class:`EdgepackError` subclass for bad input (see :mod:`edgepack.errors`);
see :mod:`edgepack.api` for the arguments and the typed results.
"""

from __future__ import annotations

import sys as _sys
import types as _types

from .errors import (
    CalibrationError,
    EdgepackError,
    ModelError,
    OutputError,
    ProfileError,
    ShapeError,
    StageError,
    UsageError,
)

from .api import CompareResult, build, compare, merge, verify  # light: the work is imported when called

__version__ = "0.1.0"
__all__ = ["CalibrationError", "EdgepackError", "ModelError", "OutputError", "ProfileError", "ShapeError",
           "StageError", "UsageError", "CompareResult", "build", "compare", "inspect", "load_target", "merge", "verify",
           "__version__"]


def load_target(ref):
    """Load a built-in target by name or a user's profile from a .toml path."""
    from .target import load_target as _load

    return _load(ref)


def inspect(model, targets=(), shapes=None, per_hour: float = 1000.0) -> dict:
    """Model summary and per-target coverage, as ``edgepack inspect --json`` prints it."""
    from .analysis import inspect_model
    from .api import profiles, shapes_of

    chosen = profiles(targets) if targets else []
    return inspect_model(model, chosen, shapes_of(shapes), per_hour=per_hour)


class _Package(_types.ModuleType):
    """``edgepack.build`` and ``edgepack.compare`` are the API functions, although modules of the same
    names exist: importing ``edgepack.build`` (the module) would otherwise rebind the package attribute
    to it. The modules stay importable by their full names (``from edgepack.build import ...``)."""

    def __setattr__(self, name: str, value) -> None:
        if name in ("build", "compare", "merge", "verify") and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
