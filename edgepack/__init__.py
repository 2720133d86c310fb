"""edgepack: package ONNX models for phones, laptops and single-board computers.

Public API (imports are lazy so ``edgepack --help`` stays instant)::

    from edgepack import inspect, load_target, EdgepackError
"""

from __future__ import annotations

from .errors import EdgepackError

__version__ = "0.1.0"
__all__ = ["EdgepackError", "inspect", "load_target", "__version__"]


def load_target(ref):
    """Load a built-in target by name or a user's profile from a .toml path."""
    from .target import load_target as _load

    return _load(ref)


def inspect(model, targets=(), shapes=None, per_hour: float = 1000.0) -> dict:
    """Model summary and per-target coverage, as ``edgepack inspect --json`` prints it."""
    from .analysis import inspect_model
    from .target import load_targets

    return inspect_model(model, load_targets(list(targets)), dict(shapes or {}), per_hour=per_hour)
