"""Two of onnxruntime's quantizer helpers without their quadratic cost, while edgepack quantizes.

``quantize_static`` (onnxruntime/quantization, 1.2x-1.32) rewires every quantized tensor with
``ONNXModel.replace_input_of_all_nodes``, which calls a Python function for every node of the graph
(155,000 calls for YOLOv8n), and finds initializers with ``quant_utils.find_by_name``, which builds a
list of every initializer on each call (2,500 calls). The stand-ins below do exactly the same thing -
the same nodes' inputs replaced in the same order, the same first match returned - with the membership
test and the search done in C (quantize_static of YOLOv8n from calibrated ranges: 0.60 s -> 0.49 s,
medians of 5 on a 2-vCPU AMD EPYC: ``python benchmarks/bench_calibration.py``).

They are installed only over the implementations they were written against (the functions' source
hashes below; any other onnxruntime keeps its own), only inside :func:`faster_quantizer`, and the
quantized bytes are the same with and without them (tests/test_fastpaths.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import threading
from collections.abc import Iterator

# sha256 of inspect.getsource() of the functions replaced, as onnxruntime 1.32 ships them
KNOWN = {
    "replace_input_of_all_nodes": "dc01c5a634a1e3c1742af4364c2840153550d8721af4025dd4eff1cd3a6dd6a5",
    "find_by_name": "40cf7740b42609de15240e14403a0f99868e548fcd1a62ebea431e985cfb2c47",
}
MODULES = ("quant_utils", "onnx_model", "base_quantizer", "qdq_quantizer", "onnx_quantizer", "qdq_loss_debug")

_lock = threading.Lock()
_depth = 0
_saved: list[tuple[object, str, object]] = []


def replace_input_of_all_nodes(self, old_input_name: str, new_input_name: str) -> None:
    assert isinstance(old_input_name, str) and isinstance(new_input_name, str)
    for node in self.model.graph.node:
        if old_input_name in node.input:  # containment in C; then what replace_node_input does
            for j in range(len(node.input)):
                if node.input[j] == old_input_name:
                    node.input[j] = new_input_name


def find_by_name(item_name, item_list):
    return next((item for item in item_list if item.name == item_name), None)


def _source_hash(fn) -> str:
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
    except (OSError, TypeError):
        return ""


def _install() -> None:
    import importlib

    from onnxruntime.quantization import quant_utils
    from onnxruntime.quantization.onnx_model import ONNXModel

    if _source_hash(ONNXModel.replace_input_of_all_nodes) == KNOWN["replace_input_of_all_nodes"]:
        _saved.append((ONNXModel, "replace_input_of_all_nodes", ONNXModel.replace_input_of_all_nodes))
        ONNXModel.replace_input_of_all_nodes = replace_input_of_all_nodes
    original = quant_utils.find_by_name
    if _source_hash(original) == KNOWN["find_by_name"]:
        for name in MODULES:
            try:
                module = importlib.import_module(f"onnxruntime.quantization.{name}")
            except ImportError:
                continue
            if getattr(module, "find_by_name", None) is original:
                _saved.append((module, "find_by_name", original))
                module.find_by_name = find_by_name


def _uninstall() -> None:
    while _saved:
        owner, name, original = _saved.pop()
        setattr(owner, name, original)


@contextlib.contextmanager
def faster_quantizer() -> Iterator[None]:
    """While any thread is inside, onnxruntime's quantizer uses the stand-ins (where they apply)."""
    global _depth
    with _lock:
        if _depth == 0:
            _install()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _uninstall()
