"""The QNN execution provider on this host: the plugin registered once, HTP sessions, runs.

onnxruntime-qnn 2.x is a *plugin* EP: ``onnxruntime.register_execution_provider_library`` loads
it, and only ``SessionOptions.add_provider_for_devices`` selects it - ``InferenceSession(...,
providers=["QNNExecutionProvider"])`` is accepted without a word and runs on the CPU EP (measured).
On x86_64 the HTP backend (``libQnnHtp.so``) is a simulator of the NPU: it computes what the
phone's HTP computes for the chosen ``soc_model``, slowly (seconds per image for a small
detector). Its timings say nothing about the phone and are never reported as latencies.

Builds and verification create sessions with ``session.disable_cpu_ep_fallback=1``: a graph the
HTP does not take entirely fails instead of running partly on the CPU unnoticed. libQnnHtp prints
to stdout (fd 1) at its first session and QNN logs to stderr; session creation runs inside
:func:`edgepack.runtime.capture.captured_output` so edgepack's own output stays clean.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable

from ...errors import StageError, first_line

EP = "QNNExecutionProvider"
INSTALL = ("pip install 'edgepack[qnn]' (onnxruntime-qnn: Python >= 3.11 on Linux x86_64/aarch64 or Windows; "
           "there is no macOS wheel)")
NO_FALLBACK = ("session.disable_cpu_ep_fallback", "1")
_REGISTER = threading.Lock()


def qnn_module():
    """``onnxruntime_qnn``, or a StageError that says how to install it."""
    try:
        import onnxruntime_qnn
    except ImportError:
        msg = f"the QNN execution provider (onnxruntime-qnn) is not installed: {INSTALL}"
        raise StageError(msg) from None
    return onnxruntime_qnn


def installed() -> bool:
    try:
        qnn_module()
    except StageError:
        return False
    return True


def versions() -> dict[str, str]:
    """{"onnxruntime-qnn": ..., "qnn_sdk": ...} of the installed plugin."""
    q = qnn_module()
    return {"onnxruntime-qnn": q.__version__, "qnn_sdk": str(q.build_and_package_info.qnn_version)}


def register():
    """Register the plugin with onnxruntime once per process (a second registration is an error)."""
    import onnxruntime as ort

    q = qnn_module()
    with _REGISTER:
        if EP not in ort.get_available_providers():
            from ...runtime.capture import captured_output

            with captured_output():
                ort.register_execution_provider_library(EP, q.get_library_path())
    return q


def host_options(options: dict[str, str]) -> dict[str, str]:
    """A profile's device options for this host: the HTP library of the installed plugin instead of
    ``backend_type`` (the same backend; the path is only ever used on this machine)."""
    q = register()
    out = {k: v for k, v in options.items() if k != "backend_type"}
    out["backend_path"] = q.get_qnn_htp_path()
    return out


def session_options(provider_options: dict[str, str], *, fallback: bool = False,
                    config: Iterable[tuple[str, str]] = ()):
    """SessionOptions with the QNN EP's device added (and the CPU EP only as an explicit fallback)."""
    import onnxruntime as ort

    from ...runtime.ort import session_options as base

    register()
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    if not devices:
        msg = "onnxruntime-qnn registered no QNN device on this host"
        raise StageError(msg)
    entries = list(config) + ([] if fallback else [NO_FALLBACK])
    so = base(config=entries)
    so.add_provider_for_devices(devices, dict(provider_options))
    return so


def create(model: Path | bytes, provider_options: dict[str, str], *, fallback: bool = False,
           config: Iterable[tuple[str, str]] = (), what: str | None = None):
    """An HTP session of ``model`` (a path, or the serialized model); QNN's refusals become one StageError."""
    import onnxruntime as ort

    from ...runtime.capture import captured_output

    so = session_options(provider_options, fallback=fallback, config=config)
    name = what or (model.name if isinstance(model, Path) else "the model")
    try:
        with captured_output():
            return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises Fail/InvalidGraph/EPFail...
        raise StageError(f"the QNN HTP backend cannot take {name}: {explain(exc)}") from exc


def explain(exc: BaseException) -> str:
    """QNN's failure in edgepack's words (its messages name the cause, with a code, on the first line)."""
    text = first_line(exc)
    if "fallback to CPU EP has been explicitly disabled" in text or "CPU EP fallback" in text:
        return ("some nodes are not supported by the QNN EP, and the HTP must take the whole graph "
                f"(session.disable_cpu_ep_fallback=1); `edgepack inspect MODEL --target <this target>` lists them ({text[:200]})")
    if "finalize" in text.lower():
        return f"HTP graph finalization failed ({text[:240]})"
    return text[:300]


def run(path: Path, inputs: list[dict], provider_options: dict[str, str], *, what: str | None = None) -> list[dict]:
    """Run ``path`` on the HTP backend of this host for each input; one {output name: array} per input."""
    import numpy as np

    from ...limits import run_ort

    sess = create(path, provider_options, what=what)
    names = [o.name for o in sess.get_outputs()]
    label = what or Path(path).name
    return [dict(zip(names, (np.array(v, copy=True) for v in run_ort(sess, feed, label)))) for feed in inputs]
