"""Run onnxruntime's own mobile usability checker and collect its partition counts, for comparison."""

from __future__ import annotations

import logging
import re
from pathlib import Path

_LINE = re.compile(r"(\d+) partitions with a total of (\d+)/(\d+) nodes can be handled by the (.+) EP\.")


def ort_checker_counts(model_path: Path) -> dict[str, list[tuple[int, int, int]]]:
    """{EP name: [(partitions, supported, total) as-is, then with fixed shapes if it checked that]}."""
    from onnxruntime.tools.mobile_helpers import usability_checker

    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("edgepack-tests-usability")
    logger.handlers[:] = [_Collect()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    usability_checker.analyze_model(Path(model_path), skip_optimize=False, logger=logger)
    out: dict[str, list[tuple[int, int, int]]] = {}
    for msg in records:
        m = _LINE.search(msg)
        if m:
            out.setdefault(m.group(4), []).append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return out


def edgepack_counts(report: dict, target: str) -> list[tuple[int, int, int]]:
    return [(c["partitions"], c["nodes_supported"], c["nodes_total"])
            for c in report["targets"][target]["coverage"] if c["scenario"] != "after prepare"]
