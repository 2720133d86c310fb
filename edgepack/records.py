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
    checked: str | None = None  # what was judged: the converted artifact ("model.ort"), when it got that far

    def decision(self, model: str) -> str:
        return f"{model}: {self.recipe} {self.outcome}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"recipe": self.recipe, "outcome": self.outcome, "reason": self.reason}
        if self.checked is not None:
            out["checked"] = self.checked
        if self.metrics:
            out["metrics"] = self.metrics
        return out


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
            "attempts": [a.to_json() for a in self.attempts],
        }


def tolerance_json(tolerance: Tolerance) -> dict[str, float]:
    """The tolerance's set figures, in declaration order."""
    return {k: v for k, v in asdict(tolerance).items() if v is not None}


@dataclass(frozen=True)
class Evidence:
    """The samples a verification rests on: where they came from, how many, and whether they are
    disjoint from the samples that calibrated the model (the split is recorded)."""

    source: str  # "calibration folder" | "generated inputs"
    samples: int  # verification samples
    disjoint: bool  # none of them calibrated the model
    split: dict | None = None  # {"total", "calibration", "verification", "rule", "held_out"}

    @property
    def generated(self) -> bool:
        return self.source == "generated inputs"

    @property
    def weak(self) -> bool:
        from .metrics.bars import MIN_EVIDENCE

        return self.samples < MIN_EVIDENCE or not self.disjoint

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "samples": self.samples, "disjoint_from_calibration": self.disjoint}
        if self.split is not None:
            out["split"] = self.split
        return out


VERIFIED, WEAK, NOT_VERIFIABLE, FAILED = "verified", "weakly verified", "not verifiable", "failed"


@dataclass(frozen=True)
class Verification:
    """The shipped artifact against the fp32 original, judged by :func:`edgepack.judge.judge` (the same
    judgement that chose the recipe). ``status``: verified, weakly verified (passed on fewer than 32
    samples, or samples that also calibrated), not verifiable (an output gave nothing to compare; the
    bundle ships marked so) - a failure never ships."""

    passed: bool
    inputs: tuple[str, ...]  # where the inputs came from (held-out calibration samples, generated inputs)
    tolerance: Tolerance
    outputs: dict  # per output: kind, status, bars and rounded metrics
    status: str = VERIFIED
    summary: str = ""
    evidence: Evidence | None = None
    checked: dict | None = None  # which file was run, with which runtime
    user_metric: dict | None = None  # --eval: fp32 value, the artifact's, the drop and its bar
    ran_on: dict | None = None  # --verify-on-target: the target's runtime build that judged it (edgepack.on_target)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "passed": self.passed, "summary": self.summary,
                               "inputs": list(self.inputs), "tolerance": tolerance_json(self.tolerance),
                               "outputs": self.outputs}
        if self.evidence is not None:
            out["evidence"] = self.evidence.to_json()
        if self.checked is not None:
            out["checked"] = self.checked
        if self.user_metric is not None:
            out["user_metric"] = self.user_metric
        if self.ran_on is not None:
            out["ran_on"] = self.ran_on
        return out


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
