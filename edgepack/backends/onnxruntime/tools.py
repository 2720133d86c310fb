"""Import onnxruntime's Python tools without their side effects on logging.

``onnxruntime.tools.logger.get_logger`` calls ``logging.basicConfig`` at import time, which adds a
handler to the root logger (so a later ``basicConfig`` of ours would do nothing), and sets its
loggers to DEBUG (so ``create_config_from_models`` prints the absolute config path). We undo both.
"""

from __future__ import annotations

import logging
from types import ModuleType


def import_quietly(name: str) -> ModuleType:
    """``importlib.import_module(name)``, removing root handlers the import added and muting ORT's INFO logs."""
    import importlib

    root = logging.getLogger()
    before = list(root.handlers)
    module = importlib.import_module(name)
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
    for logger_name in ("ort_format_model.utils", "reduced_build_config_parser"):
        logging.getLogger(logger_name).setLevel(logging.WARNING)
    return module


def ort_format_model() -> ModuleType:
    """``onnxruntime.tools.ort_format_model`` (also puts ``ort_flatbuffers_py`` on ``sys.path``)."""
    return import_quietly("onnxruntime.tools.ort_format_model")


def fbs() -> ModuleType:
    """The flatbuffers bindings of the ORT format schema, shipped inside the onnxruntime wheel."""
    ort_format_model()
    return import_quietly("ort_flatbuffers_py.fbs")


def parse_config():
    """``onnxruntime.tools.reduced_build_config_parser.parse_config``."""
    return import_quietly("onnxruntime.tools.reduced_build_config_parser").parse_config


def required_ops_and_types(ort_files, type_reduction: bool) -> list[str]:
    """The body lines ``create_config_from_models`` writes for ``ort_files``, with each file read
    through a read-only memory map: onnxruntime's ``OrtFormatModelProcessor`` reads the whole file
    and copies it into a bytearray (twice the .ort's bytes, weights included), while the graph it
    parses is a small part of the file. Same processor, same usage manager, same line format."""
    import mmap

    ort_format_model()
    processor = import_quietly("onnxruntime.tools.ort_format_model.ort_model_processor").OrtFormatModelProcessor
    usage = import_quietly("onnxruntime.tools.ort_format_model.operator_type_usage_processors")
    schema = fbs().InferenceSession.InferenceSession
    required: dict = {}
    manager = usage.OperatorTypeUsageManager() if type_reduction else None
    for path in ort_files:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if not schema.InferenceSessionBufferHasIdentifier(buf, 0):
                msg = f"File does not appear to be a valid ORT format model: '{path}'"
                raise RuntimeError(msg)
            reader = processor.__new__(processor)  # its __init__ is the part that copies the file
            reader._required_ops, reader._op_type_processors, reader._buffer = required, manager, buf
            reader._model = schema.GetRootAsInferenceSession(buf, 0).Model()
            reader.process()
            del reader
    lines = []
    for domain in sorted(required):
        for opset in sorted(required[domain]):
            ops = sorted(required[domain][opset])
            if ops:
                entries = [op + (manager.get_config_entry(domain, op) or "") for op in ops] if manager else ops
                lines.append(f"{domain};{opset};{','.join(entries)}")
    return lines
