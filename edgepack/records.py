"""The typed records that move between stages; the manifest is rendered from them at the end.

A backend writes files and returns these; the stages pass them on; ``render.manifest`` turns them
into JSON. Measured values (host timings) never enter a record that is rendered into a bundle:
they go to the build record beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .partition import Coverage, UnsupportedGroup
    from .target import Tolerance

SKIPPED, DROPPED, CHOSEN = "skipped", "dropped", "chosen"


@dataclass(frozen=True)
class Candidate:
    """One recipe applied by a backend: the file it wrote (the fp32 model too, for recipe 'none')."""

    recipe: str
    path: Path
    settings: dict[str, Any]
    notes: tuple[str, ...]
    ops_after: dict[str, int]
    bytes_fp32: int  # the fp32 model it was made from (in the same form: ONNX or IR)
    bytes_after: int
    empty: str | None = None  # why the recipe changed nothing (e.g. "the quantizer found nothing to quantize")


@dataclass(frozen=True)
class Attempt:
    """What happened to one recipe of the profile for one model: skipped, dropped or chosen, and why."""

    recipe: str
    outcome: str  # SKIPPED | DROPPED | CHOSEN
    reason: str
    metrics: dict | None = None  # accuracy against fp32, when it got that far
    host_latency: dict | None = None  # the speed gate's measurement, when it applies (build record only)

    def decision(self, model: str) -> str:
        return f"{model}: {self.recipe} {self.outcome}: {self.reason}"


@dataclass(frozen=True)
class RecipeChoice:
    """The recipe a model ships with, and the evidence it was chosen on."""

    name: str
    why: str  # the profile's reason for the recipe
    tolerance: Tolerance
    settings: dict[str, Any]
    model_class: str
    bytes_fp32: int
    bytes_quantized: int
    ops_after: dict[str, int]
    notes: tuple[str, ...]
    candidate_metrics: dict
    attempts: tuple[Attempt, ...] = field(default=(), compare=False)

    @property
    def precision(self) -> str:
        from .target import PRECISION_OF

        return PRECISION_OF.get(self.name, "fp32")

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.name,
            "why": self.why,
            "tolerance": tolerance_json(self.tolerance),
            "settings": self.settings,
            "model_class": self.model_class,
            "bytes_fp32": self.bytes_fp32,
            "bytes_quantized": self.bytes_quantized,
            "ops_after": self.ops_after,
            "notes": list(self.notes),
            "candidate_metrics": self.candidate_metrics,
        }


def tolerance_json(tolerance: Tolerance) -> dict[str, float]:
    """The tolerance's set figures, in declaration order."""
    return {k: v for k, v in asdict(tolerance).items() if v is not None}


@dataclass(frozen=True)
class Verification:
    """The shipped artifact against the fp32 original (a failure stops the build, so it passed)."""

    passed: bool
    inputs: tuple[str, ...]  # where the inputs came from (held-out calibration samples, generated inputs)
    tolerance: Tolerance
    outputs: dict  # per output: rounded metrics

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "inputs": list(self.inputs), "tolerance": tolerance_json(self.tolerance),
                "outputs": self.outputs}


@dataclass(frozen=True)
class ShippedCoverage:
    """Which nodes of a shipped model the target's accelerator (or runtime plugin) takes."""

    nodes_total: int
    nodes_on_accelerator: int
    partitions: int
    partition_sizes: tuple[int, ...]
    unsupported: tuple[UnsupportedGroup, ...] = ()
    note: str | None = None

    @classmethod
    def of(cls, cov: Coverage) -> ShippedCoverage:
        return cls(cov.nodes_total, cov.nodes_supported, cov.partitions, tuple(cov.partition_sizes), tuple(cov.unsupported))

    @classmethod
    def whole_graph(cls, nodes: int, note: str) -> ShippedCoverage:
        return cls(nodes, nodes, 1, (nodes,), (), note)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nodes_total": self.nodes_total, "nodes_on_accelerator": self.nodes_on_accelerator,
                               "partitions": self.partitions, "partition_sizes": list(self.partition_sizes),
                               "unsupported": [u.to_json() for u in self.unsupported]}
        if self.note is not None:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class EstimateInputs:
    """What a backend hands the estimate stage for one model: the graph to analyse (ONNX form), the
    shipped files to size, and its operator config (None: count the graph's op types)."""

    graph: Path
    artifacts: tuple[Path, ...]
    ops_config: Path | None = None
