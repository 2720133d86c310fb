"""Running and timing OpenVINO IRs on this host (the CPU plugin), alone or interleaved with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import StageError, TimeLimitError
from ...limits import run_openvino
from .coverage import openvino_error_summary
from ...runtime import ort as ort_runtime
from ...runtime.host import host_cpu
from ...runtime.timing import elapsed_ms, interleaved, ratio, summary, until_clear
from .ir import DEVICE_DEFAULT, openvino, properties


# ------------------------------------------------------------------------------ running


def compile_ir(xml: Path, threads: int = 1, device: str = DEVICE_DEFAULT, core=None):
    ov = openvino()
    core = core or ov.Core()
    try:
        return core.compile_model(str(xml), device, properties(threads))
    except Exception as exc:  # noqa: BLE001
        msg = f"OpenVINO cannot compile {xml.name} for {device}: {openvino_error_summary(exc)}"
        raise StageError(msg) from exc


def infer(request, compiled, feed: dict) -> dict[str, np.ndarray]:
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
    return [infer(request, compiled, feed) for feed in inputs]


def _ov_summary(times_ms: list[float], threads: int, device: str) -> dict:
    return summary(times_ms, threads, provider=f"OpenVINO {device}")


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

    compile_ms = elapsed_ms(do_compile)
    request = compiled.create_infer_request()
    first_ms = elapsed_ms(lambda: infer(request, compiled, sample))
    return {"compile_ms": compile_ms, "first_inference_ms": first_ms, "device": device, "threads": threads,
            "host_cpu": host_cpu()}


def compare_with_onnxruntime(onnx_ref: Path, xml: Path, sample: dict, *, threads: int = 1, warmup: int = 3,
                             runs: int = 20, budget_s: float = 0.5, device: str = DEVICE_DEFAULT,
                             max_runs: int = 400, ort_level: str | None = None) -> dict:
    """Interleaved timing (ABAB...) of the fp32 ONNX in onnxruntime and the IR in OpenVINO, same
    threads, same sample; ``ratio`` = IR median / onnxruntime median (below 1: the IR is faster)."""
    ref = ort_runtime.session(Path(onnx_ref), threads, ort_level)
    compiled = compile_ir(Path(xml), threads, device)
    request = compiled.create_infer_request()

    def run_ref():
        ort_runtime.run(ref, sample)

    def run_ir_once():
        infer(request, compiled, sample)

    ref_ms, ir_ms = interleaved(run_ref, run_ir_once, warmup=warmup, runs=runs, budget_s=budget_s, max_runs=max_runs)
    r, c = summary(ref_ms, threads), _ov_summary(ir_ms, threads, device)
    return {"ref": r, "cand": c, "ratio": ratio(r, c)}


def compare_irs(ref_xml: Path, cand_xml: Path, sample: dict, *, threads: int = 1, runs: int = 15, budget_s: float = 0.5,
                device: str = DEVICE_DEFAULT, max_runs: int = 400, clear_of: float | None = None) -> dict:
    """Interleaved OpenVINO timing of two IRs; ``ratio`` = candidate median / reference median. With
    ``clear_of`` (a gate's threshold) timing stops as soon as the ratio is clearly on one side of it
    (:func:`edgepack.runtime.timing.until_clear`; ``stop`` in the result)."""
    a = compile_ir(Path(ref_xml), threads, device)
    b = compile_ir(Path(cand_xml), threads, device)
    ra, rb = a.create_infer_request(), b.create_infer_request()

    def run_a():
        infer(ra, a, sample)

    def run_b():
        infer(rb, b, sample)

    if clear_of is not None:
        ta, tb, stop = until_clear(run_a, run_b, clear_of=clear_of, max_pairs=max_runs)
    else:
        ta, tb = interleaved(run_a, run_b, warmup=3, runs=runs, budget_s=budget_s, max_runs=max_runs)
        stop = None
    r, c = _ov_summary(ta, threads, device), _ov_summary(tb, threads, device)
    out = {"ref": r, "cand": c, "ratio": ratio(r, c)}
    return out if stop is None else {**out, "stop": stop}
