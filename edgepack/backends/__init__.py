"""Engines as backends: one module per engine, one fixed table, no registration at import time.

``BACKENDS`` maps a profile's ``runtime.engine`` to the object that knows that engine (see
:mod:`.base` for the interface). It is the only list of engines: profiles are validated against it,
``build`` and ``verify`` look backends up in it, and nothing outside this package compares engine
names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ProfileError
from .base import Backend, Packaging
from .onnxruntime import OnnxRuntimeBackend
from .openvino import OpenVinoBackend
from .qnn import QnnBackend

if TYPE_CHECKING:
    from ..target import TargetProfile

__all__ = ["BACKENDS", "Backend", "Packaging", "backend_for", "backend_named"]

BACKENDS: dict[str, Backend] = {
    "onnxruntime": OnnxRuntimeBackend(),
    "openvino": OpenVinoBackend(),
    "onnxruntime-qnn": QnnBackend(),
}


def backend_named(engine: str) -> Backend:
    """The backend of an engine name; a clear error listing the known engines otherwise."""
    try:
        return BACKENDS[engine]
    except KeyError:
        msg = f"unknown engine '{engine}'; edgepack knows: {', '.join(BACKENDS)}"
        raise ProfileError(msg) from None


def backend_for(profile: TargetProfile) -> Backend:
    return backend_named(profile.engine)
