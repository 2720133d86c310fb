"""The Python API: the CLI's jobs as functions (``edgepack.build``, ``compare``, ``verify``, ``merge``).

The command line is a thin layer over these: it parses arguments, calls one of them and prints
what it returns. Each accepts what a script has at hand (a target name, a profile path or a loaded
:class:`~edgepack.target.TargetProfile`; shapes as a dict or ``"NAME=1x3x224x224"`` strings),
returns typed results, and raises an :class:`~edgepack.errors.EdgepackError` subclass for bad input
(``ShapeError``, ``ProfileError``, ``CalibrationError``, ``OutputError``, ``UsageError``, ``StageError``).
A bug is an :class:`~edgepack.errors.InternalError`, never an EdgepackError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, Union

from .errors import UsageError

if TYPE_CHECKING:
    from .build import BuildResult
    from .bundle_check import Findings
    from .target import TargetProfile

PathLike = Union[str, Path]
Targets = Union[str, "TargetProfile", Sequence[Union[str, "TargetProfile"]]]
Shapes = Union[Mapping[str, Sequence[int]], Sequence[str], None]


@dataclass(frozen=True)
class CompareResult:
    """What ``compare`` (and ``merge``) wrote: the report (as report.json holds it) and where."""

    report: dict
    out: Path

    @property
    def rows(self) -> dict[str, dict]:
        """One row per target that was built, keyed by target name."""
        return self.report["targets"]

    @property
    def failed_targets(self) -> dict[str, str]:
        return dict(self.report.get("failed_targets") or {})

    @property
    def broken_budgets(self) -> list[dict]:
        return [b for b in self.report.get("budgets", []) if b["passed"] is False]

    @property
    def ok(self) -> bool:
        """Every target built and every budget met (the CLI's exit 0)."""
        return not self.broken_budgets and not self.failed_targets

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def paths(self) -> dict[str, Path]:
        return {name: self.out / name for name in ("report.json", "report.md", "report.html")}


def _models(models: PathLike | Iterable[PathLike]) -> list[Path]:
    items = [models] if isinstance(models, (str, Path)) else list(models)
    if not items:
        msg = "no model given"
        raise UsageError(msg)
    for m in items:
        if not isinstance(m, (str, Path)):
            msg = f"a model is a path to an .onnx file, not {type(m).__name__}"
            raise UsageError(msg)
    return [Path(m) for m in items]


def profiles(targets: Targets) -> list[TargetProfile]:
    """Target names ('all' for every built-in), profile paths or loaded profiles, as profiles."""
    from .target import TargetProfile, load_targets

    items = [targets] if isinstance(targets, (str, Path, TargetProfile)) else list(targets)
    if not items:
        msg = "no target given: pass a target name (see `edgepack targets`) or 'all'"
        raise UsageError(msg)
    loaded = {i: t for i, t in enumerate(items) if isinstance(t, TargetProfile)}
    refs = [str(t) for t in items if not isinstance(t, TargetProfile)]
    for t in items:
        if not isinstance(t, (str, Path, TargetProfile)):
            msg = f"a target is a name, a profile path or a TargetProfile, not {type(t).__name__}"
            raise UsageError(msg)
    if "all" in refs:
        if len(items) > 1:
            msg = "'all' stands for every built-in target; give it alone"
            raise UsageError(msg)
        return load_targets(["all"])
    named = iter(load_targets(refs))
    out = [loaded[i] if i in loaded else next(named) for i in range(len(items))]
    names = [p.name for p in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        msg = f"target '{dupes[0]}' given more than once"
        raise UsageError(msg)
    return out


def shapes_of(shapes: Shapes) -> dict[str, tuple[int, ...]]:
    """``{"images": (1, 3, 640, 640)}`` or ``["images=1x3x640x640"]``, checked like ``--shape``."""
    from .shapes import parse_shape_arg, parse_shape_args

    if shapes is None:
        return {}
    if isinstance(shapes, str):
        shapes = [shapes]
    if isinstance(shapes, Mapping):
        out = {}
        for name, dims in shapes.items():
            if not isinstance(name, str) or isinstance(dims, (str, bytes)) or not isinstance(dims, Iterable):
                msg = f"shapes: {name!r} must map an input name to a sequence of dimensions"
                raise UsageError(msg)
            dims = list(dims)
            if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
                msg = f"shapes: '{name}' dimensions must be whole numbers, got {dims!r}"
                raise UsageError(msg)
            out[name] = parse_shape_arg(f"{name}={'x'.join(map(str, dims))}")[1]
        return out
    return parse_shape_args(list(shapes))


def build(models: PathLike | Iterable[PathLike], targets: Targets, out: PathLike, *,
          calibration: PathLike | None = None, shapes: Shapes = None, force: bool = False, per_hour: float = 1000.0,
          jobs: int = 1, progress: Callable[[str], None] | None = None, keep_going: bool = False,
          output_kinds: Sequence[tuple[str, str, dict, str]] | None = None,
          user_metric: Any = None, verify_on_target: bool = False) -> list[BuildResult]:
    """One verified bundle per target in ``out/<target>/`` (``edgepack build``); one BuildResult each.

    A target that cannot be built raises its error (a StageError naming the stage), unless ``keep_going``:
    then it is returned as a :class:`~edgepack.build.TargetFailure` in its place and the others go on.
    ``output_kinds`` and ``user_metric``: what ``--output-kind`` and ``--eval`` give (see edgepack.judging);
    ``verify_on_target``: ``--verify-on-target`` (the Pi targets judged on the aarch64 onnxruntime under emulation).

    >>> results = edgepack.build("model.onnx", ["rpi5-cpu"], "out", calibration="calib/")  # doctest: +SKIP
    """
    from .build import build as _build

    _rate(per_hour)
    if jobs < 1:
        msg = "jobs must be 1 or more"
        raise UsageError(msg)
    return _build(_models(models), profiles(targets), Path(out), calibration=calibration, shapes=shapes_of(shapes),
                  force=force, progress=progress, jobs=jobs, per_hour=per_hour, keep_going=keep_going,
                  output_kinds=list(output_kinds or []), user_metric=user_metric,
                  verify_on_target=bool(verify_on_target))


def compare(models: PathLike | Iterable[PathLike], targets: Targets = "all", out: PathLike = "out", *,
            calibration: PathLike | None = None, shapes: Shapes = None, budgets: Mapping[str, Any] | None = None,
            target_budgets: Mapping[str, Mapping[str, Any]] | Sequence[str] | None = None,
            config: PathLike | None = None, baseline: PathLike | None = None, jobs: int = 2, force: bool = False,
            per_hour: float = 1000.0, progress: Callable[[str], None] | None = None,
            output_kinds: Sequence[tuple[str, str, dict, str]] | None = None, user_metric: Any = None,
            verify_on_target: bool = False) -> CompareResult:
    """Every target side by side plus ``out/report.{json,md,html}`` (``edgepack compare``).

    ``budgets``: {key: limit} for every target (``max-bundle-mb``, ``max-latency-ms``,
    ``max-accuracy-drop``, ``max-battery-pct-per-hour``); ``target_budgets``: {target: {key: limit}}
    or ``"T:KEY=X"`` strings; ``config``: a pyproject.toml whose ``[tool.edgepack]`` table holds more.
    A broken budget is not an exception: ``result.ok`` is False and ``result.broken_budgets`` says which.
    """
    from . import budgets as bm
    from .compare import compare as _compare

    _rate(per_hour)
    if jobs < 1:
        msg = "jobs must be 1 or more"
        raise UsageError(msg)
    chosen = profiles(targets)
    names = [p.name for p in chosen]
    limits = bm.collect(names, config=Path(config) if config is not None else None, every=dict(budgets or {}),
                        per_target=target_budgets if target_budgets is None or isinstance(target_budgets, Mapping)
                        else list(target_budgets))
    report = _compare(_models(models), chosen, Path(out), calibration=calibration, shapes=shapes_of(shapes),
                      budgets=limits, baseline=baseline, jobs=jobs, force=force, progress=progress, per_hour=per_hour,
                      output_kinds=list(output_kinds or []), user_metric=user_metric,
                      verify_on_target=bool(verify_on_target))
    return CompareResult(report, Path(out))


def verify(bundle: PathLike, *, manifest_sha256: str | None = None, on_target: bool = False, measure: bool = False,
           runs: int | None = None, threads: int | None = None) -> Findings:
    """Re-check a bundle (``edgepack verify``): checksums, files, runtime pin, and a run of every model
    on its reference input against the reference output. ``findings.ok`` is False when anything is
    wrong (``findings.problems`` says what); a folder that is not a bundle raises OutputError.
    ``on_target`` (``--on-target``): also run them on the target's own runtime build under emulation.
    With ``measure``: also the bundle's latency on this machine with its own runtime and execution
    provider, labelled with the machine (``findings.measurement``; ``edgepack verify --measure``)."""
    from .bundle_check import check_bundle

    for name, value in (("runs", runs), ("threads", threads)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            msg = f"{name} must be a whole number, 1 or more"
            raise UsageError(msg)
    return check_bundle(bundle, manifest_sha256, on_target, measure=measure, runs=runs, threads=threads)


def merge(inputs: Iterable[PathLike], out: PathLike, *, budgets: Mapping[str, Any] | None = None,
          target_budgets: Mapping[str, Mapping[str, Any]] | Sequence[str] | None = None, config: PathLike | None = None,
          baseline: PathLike | None = None, by_model: bool = False) -> list[CompareResult]:
    """Per-target compare reports (CI jobs on different runners) and ``verify --measure`` records as one
    report (``edgepack merge``): one CompareResult, or one per model with ``by_model``. Reports of
    different models or edgepack/onnxruntime versions raise UsageError; budgets as in :func:`compare`."""
    from .merge import merge as _merge

    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        msg = "no report to merge"
        raise UsageError(msg)
    per_target = target_budgets if target_budgets is None or isinstance(target_budgets, Mapping) else list(target_budgets)
    return _merge([Path(i) for i in items], Path(out), budgets=dict(budgets or {}), target_budgets=per_target,
                  config=config, baseline=baseline, by_model=by_model)


def _rate(per_hour: float) -> None:
    if isinstance(per_hour, bool) or not isinstance(per_hour, (int, float)) or not per_hour >= 0:
        msg = f"per_hour must be a number, zero or more, not {per_hour!r}"
        raise UsageError(msg)

