"""What the user says about the judgement: ``--output-kind``, ``--eval``, ``--max-accuracy-drop`` and the
same in ``[tool.edgepack]`` of the project's pyproject.toml (``eval = "FILE.py:FUNCTION"``,
``output_kinds = { NAME = "KIND" }``). Flags win over the file; a FILE in pyproject.toml is relative to
that file's folder, one on the command line to the working directory.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .errors import UsageError
from .metrics.bars import KINDS

PYPROJECT_KEYS = ("eval", "output_kinds")  # [tool.edgepack] keys that are not budgets


def add_args(p: argparse.ArgumentParser, *, gate: bool, config: bool) -> None:
    p.add_argument("--output-kind", action="append", default=[], metavar="[MODEL:]NAME=KIND",
                   help=f"how to judge an output ({'|'.join(KINDS)}; options after ':', e.g. "
                        "map:threshold=0.3, sequence:blank=0); default: detected from the graph")
    p.add_argument("--eval", metavar="FILE.py:FUNCTION",
                   help="your own metric: FUNCTION(runner) -> number, run on fp32 and every candidate "
                        "(runs FILE's code: see SECURITY.md)")
    if gate:
        p.add_argument("--max-accuracy-drop", metavar="X",
                       help="drop a candidate whose --eval metric falls more than X below fp32's")
    if config:
        p.add_argument("--config", default="pyproject.toml", metavar="FILE",
                       help="read eval / output_kinds from its [tool.edgepack] table (default: ./pyproject.toml)")


def _table(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:  # said as budgets.from_pyproject says it
        msg = f"{path.name}: invalid TOML: {exc if not isinstance(exc, RecursionError) else 'nested too deeply'}"
        raise UsageError(msg) from None
    except OSError as exc:
        msg = f"{path.name}: cannot read [tool.edgepack]: {exc.strerror or type(exc).__name__}"
        raise UsageError(msg) from None
    tool = data.get("tool", {})
    table = tool.get("edgepack", {}) if isinstance(tool, dict) else {}
    return table if isinstance(table, dict) else {}


def _max_drop(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        msg = f"--max-accuracy-drop must be a number, zero or more, got {text!r}"
        raise UsageError(msg)
    return value


def options(args, *, gate_is_budget: bool = False) -> dict:
    """``build``/``compare`` keyword arguments: ``output_kinds`` and ``user_metric`` (the --eval file loaded
    here, before any work: its errors are one ``error:`` line, exit 2). ``--max-accuracy-drop`` gates the
    --eval metric; in ``compare`` (``gate_is_budget``) it is also a budget, so it may come without --eval."""
    from .metrics.kinds import parse_kind, parse_output_kind_arg
    from .user_eval import load

    config = Path(args.config)
    table = _table(config)
    where = f"{config.name} [tool.edgepack]"
    kinds = []
    given = table.get("output_kinds", {})
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        msg = f"{where}: output_kinds must be a table of NAME = \"KIND\" (KIND: {', '.join(KINDS)})"
        raise UsageError(msg)
    for name, text in given.items():
        here = f"{where} output_kinds.{name}"
        kinds.append((name, *parse_kind(text, here), here))
    for text in args.output_kind:
        kinds.append((*parse_output_kind_arg(text), f"--output-kind '{text}'"))
    drop = _max_drop(getattr(args, "max_accuracy_drop", None))
    metric = None
    if args.eval is not None:
        metric = load(args.eval, Path.cwd(), "--eval", drop)
    elif "eval" in table:
        if not isinstance(table["eval"], str):
            msg = f"{where}: eval must be a string \"FILE.py:FUNCTION\""
            raise UsageError(msg)
        metric = load(table["eval"], config.resolve().parent, f"{where} eval", drop)
    if drop is not None and metric is None and not gate_is_budget:
        msg = "--max-accuracy-drop gates your own metric: give it with --eval FILE.py:FUNCTION"
        raise UsageError(msg)
    return {"output_kinds": kinds, "user_metric": metric}
