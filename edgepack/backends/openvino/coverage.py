"""OpenVINO coverage: the plugin's ``Core.query_model`` says which operations it takes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import foreign_error_types
from ...partition import Coverage, UnsupportedGroup

if TYPE_CHECKING:
    from ...target import TargetProfile


def openvino_error_summary(exc: BaseException) -> str:
    """One line from OpenVINO's multi-line errors: its 'Conversion is failed for' summary, else the
    first line that is not a source-location header."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("-- Conversion is failed for:"):
            reasons = [x for x in lines if not x.startswith(("Exception from", "Check ", "FrontEnd API", "While validating",
                                                              "Model wasn't", "Summary", "--"))]
            why = f" ({reasons[0]})" if reasons else ""
            return ln.lstrip("- ") + why
    for ln in lines:
        if not ln.startswith(("Exception from", "Check ")):
            return ln[:300]
    return type(exc).__name__


def analyze_openvino(model_path: Path, profile: TargetProfile, shapes: dict[str, tuple[int, ...]] | None,
                     scenario: str) -> Coverage:
    """Ask the OpenVINO plugin which operations of the converted model it takes."""
    try:
        import openvino as ov
    except ImportError:
        return Coverage(profile.name, profile.execution_provider, scenario, False,
                        notes=("openvino is not installed: pip install 'edgepack[openvino]'",))
    core = ov.Core()
    try:
        m = core.read_model(str(model_path))
        if shapes:
            m.reshape({name: list(dims) for name, dims in shapes.items()})
        device = profile.runtime_device or "CPU"
        supported = core.query_model(m, device)
    except (RuntimeError, *foreign_error_types()) as exc:  # OpenVINO's C++ errors arrive as RuntimeError
        return Coverage(profile.name, profile.execution_provider, scenario, False,
                        notes=(f"OpenVINO could not read the model: {openvino_error_summary(exc)}",))
    skip = {"Parameter", "Result", "Constant"}
    ops = [op for op in m.get_ordered_ops() if op.get_type_name() not in skip]
    missing = Counter(op.get_type_name() for op in ops if op.get_friendly_name() not in supported)
    n_sup = len(ops) - sum(missing.values())
    unsupported = tuple(UnsupportedGroup("operator", n, {op: n}, "no rewrite known: not supported by the OpenVINO plugin")
                        for op, n in sorted(missing.items()))
    return Coverage(profile.name, profile.execution_provider, scenario, True, len(ops), n_sup,
                    1 if n_sup else 0, (n_sup,) if n_sup else (), unsupported,
                    notes=(f"counts are OpenVINO operations on device {device} (Parameter/Result/Constant excluded)",))
