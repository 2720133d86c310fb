"""The build pipeline: a frozen context flows through an explicit tuple of stages.

Each stage is a plain function ``stage(ctx) -> ctx``. It reads its input model from a file in the
work folder and writes its result to a new file there, so every intermediate model can be opened
and run on its own. ``run_stages`` wraps every stage the same way: timing, logging, mapping foreign
errors to ours, and recording the decisions the stage made.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .errors import EdgepackError, InternalError, StageError, first_line, foreign_error_types
from .model import LoadedModel, TensorSpec
from .runtime.host import peak_rss_mb, return_freed_memory_if_large
from .target import TargetProfile

if TYPE_CHECKING:
    from .backends import Packaging
    from .estimate import BundleEstimates
    from .records import Evidence, RecipeChoice, ShippedCoverage, Verification
    from .user_eval import UserMetric

log = logging.getLogger("edgepack")


@dataclass(frozen=True)
class StageRecord:
    stage: str
    seconds: float
    decisions: tuple[str, ...]
    peak_rss_mb: float | None = None  # the process's peak RSS so far, read when the stage ended
    cpu_seconds: float | None = None  # CPU time of the process (all its threads: with --jobs > 1, other targets too)

    def to_json(self) -> dict:
        out = {"stage": self.stage, "seconds": round(self.seconds, 3), "peak_rss_mb": self.peak_rss_mb,
               "decisions": list(self.decisions)}
        if self.cpu_seconds is not None:  # on a shared host wall seconds say how busy it was; CPU seconds the work
            out["cpu_seconds"] = round(self.cpu_seconds, 3)
        return out


@dataclass(frozen=True)
class ModelState:
    """One model of a bundle, as it moves through the stages."""

    name: str  # artifact stem inside the bundle ("model" for a single-model bundle)
    source: LoadedModel
    current: Path  # the model file the next stage reads
    reference_outputs: tuple[dict[str, np.ndarray], ...] = ()
    verify_inputs: tuple[dict[str, np.ndarray], ...] = ()
    calibration: tuple[dict[str, np.ndarray], ...] = ()
    input_notes: tuple[str, ...] = ()
    shapes: dict[str, tuple[int | str | None, ...]] = field(default_factory=dict)
    fixed_shapes: bool = False
    prepared: Path | None = None  # fp32 model after prepare (the speed reference)
    model_class: str | None = None
    recipe: RecipeChoice | None = None  # the quantization recipe chosen, and why
    coverage: ShippedCoverage | None = None  # None: a CPU target, the whole graph on the CPU
    artifact: Path | None = None  # the shipped file (.ort or .xml)
    companions: tuple[Path, ...] = ()  # files shipped beside it (.bin)
    analysis_only: tuple[Path, ...] = ()  # files made from it that do not ship (the applied .ort for the op config)
    conversion: Any = None  # the backend's conversion record (to_json())
    verification: Verification | None = None
    weight_only_int8: bool = False  # prepare kept weight-only int8 as DequantizeLinear
    estimates: BundleEstimates | None = None  # size, latency, energy on the target device (estimated)
    kinds: dict = field(default_factory=dict)  # output name -> metrics.kinds.OutputKind
    evidence: Evidence | None = None  # what the verification samples are (split recorded)
    samples_key: str = ""  # names the verification inputs (memo keys of runs on them)
    user_fp32: float | None = None  # --eval on the fp32 original
    conversion_notes: tuple[str, ...] = ()  # the chosen artifact's conversion decisions (the convert stage records them)
    preprocessing: dict | None = None  # how an image becomes the input (the calibration folder's preprocess.toml)
    unfit: dict = field(default_factory=dict)  # recipe -> why its shipped form exceeds the format's limit (edgepack.limits_plan)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.source.info.inputs

    @property
    def real_samples(self) -> bool:
        """Whether its samples come from a calibration folder (also for targets that calibrate on none)."""
        return bool(self.calibration) or (self.evidence is not None and not self.evidence.generated)


@dataclass(frozen=True)
class Context:
    target: TargetProfile
    work: Path  # this target's work folder (system temp)
    models: tuple[ModelState, ...]
    records: tuple[StageRecord, ...] = ()
    files: dict[str, Path] = field(default_factory=dict)  # bundle-relative name -> file in work
    package: Packaging | None = None  # what the backend's packaging stage decided
    # timings and host latencies: they vary run to run, so they go to the build record beside the
    # bundle, never into it (bundles are byte-identical from build to build)
    measurements: dict[str, Any] = field(default_factory=dict)
    per_hour: float = 1000.0  # inferences per hour, for battery and energy-per-hour estimates
    memo: "Memo | None" = field(default=None, compare=False)  # work shared across the targets of a build
    user_metric: UserMetric | None = None  # --eval
    verify_on_target: bool = False  # --verify-on-target: the shipped artifact also judged on the target's own runtime

    def with_models(self, models: list[ModelState] | tuple[ModelState, ...]) -> "Context":
        return replace(self, models=tuple(models))

    def add_files(self, named: dict[str, Path]) -> "Context":
        return replace(self, files={**self.files, **named})

    def measure(self, key: str, value: Any) -> "Context":
        return replace(self, measurements={**self.measurements, key: value})


Stage = Callable[[Context, list], Context]


class Memo:
    """Work shared between the targets of one build: the same inputs and settings give the same
    result, so it is computed once (a lock per key lets a second target wait instead of redoing it).
    Files are kept in ``folder``, which lives as long as the build."""

    def __init__(self, folder: Path):
        import threading

        self.folder = folder
        self._values: dict = {}
        self._locks: dict = {}
        self._guard = threading.Lock()

    def get_or_compute(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._guard:
            lock = self._locks.setdefault(key, __import__("threading").Lock())
        with lock:
            if key not in self._values:
                self._values[key] = compute()
            return self._values[key]

    def file_key(self, path: Path) -> str:
        from .model import sha256_file

        return sha256_file(path)


def _foreign(ctx: Context) -> tuple[type[BaseException], ...]:
    from .backends import backend_for

    return foreign_error_types(backend_for(ctx.target).foreign_errors())


def _at(exc: EdgepackError, ctx: Context, stage: str, reason: str) -> EdgepackError:
    """``exc`` with the target, stage and reason it failed in (build reports each failed target by them)."""
    exc.target, exc.stage, exc.reason = ctx.target.name, stage, reason  # type: ignore[attr-defined]
    return exc


def run_stages(ctx: Context, stages: tuple[tuple[str, Stage], ...], progress: Callable[[str], None] | None = None) -> Context:
    """Run ``stages`` in order; each gets the context and a list to append its decisions to.

    Our own errors get the target and stage in front; the known foreign error types become a
    StageError; any other exception is a bug (InternalError), never reported as bad input.
    """
    for name, stage in stages:
        if progress:
            progress(f"{ctx.target.name}: {name}")
        decisions: list[str] = []
        start = time.perf_counter()
        cpu_start = time.process_time()
        try:
            ctx = stage(ctx, decisions)
        except EdgepackError as exc:
            text = str(exc)
            msg = text if text.startswith(ctx.target.name) else f"{ctx.target.name}: {name}: {text}"
            raise _at(type(exc)(msg), ctx, name, text.removeprefix(f"{ctx.target.name}: ")) from exc
        except MemoryError as exc:
            raise _at(StageError(f"{ctx.target.name}: {name}: out of memory"), ctx, name, "out of memory") from exc
        except Exception as exc:  # noqa: BLE001 - sorted below: a known foreign error, or a bug
            log.debug("stage %s failed", name, exc_info=True)
            if not isinstance(exc, _foreign(ctx)):
                raise InternalError(f"{ctx.target.name}: {name}", exc) from exc
            reason = f"{type(exc).__name__}: {first_line(exc)}"
            raise _at(StageError(f"{ctx.target.name}: {name}: {reason}"), ctx, name, reason) from exc
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
        return_freed_memory_if_large()
        log.info("%s: %s done in %.2fs", ctx.target.name, name, seconds)
        ctx = replace(ctx, records=(*ctx.records, StageRecord(name, seconds, tuple(decisions), peak_rss_mb(),
                                                              cpu_seconds)))
    return ctx
