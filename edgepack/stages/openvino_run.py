"""OpenVINO helpers for the intel-openvino stages: convert, save deterministically, run, time.

openvino (and nncf) are imported inside the functions, so importing edgepack stays cheap and an
install without the ``openvino`` extra fails only when an OpenVINO target is built, with a message
that says what to install.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import StageError, TimeLimitError
from ..limits import run_openvino
from ..partition import openvino_error_summary
from .verify import _ms, _run, _session, _summary, host_cpu, interleaved

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
    return ov


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


# ------------------------------------------------------------------------------ running


def compile_ir(xml: Path, threads: int = 1, device: str = DEVICE_DEFAULT, core=None):
    ov = openvino()
    core = core or ov.Core()
    try:
        return core.compile_model(str(xml), device, properties(threads))
    except Exception as exc:  # noqa: BLE001
        msg = f"OpenVINO cannot compile {xml.name} for {device}: {openvino_error_summary(exc)}"
        raise StageError(msg) from exc


def _infer(request, compiled, feed: dict) -> dict[str, np.ndarray]:
    try:
        result = run_openvino(request, feed, "the OpenVINO model")  # under the time limit
    except TimeLimitError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg = f"OpenVINO failed running the model: {openvino_error_summary(exc)}"
        raise StageError(msg) from exc
    outs: dict[str, np.ndarray] = {}
    for port in compiled.outputs:
        value = np.array(result[port], copy=True)
        for name in port.get_names():
            outs[name] = value
    return outs


def run_ir(xml: Path, inputs: list[dict], threads: int = 1, device: str = DEVICE_DEFAULT) -> list[dict]:
    """Run an IR on the OpenVINO device for each input dict; one {output name: array} per input."""
    compiled = compile_ir(Path(xml), threads, device)
    request = compiled.create_infer_request()
    return [_infer(request, compiled, feed) for feed in inputs]


def _ov_summary(times_ms: list[float], threads: int, device: str) -> dict:
    s = _summary(times_ms, threads)
    s["provider"] = f"OpenVINO {device}"
    return s


def first_load(xml: Path, sample: dict, threads: int = 1, device: str = DEVICE_DEFAULT) -> dict:
    """Compile (first-load) and first-inference milliseconds, in a fresh Core with no model cache.

    The plugin library is loaded before timing, so compile_ms is the model's own cost."""
    ov = openvino()
    core = ov.Core()
    core.get_versions(device)  # loads the plugin
    compiled = None

    def do_compile():
        nonlocal compiled
        compiled = compile_ir(Path(xml), threads, device, core)

    compile_ms = _ms(do_compile)
    request = compiled.create_infer_request()
    first_ms = _ms(lambda: _infer(request, compiled, sample))
    return {"compile_ms": compile_ms, "first_inference_ms": first_ms, "device": device, "threads": threads,
            "host_cpu": host_cpu()}


def compare_with_onnxruntime(onnx_ref: Path, xml: Path, sample: dict, *, threads: int = 1, warmup: int = 3,
                             runs: int = 20, budget_s: float = 0.5, device: str = DEVICE_DEFAULT,
                             max_runs: int = 400, ort_level: str | None = None) -> dict:
    """Interleaved timing (ABAB...) of the fp32 ONNX in onnxruntime and the IR in OpenVINO, same
    threads, same sample; ``ratio`` = IR median / onnxruntime median (below 1: the IR is faster)."""
    ref = _session(Path(onnx_ref), threads, ort_level)
    compiled = compile_ir(Path(xml), threads, device)
    request = compiled.create_infer_request()

    def run_ref():
        _run(ref, sample)

    def run_ir_once():
        _infer(request, compiled, sample)

    ref_ms, ir_ms = interleaved(run_ref, run_ir_once, warmup=warmup, runs=runs, budget_s=budget_s, max_runs=max_runs)
    r, c = _summary(ref_ms, threads), _ov_summary(ir_ms, threads, device)
    return {"ref": r, "cand": c, "ratio": c["median_ms"] / r["median_ms"] if r["median_ms"] > 0 else None}


def compare_irs(ref_xml: Path, cand_xml: Path, sample: dict, *, threads: int = 1, runs: int = 15, budget_s: float = 0.5,
                device: str = DEVICE_DEFAULT, max_runs: int = 400) -> dict:
    """Interleaved OpenVINO timing of two IRs; ``ratio`` = candidate median / reference median."""
    a = compile_ir(Path(ref_xml), threads, device)
    b = compile_ir(Path(cand_xml), threads, device)
    ra, rb = a.create_infer_request(), b.create_infer_request()

    def run_a():
        _infer(ra, a, sample)

    def run_b():
        _infer(rb, b, sample)

    ta, tb = interleaved(run_a, run_b, warmup=3, runs=runs, budget_s=budget_s, max_runs=max_runs)
    r, c = _ov_summary(ta, threads, device), _ov_summary(tb, threads, device)
    return {"ref": r, "cand": c, "ratio": c["median_ms"] / r["median_ms"] if r["median_ms"] > 0 else None}
