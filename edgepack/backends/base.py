"""The Backend interface: everything edgepack needs to know about one engine.

The stages are plain functions over the frozen context and never name an engine: they ask the
target's backend (``backend_for(ctx.target)``) to build a candidate for a recipe, run a model on
this host, convert the chosen one, list the files that ship, write its runtime config and README
section, and say what the estimate stage should analyse. The recipe selection, the verify stage,
the metrics and the speed bar are shared by every backend.

A backend module imports only light modules at import time (``edgepack.target`` reads the backends
table to validate profiles); engine packages are imported inside its methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..judge import Judgement
    from ..model import LoadedModel
    from ..partition import Coverage
    from ..pipeline import Context, ModelState
    from ..records import Candidate, EstimateInputs, ShippedCoverage
    from ..shapes import ShapePlan
    from ..target import Recipe, TargetProfile

    Fail = Callable[[str, str], None]
    Variant = Callable[[dict | None, frozenset], Any]


MAX_REFINE_ATTEMPTS = 4  # mixed-precision candidates the selector asks for after a candidate fails its judgement


def onnx_ml_ops(loaded: LoadedModel) -> str:
    """The ai.onnx.ml operator types of a model, comma-separated ('' when it has none) - for engines without them."""
    return ", ".join(sorted(op.split(":", 1)[1] for op in loaded.info.op_histogram if op.startswith("ai.onnx.ml:")))


class Packaging(ABC):
    """What a backend's packaging stage decided (rendered as the manifest's ``reduced_build``)."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]: ...

    @abstractmethod
    def summary(self) -> str:
        """One line for ``edgepack build``'s summary."""


class Backend(ABC):
    """One engine. Subclasses set the class attributes and implement the methods."""

    name: str  # the profiles' ``runtime.engine``
    label: str  # in messages: "ONNX Runtime", "OpenVINO"
    execution_providers: tuple[str, ...]  # the profiles' ``runtime.execution_provider`` values it serves
    accelerator_providers: tuple[str, ...] = ()  # those that hand a graph's nodes to an NPU/GPU (CPU fallback)
    op_tables: tuple[str, ...]  # the profiles' ``runtime.op_table`` values it reads
    formats: tuple[str, ...]  # the profiles' ``conversion.format`` values it writes
    recipes: tuple[str, ...]  # the quantization recipes it implements, in the profiles' names
    package_stage: str  # the name of its packaging stage (stage tuple, manifest decisions)
    artifact_noun: str  # "it does not make the <noun> smaller"
    speed_reference: str  # "more than 10% slower than <reference> on the host"
    host_runtime: str  # what runs the shipped model on this host, for the build summary
    bundle_suffix: str  # the file suffix of the models a bundle of this engine ships (".ort", ".xml")
    runs_long: bool = False  # built first when targets build in parallel
    int8_on_host_kernels: bool = True  # int8 candidates are judged on this host's CPU int8 kernels (edgepack.cross)

    # ------------------------------------------------------------------ profiles and models

    @abstractmethod
    def check_profile(self, profile: TargetProfile, fail: Fail) -> None:
        """The engine's own consistency rules for a profile (its provider and format are checked
        against the class attributes first); ``fail(key, why)`` reports the first broken one."""

    def check_model(self, loaded: LoadedModel, profile: TargetProfile) -> None:
        """Refuse, before any work, a model the engine cannot import (StageError)."""

    def format_limit(self, profile: TargetProfile) -> tuple[int, str] | None:
        """(bytes, what limits them) that one shipped model file cannot exceed in this engine's format,
        planned before any stage runs (:mod:`edgepack.limits_plan`); None where the format has no such limit."""
        return None

    def foreign_errors(self) -> tuple[type[BaseException], ...]:
        """Exception types the engine raises for bad input, beyond the common ones of ``errors.py``."""
        return ()

    # ------------------------------------------------------------------ coverage

    @abstractmethod
    def inspect_coverage(self, loaded: LoadedModel, profile: TargetProfile, plan: ShapePlan,
                         variant: Variant) -> tuple[list[Coverage], list[str]]:
        """``inspect``'s coverage scenarios for a model and notes on what prepare would do.
        ``variant(shapes, decompose_ops)`` gives the prepared graph (shape-inferred proto, path, counts)."""

    def prepared_coverage(self, path: Path, profile: TargetProfile) -> ShippedCoverage | None:
        """Coverage of the prepared ONNX graph, where the engine's placement can be known from it."""
        return None

    def estimate_placement(self, model: Any, profile: TargetProfile) -> tuple[set[tuple], int, str]:
        """(keys of the main-graph nodes the accelerator runs, partitions, how that is known) for the
        latency estimate of a shape-inferred model; by default onnxruntime's partitioning of the
        profile's op table (NNAPI, Core ML), nothing for a CPU target."""
        from ..partition import placement

        keys, partitions = placement(model, profile, ort_checker_quirks=True)
        return keys, partitions, f"onnxruntime partitioning of the {profile.op_table} table"

    # ------------------------------------------------------------------ quantize: candidates

    def prepare_candidates(self, ctx: Context, m: ModelState, model_class: str, decisions: list[str],
                           host: dict) -> tuple[ModelState, Path]:
        """Work before the recipes are tried; returns the model state and the fp32 reference
        (the file a candidate's size and speed are compared with)."""
        return m, m.prepared  # type: ignore[return-value]

    def builds_ahead(self, ctx: Context, m: ModelState, model_class: str) -> bool:
        """Whether the first candidate may be built from ``m.prepared`` before the quantize stage (while
        the prepare stage's check runs: :func:`edgepack.stages.quantize.build_ahead`): only where
        :meth:`prepare_candidates` keeps ``m.prepared`` and :meth:`build_candidate` is memoized (the
        stage must find the work done, not do it twice). Default: no."""
        return False

    @abstractmethod
    def build_candidate(self, ctx: Context, m: ModelState, recipe: Recipe, model_class: str,
                        reference: Path) -> Candidate:
        """Apply ``recipe`` to ``m.prepared``, write the candidate into the work folder (StageError
        when the recipe cannot be applied to this model: the candidate is dropped)."""

    @abstractmethod
    def run(self, path: Path, inputs: list[dict], profile: TargetProfile) -> list[dict]:
        """Run a candidate on this host for each input; one {output name: array} per input."""

    def refine_candidate(self, ctx: Context, m: ModelState, recipe: Recipe, candidate: Candidate,
                         judgement: Judgement, attempt: int) -> Candidate | None:
        """A new candidate for ``recipe`` after ``candidate``'s converted artifact failed ``judgement``
        (:func:`edgepack.judge.check_artifact`): attempt 1, 2 ... up to MAX_REFINE_ATTEMPTS, each called with
        the previous attempt's candidate and judgement. Mixed precision keeps the nodes responsible in
        float. None: nothing more to try (the default)."""
        return None

    def speed_gate_applies(self, ctx: Context, recipe: Recipe) -> bool:
        """Whether a candidate of ``recipe`` for ``ctx.target`` passes the speed gate (:mod:`edgepack.speed_basis`):
        timed on the host where the host stands in for the target, else priced by the cost model."""
        return False

    def time_candidate(self, ctx: Context, m: ModelState, recipe: Recipe, candidate: Candidate,
                       reference: Path) -> dict | None:
        """The host speed gate's measurement ({"recipe", ..., "ratio"}), or None where it does not apply."""
        return None

    def chosen(self, ctx: Context, m: ModelState, candidate: Candidate, decisions: list[str]) -> ShippedCoverage | None:
        """After a candidate is chosen: its coverage (``m.coverage`` if unchanged) and any decisions."""
        return m.coverage

    # ------------------------------------------------------------------ convert, verify, package

    @abstractmethod
    def convert(self, ctx: Context, m: ModelState, decisions: list[str]) -> ModelState:
        """The chosen candidate becomes the shipped artifact (+ companions); conversion and coverage recorded."""

    @abstractmethod
    def run_shipped(self, ctx: Context, m: ModelState) -> list[dict]:
        """Run the shipped artifact exactly as the device's runtime will, on the held-out inputs."""

    def open_runner(self, path: Path, profile: TargetProfile) -> tuple[Callable[[dict], dict], dict, list]:
        """``path`` opened as :meth:`run_shipped` runs it, for the user's metric (``--eval``): a callable
        feed -> {output name: array}, {input name: dims (None where free)} and the output names."""
        from ..errors import StageError

        msg = f"--eval cannot run {self.label} bundles on this host"
        raise StageError(msg)

    def verified_on(self, profile: TargetProfile) -> str:
        """Words after 'verified against the fp32 original' naming where the check ran ('' for the default)."""
        return ""

    @abstractmethod
    def measure_shipped(self, ctx: Context, m: ModelState) -> dict:
        """Host latency of the fp32 original and the shipped artifact (build record only)."""

    @abstractmethod
    def package(self, ctx: Context, decisions: list[str]) -> tuple[dict[str, Path], Packaging]:
        """Runtime files of the bundle (bundle-relative name -> file in the work folder) and the record."""

    @abstractmethod
    def runtime_config(self, ctx: Context) -> dict[str, Any]:
        """The manifest's ``runtime`` block: how to open the models on the device."""

    def toolchain(self) -> dict[str, str]:
        """Versions of the engine's packages beyond onnx/onnxruntime/numpy (manifest ``toolchain``)."""
        return {}

    @abstractmethod
    def readme(self, ctx: Context) -> str:
        """The bundle's README.md."""

    @abstractmethod
    def estimate_inputs(self, ctx: Context, m: ModelState) -> EstimateInputs:
        """The graph (ONNX form) and files the estimate stage analyses for one model."""

    def host_runners(self, source: Path, artifact: Path, profile: TargetProfile,
                     threads: int = 1) -> list[tuple[str, str, Callable[[dict], Any]]]:
        """What ``compare`` times on this host for one shipped model, after every target is built:
        ``(key, what runs, run(feed))`` with key ``fp32`` (the fp32 original in onnxruntime CPU, the
        common yardstick), ``fp32_engine`` (the fp32 original in this engine, where that is not
        onnxruntime) and ``shipped``. Empty where this host cannot run the engine."""
        return []

    def emulation(self, profile: TargetProfile) -> dict | None:
        """``{"arch", "cpu"}`` when this host can run the target's own runtime build under user-mode
        emulation (:mod:`edgepack.emulator`), else None."""
        return None

    # ------------------------------------------------------------------ `edgepack verify BUNDLE`

    @abstractmethod
    def installed_version(self) -> str | None:
        """The engine's version on this machine, None when it is not installed."""

    def pin_problem(self, pinned: str | None, have: str) -> str | None:
        """A finding when the installed runtime cannot open what the pinned one wrote."""
        return None

    @abstractmethod
    def run_bundled(self, path: Path, session_config: dict[str, str], feed: dict, name: str) -> dict | None:
        """Load and run one model of a bundle (``session_config``: the manifest's checked runtime settings)
        under the run time limit (:mod:`edgepack.limits`); the engine's errors propagate. Returns
        {output name: array} (None when the engine cannot give them: the reference check is skipped)."""

    def measure_session(self, path: Path, checked: Any, threads: int) -> tuple[Callable[[dict], dict], dict]:
        """``verify --measure``: a run function for one model of a bundle with the bundle's own runtime
        and execution provider on this machine (``checked``: the manifest's type-checked fields), and
        what it is: {"runtime", "provider" (what runs), "requested" (what the bundle asks for),
        "threads", "note" (a fallback, said)}."""
        from ..errors import StageError

        msg = f"{self.label} bundles cannot be measured on this machine"
        raise StageError(msg)
