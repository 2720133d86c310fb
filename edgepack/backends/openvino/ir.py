"""OpenVINO IR: convert an ONNX model, save it deterministically, and read an IR's ops and inputs.

openvino is imported inside the functions, so importing edgepack stays cheap and an install without
the ``openvino`` extra fails only when an OpenVINO target is built, with a message that says what to
install.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from ...errors import StageError
from .coverage import openvino_error_summary

DEVICE_DEFAULT = "CPU"
# Compute precision of floating-point layers. f32 everywhere: an fp16 IR stores fp16 weights
# only (openvino#15439), and the CPU plugin would otherwise pick bf16 on AMX/AVX512-BF16 hosts.
PRECISION_HINT = "f32"
PERFORMANCE_HINT = "LATENCY"
DEVICE_THREADS = 0  # shipped config: 0 = the plugin decides (all physical cores under LATENCY)
RT_INFO_DROPPED = ("conversion_parameters",)  # names the work-folder file the IR was converted from


def openvino():
    try:
        import openvino as ov
    except ImportError as exc:
        msg = "the intel-openvino target needs openvino: pip install 'edgepack[openvino]'"
        raise StageError(msg) from exc
    _no_telemetry()
    return ov


def _no_telemetry() -> None:
    """OpenVINO's model converter sends usage events to Google Analytics unless a consent file in the
    user's home says no (openvino_telemetry: no file counts as yes when its dialog is off); NNCF does
    the same unless NNCF_CI is set. A build tool must not phone home from the user's machine: point
    the converter at OpenVINO's own telemetry stub (the module it uses when openvino_telemetry is not
    installed) and set NNCF_CI before NNCF is imported. Nothing is written to the user's home."""
    import os

    os.environ.setdefault("NNCF_CI", "1")
    try:
        from openvino.tools.ovc import convert_impl, telemetry_stub, telemetry_utils
    except ImportError:  # another OpenVINO layout: nothing of ours to switch off
        return
    convert_impl.tm = telemetry_stub
    telemetry_utils.tm = telemetry_stub


def openvino_version() -> str:
    """The pip version of openvino (what requirements.txt pins), e.g. '2026.4.1'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        return openvino().__version__.split("-")[0]


def properties(threads: int, precision: str = PRECISION_HINT, hint: str = PERFORMANCE_HINT) -> dict[str, Any]:
    return {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}


# ------------------------------------------------------------------------------ convert and save


def check_importable(onnx_path: Path) -> None:
    """OpenVINO cannot import com.microsoft QLinear* ops (openvino#17461): refuse such a model up front."""
    model = onnx.load_model(str(onnx_path), load_external_data=False)
    contrib = sorted({n.op_type for n in model.graph.node if n.domain == "com.microsoft"})
    if contrib:
        msg = (f"{onnx_path.name} holds com.microsoft operators ({', '.join(contrib)}), which OpenVINO does not import "
               "(openvino#17461); pass the fp32 model instead, int8 for OpenVINO comes from NNCF")
        raise StageError(msg)


def convert(onnx_path: Path):
    """ONNX file -> ov.Model (shapes as the file declares them: prepare has fixed them if asked to)."""
    ov = openvino()
    check_importable(onnx_path)
    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises OpConversionFailure/RuntimeError with long texts
        msg = f"OpenVINO cannot convert {onnx_path.name}: {openvino_error_summary(exc)}"
        raise StageError(msg) from exc


_AUTO_NAME = re.compile(r"(?:^|(?<=/))([A-Z][A-Za-z0-9]*)_(\d+)(?=$|/)")


def canonicalize(model) -> None:
    """Make the saved IR independent of the process it was made in.

    OpenVINO names the nodes it creates ``<Type>_<n>`` from a process-wide counter, so converting
    the same model twice in one process gives different layer names; they are renumbered here in
    graph order (the same number keeps the same new number). The rt_info entry that names the
    converted file is dropped.
    """
    numbers: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Parameter", "Result"):
            continue
        name = op.get_friendly_name()

        def renumber(match: re.Match) -> str:
            new = numbers.setdefault(match.group(2), len(numbers))
            return f"{match.group(1)}_{new}"

        fixed = _AUTO_NAME.sub(renumber, name)
        if fixed != name:
            op.set_friendly_name(fixed)
    rt = model.get_rt_info()
    for key in RT_INFO_DROPPED:
        if key in rt:
            del rt[key]


def save(model, dst_xml: Path, compress_to_fp16: bool) -> Path:
    ov = openvino()
    canonicalize(model)
    ov.save_model(model, str(dst_xml), compress_to_fp16=compress_to_fp16)
    return dst_xml


def ir_bytes(xml: Path) -> int:
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def ir_ops(xml: Path) -> dict[str, int]:
    """Histogram of operation types in the IR (Parameter/Result/Constant included)."""
    ov = openvino()
    model = ov.Core().read_model(str(xml))
    return dict(sorted(Counter(op.get_type_name() for op in model.get_ordered_ops()).items()))


def ir_inputs(xml: Path) -> dict[str, list]:
    ov = openvino()
    model = ov.Core().read_model(str(xml))
    out = {}
    for p in model.inputs:
        dims = [d.get_length() if d.is_static else (str(d) if d.get_max_length() >= 0 else None) for d in p.get_partial_shape()]
        out[p.get_any_name()] = dims
    return out


