"""The user's own metric: ``--eval FILE.py:FUNCTION`` (or ``[tool.edgepack] eval = "FILE.py:FUNCTION"``).

``FUNCTION(runner)`` gets a :class:`Runner` - a callable ``runner(feed) -> {output name: array}`` for one
model, already on the right engine (onnxruntime for the fp32 original and ``.ort``/``.onnx`` bundles,
OpenVINO for an IR) - and returns one number: accuracy, F1, a character error rate... Higher is better,
unless the function has an attribute ``lower_is_better = True``. It may return None for a model it does
not evaluate (multi-model builds: ``runner.model`` is the model file's stem). It runs once on the fp32
original (before any target is built: a function that fails there is an ``error:`` and exit 2) and on
every candidate artifact; the drop (fp32 value minus the candidate's, or the reverse for
lower-is-better) is gated by ``--max-accuracy-drop`` or the recipe's ``max_accuracy_drop`` and recorded.

Loading the file runs its code, with the user's rights, in the edgepack process: the user asked for it
on their own machine (SECURITY.md). It is loaded once, before any work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import StageError, UsageError, first_line


class Runner:
    """``runner(feed)`` -> {output name: array}; ``model``, ``what`` ("fp32 original" / "static-int8 candidate"),
    ``engine``, ``input_shapes`` ({name: [dims, None where free]}) and ``output_names`` describe it."""

    def __init__(self, run: Callable[[dict], dict], *, model: str, what: str, engine: str,
                 input_shapes: dict[str, list], output_names: list[str]):
        self._run = run
        self.model, self.what, self.engine = model, what, engine
        self.input_shapes, self.output_names = input_shapes, output_names

    def __call__(self, feed: dict) -> dict:
        return self._run(feed)

    def __repr__(self) -> str:
        return f"Runner({self.model}: {self.what} on {self.engine})"


@dataclass(frozen=True)
class UserMetric:
    spec: str  # as given, with the file's name only: "evaluate.py:evaluate"
    function: Callable[[Runner], Any]
    higher_is_better: bool
    max_drop: float | None  # --max-accuracy-drop (None: the recipe's max_accuracy_drop)

    def value(self, runner: Runner) -> float | None:
        """The function's number for ``runner``; StageError when it raises or returns no number."""
        try:
            out = self.function(runner)
        except (KeyboardInterrupt, MemoryError):
            raise
        except BaseException as exc:  # noqa: BLE001 - the user's code: SystemExit and all are its failures
            msg = f"--eval {self.spec} raised {type(exc).__name__} on {runner.what} of {runner.model}: {first_line(exc)}"
            raise StageError(msg) from None
        if out is None:
            return None
        if isinstance(out, bool) or not isinstance(out, (int, float)) or not math.isfinite(float(out)):
            msg = f"--eval {self.spec} must return a finite number (or None), got {out!r} for {runner.what} of {runner.model}"
            raise StageError(msg)
        return float(out)

    def drop(self, fp32: float, value: float) -> float:
        return fp32 - value if self.higher_is_better else value - fp32

    def to_json(self) -> dict:
        return {"function": self.spec, "better": "higher" if self.higher_is_better else "lower"}


def load(spec: str, base: Path, where: str, max_drop: float | None) -> UserMetric:
    """``FILE.py:FUNCTION`` (FILE relative to ``base``) loaded and checked; UsageError (exit 2) otherwise."""
    import importlib.util
    import sys

    path_text, colon, name = spec.rpartition(":")
    if not colon or not path_text or not name.isidentifier():
        msg = f"{where} '{spec}' must look like FILE.py:FUNCTION"
        raise UsageError(msg)
    path = (base / path_text) if not Path(path_text).is_absolute() else Path(path_text)
    if path.suffix != ".py" or not path.is_file():
        msg = f"{where} '{spec}': {path_text} is not a Python file"
        raise UsageError(msg)
    module_name = f"edgepack_user_eval_{abs(hash(str(path.resolve())))}"
    try:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[module_name] = module  # dataclasses and pickling inside the user's file need it
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    except (KeyboardInterrupt, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's code: any failure is one line
        sys.modules.pop(module_name, None)
        msg = f"{where} '{spec}': loading {path.name} raised {type(exc).__name__}: {first_line(exc)}"
        raise UsageError(msg) from None
    function = getattr(module, name, None)
    if not callable(function):
        from ._toml_check import did_you_mean

        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        msg = f"{where} '{spec}': {path.name} has no function '{name}'{did_you_mean(name, names)}"
        raise UsageError(msg)
    lower = getattr(function, "lower_is_better", False)
    if not isinstance(lower, bool):
        msg = f"{where} '{spec}': {name}.lower_is_better must be True or False"
        raise UsageError(msg)
    return UserMetric(f"{path.name}:{name}", function, not lower, max_drop)


def fp32_runner(path: Path, model: str) -> Runner:
    """The fp32 original in onnxruntime (the reference every candidate is compared with)."""
    from .runtime.ort import _own, run, session

    sess = session(Path(path), 1)
    names = [o.name for o in sess.get_outputs()]
    shapes = {i.name: [d if isinstance(d, int) else None for d in i.shape] for i in sess.get_inputs()}
    return Runner(lambda feed: dict(zip(names, map(_own, run(sess, feed)))), model=model, what="the fp32 original",
                  engine="onnxruntime CPU", input_shapes=shapes, output_names=names)


def fp32_values(metric: UserMetric, models: list[tuple[str, Path]]) -> dict[str, float | None]:
    """The metric on every model's fp32 original, before any target is built: a failure is bad input (exit 2)."""
    out = {}
    for name, path in models:
        try:
            out[name] = metric.value(fp32_runner(path, name))
        except StageError as exc:
            raise UsageError(str(exc)) from None
    return out
