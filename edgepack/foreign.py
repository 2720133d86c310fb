"""A foreign tool's crash as one line: the tool, the step it was in, the node where it can be told.

onnxruntime's quantizer, NNCF and the converters sometimes fail inside their own code on a valid model
(e.g. onnxruntime's ``ValueError: The truth value of an array with more than one element is
ambiguous``). That message alone says nothing to a user. :func:`describe` reads the traceback: the
innermost frame of a known tool names the tool and its step (from the file it is in), and the
nearest frame holding a node (an onnx ``NodeProto``, an NNCF node, or a ``node_name``/``tensor_name``
string) names the node. :func:`is_foreign` tells such a crash from a bug of edgepack's own: the
exception was raised in a tool's code (numpy and the standard library called from it count as the
tool's).
"""

from __future__ import annotations

import os

from .errors import first_line

# (path fragment, tool, step), first match from the innermost frame outwards
_WHERE: tuple[tuple[str, str, str], ...] = (
    ("onnxruntime/quantization/calibrate", "onnxruntime quantizer", "calibration (collecting activation ranges)"),
    ("onnxruntime/quantization/shape_inference", "onnxruntime quantizer", "pre-processing (quant_pre_process)"),
    ("onnxruntime/tools/symbolic_shape_infer", "onnxruntime quantizer", "pre-processing (symbolic shape inference)"),
    ("onnxruntime/quantization/", "onnxruntime quantizer", "inserting quantize/dequantize nodes"),
    ("onnxruntime/transformers/float16", "onnxruntime fp16 converter", "float16 conversion"),
    ("onnxruntime/transformers/", "onnxruntime transformer optimizer", "fusion"),
    ("onnxruntime/", "onnxruntime", "running the model"),
    ("nncf/quantization/algorithms/", "NNCF", "{algorithm}"),
    ("nncf/", "NNCF", "quantization"),
    ("openvino/tools/ovc", "OpenVINO model converter", "conversion"),
    ("openvino/frontend", "OpenVINO ONNX frontend", "import"),
    ("openvino/", "OpenVINO", "compilation or inference"),
    ("onnx/", "onnx", "checking or converting the graph"),
)
_HELPERS = ("numpy/", "/python3", "scipy/", "importlib", "contextlib")  # code a tool calls, not the tool itself


def _norm(path: str) -> str:
    return path.replace(os.sep, "/")


def _own(path: str) -> bool:
    here = _norm(os.path.dirname(os.path.abspath(__file__)))
    return _norm(path).startswith(here + "/")


def _tool_of(path: str) -> tuple[str, str] | None:
    p = _norm(path)
    if "site-packages/" not in p and "dist-packages/" not in p and "/lib/" not in p:
        return None
    for fragment, tool, step in _WHERE:
        i = p.find(fragment)
        if i >= 0:
            if "{algorithm}" in step:
                rest = p[i + len(fragment):].split("/")
                step = f"its {rest[0].replace('_', ' ')} step" if rest and rest[0] else "quantization"
            return tool, step
    return None


def _frames(exc: BaseException) -> list:
    """(frame, filename) innermost first."""
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append((tb.tb_frame, tb.tb_frame.f_code.co_filename))
        tb = tb.tb_next
    return out[::-1]


def is_foreign(exc: BaseException) -> bool:
    """True when ``exc`` was raised inside a known tool's code (not in edgepack's)."""
    for _, path in _frames(exc):
        if _own(path):
            return False
        if _tool_of(path) is not None:
            return True
        if not any(h in _norm(path) for h in _HELPERS):
            return False
    return False


def _node_in(frame) -> str | None:
    for key in ("node", "onnx_node", "nncf_node", "target_node", "op", "node_proto"):
        value = frame.f_locals.get(key)
        if value is None:
            continue
        op_type = getattr(value, "op_type", None) or getattr(value, "node_type", None)
        name = getattr(value, "name", None) or getattr(value, "node_name", None)
        if isinstance(name, str) and name:
            return f"node '{name}'" + (f" ({op_type})" if isinstance(op_type, str) and op_type else "")
    for key in ("node_name", "tensor_name", "target_node_name"):
        value = frame.f_locals.get(key)
        if isinstance(value, str) and value:
            return f"{key.split('_')[0]} '{value}'"
    return None


def describe(exc: BaseException, tool: str, step: str) -> str:
    """One line: '<tool> failed in <step> at node '<name>' (<op>): <Type>: <first line>'.

    ``tool`` and ``step`` say what edgepack was running; the traceback names them more exactly where it can."""
    found_tool = found_step = node = None
    for frame, path in _frames(exc):
        if found_tool is None:
            hit = _tool_of(path)
            if hit is not None:
                found_tool, found_step = hit
        if node is None and not _own(path):
            node = _node_in(frame)
    where = f" at {node}" if node else ""
    tool, step = found_tool or tool, found_step or step
    return (f"{tool} failed in {step}{where}: {type(exc).__name__}: {first_line(exc)} "
            f"(a failure inside {tool}, not a check of edgepack's)")

