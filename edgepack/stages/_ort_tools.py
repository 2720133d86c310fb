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
