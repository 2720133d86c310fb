"""Mixed precision for static int8: when the full int8 candidate fails its judgement, keep the parts
of the graph responsible in float (onnxruntime's ``nodes_to_exclude``) and quantize the rest, in at
most MAX_REFINE_ATTEMPTS candidates. Everything here is decided on calibration samples; the selector
judges each candidate on its held-out verification inputs, which this module never looks at.

The plan, made once per model and recipe (:func:`make_plan`; the build memo shares it between
targets that quantize alike, e.g. rpi4-cpu and rpi5-cpu):

1. **Output culprits**, always float (no weight bytes): a Concat that makes an output from inputs
   whose ranges differ MIX_RATIO-fold (YOLOv8's boxes 0..320 beside scores 0..1 - static int8 keeps
   it float from the first candidate on, :func:`.mixed_probe.range_mixing_outputs`), and a
   Softmax/LogSoftmax/Sigmoid that makes an output (probabilities in 1/255 steps).
2. **Calibration**: each of onnxruntime's methods in CALIBRATIONS calibrates once (onnxruntime's
   calibration cache keeps the ranges, so the many models below need no calibration runs). A
   per-tensor recipe on a CPU target also tries per-channel weights (:func:`_try_per_channel`).
3. **Sensitivity**: the graph, in topological order, is cut into SEGMENTS runs of nodes. Each run is
   quantized alone (the rest float) with each calibration's ranges and scored; the run keeps the
   calibration that scores best (its tensors' ranges come from that cache), its score and weight bytes.

The score (:mod:`.mixed_probe`) is a signal-to-quantization-noise ratio in dB against the fp32 model
on PROBE_SAMPLES calibration samples, worst watched value: the outputs (per Concat input where a
Concat makes one), or the logits a Softmax/Sigmoid culprit turns into an output.

Attempts, each built with onnxruntime's quantize_static from the cached ranges:
1. the culprits float, each run with its calibration, every weight int8 (when that differs from
   the candidate that failed, and scores MIN_PROBE_DB or more);
2, 3 ... aim STEP_DB above the last score, and at least MIN_PROBE_DB: the runs that bring the most
   weight bytes per unit of noise whose noises add up to the aim are quantized together and
   measured; the last goes back to float until the measurement meets the aim;
last: where no mix with MIN_QUANTIZED_SHARE of the weight bytes in int8 meets the aim, the most
   accurate mix that share allows (the size bound) if it reaches MIN_PROBE_DB; then nothing more.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx

from ...errors import StageError
from ...records import Candidate
from ...target import Recipe
from .mixed_probe import MIX_RATIO, Probe, concat_spans, merge_ranges, named_nodes, output_culprits, segment_nodes, weight_bytes

PROBE_SAMPLES = 8  # calibration samples every score is measured on
SEGMENTS = 12  # runs of nodes scored one at a time
STEP_DB = 6.0  # each later attempt aims this much higher (4x less noise)
MAX_EXTRA_PARTITIONS = 1  # accelerator targets: partitions a mix may add to full int8's
MIN_QUANTIZED_SHARE = 0.5  # below this share of the weight bytes in int8, ship fp32 instead
# A mix is offered only when its probe score reaches this (noise at 1% of the signal's power): the
# selector judges the mixes one after another on the same verification samples, and a noisy mix that
# passes them is mostly a lucky draw. Measured on the PP-OCRv5 recognizer (16 calibration samples, 56
# held-out lines; decoded text identical to fp32): 7.5 dB 40/56, 16.7 dB 52/56 and, from a 32-sample
# build, 17.1 dB 50/56 - the latter passed its 32 verification lines at 31/32 -; 24.3 dB 54/56, 26.3 dB 55/56.
MIN_PROBE_DB = 20.0
PER_CHANNEL_GAIN_DB = 1.0  # a per-tensor recipe's mixes take per-channel weights when they score this much better
# (method, extra options): onnxruntime's calibrations, cheapest first. Left out, measured on the
# PP-OCRv5 recognizer (onnxruntime 1.32, uint8 activations, 24 samples): Entropy gave a model bit for
# bit equal to MinMax's at about 3x the calibration time; CalibTensorRangeSymmetric halves the levels
# of every asymmetric activation (output SQNR 1.5 dB against MinMax's 6.3 dB, decoded 0/56 lines).
CALIBRATIONS = (("MinMax", {}), ("MinMax", {"CalibMovingAverage": True}), ("Percentile", {"CalibPercentile": 99.999}))


def _label(method: str, options: dict) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{method} ({extra})" if extra else method


def _db(value: float) -> float:
    return round(value, 1) if math.isfinite(value) else 999.0


@dataclass(frozen=True)
class Segment:
    index: int
    nodes: tuple[str, ...]
    weight_bytes: int
    alone_db: float  # score with only this segment quantized

    @property
    def noise(self) -> float:
        return 10 ** (-min(self.alone_db, 120.0) / 10)


@dataclass(frozen=True)
class Step:
    """One mixed candidate of the schedule: what stays float and how it scored on the probe."""

    exclude: tuple[str, ...]
    quantized: tuple[int, ...]  # segment indexes in int8
    score_db: float
    aim_db: float | None
    tries: int  # models built and scored to find it
    kind: str = "aim"  # "culprits" (attempt 1), "aim" (STEP_DB above the last), "size bound" (the most accurate mix)


@dataclass
class Plan:
    """What the attempts draw on (shared by the targets that quantize alike, through the build memo)."""

    pre: Path  # the quantizer's input, every node named
    folder: Path  # calibration caches and scratch models
    recipe: Recipe
    calibration: list[dict]
    is_accelerator: bool
    probe: Probe
    full: Path  # the full int8 candidate that failed
    notes: tuple[str, ...]  # its notes
    culprits: dict[str, str] = field(default_factory=dict)  # node -> why it stays float
    method: str = "MinMax"
    options: dict = field(default_factory=dict)
    cache: Path | None = None
    calibration_db: dict[str, float] = field(default_factory=dict)
    segments: tuple[Segment, ...] = ()
    total_bytes: int = 0
    full_db: float = 0.0
    base_db: float = 0.0  # culprits float, everything else int8, best calibration
    calibrations: tuple[tuple[str, dict], ...] = CALIBRATIONS  # as run (histogram methods strided)
    segment_calibration: tuple[int, ...] = ()  # index into calibrations, per segment
    seconds: float = 0.0
    base_partitions: int | None = None
    weights: dict | None = None  # a per-tensor recipe: both scores and the choice
    steps: list[Step] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # why each candidate failed (first: full int8)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def build(self, dst: Path, exclude, method: str | None = None, options: dict | None = None,
              cache: Path | None = None) -> dict:
        """Quantize ``pre`` into ``dst`` with ``exclude`` float (the plan's calibration unless given)."""
        from .quantize import quantize_qdq

        return quantize_qdq(self.pre, dst, self.recipe, self.calibration, is_accelerator=self.is_accelerator,
                            method=method or self.method, calib_options=self.options if options is None else options,
                            exclude=tuple(sorted(exclude)), cache=cache or self.cache)

    def score(self, exclude, name: str, **calibration) -> float:
        """The probe score of a model built with ``exclude`` float (the scratch file is removed)."""
        path = self.folder / name
        self.build(path, exclude, **calibration)
        try:
            return self.probe.score(path)
        finally:
            path.unlink()

    def exclude_for(self, quantized) -> set[str]:
        keep = {n for j in quantized for n in self.segments[j].nodes}
        return {n for s in self.segments for n in s.nodes} - keep | set(self.culprits)


@dataclass(frozen=True)
class MixedCandidate(Candidate):
    """A mixed candidate; the next attempt continues its plan."""

    plan: Plan | None = field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------------------------------- plan


def make_plan(folder: Path, prepared: Path, full: Path, recipe: Recipe, calibration: list[dict], *,
              is_accelerator: bool, notes: tuple[str, ...] = ()) -> Plan:
    """Culprits, calibration and segment sensitivity for ``prepared`` (see the module docstring)."""
    from .quantize import _quantizer_input

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    # at opset 13+ whatever the recipe says: per-channel weights are one of the things tried
    pre = named_nodes(_quantizer_input(prepared, folder / "mixed.onnx", True, []), folder / "named.onnx")
    model = onnx.load_model(str(pre), load_external_data=False)
    every = max(1, len(calibration) // PROBE_SAMPLES)
    feeds = calibration[::every][:PROBE_SAMPLES]
    culprits = output_culprits(model, concat_spans(pre, model, feeds), MIX_RATIO)
    probe = Probe.make(pre, feeds, model, culprits)
    plan = Plan(pre, folder, recipe, list(calibration), is_accelerator, probe, full, tuple(notes), culprits)
    plan.full_db = probe.score(full)
    caches = []
    stride = max(d for d in (4, 3, 2, 1) if len(calibration) % d == 0)
    # calibrators hold every activation of every sample at once: a few samples at a time, except for the
    # moving average, which strides would turn into an average weighted towards the first samples
    plan.calibrations = tuple((method, options if options.get("CalibMovingAverage") else
                               {**options, "CalibStridedMinMax": stride}) for method, options in CALIBRATIONS)
    for i, (method, options) in enumerate(plan.calibrations):
        caches.append(folder / f"ranges-{i}.json")
        plan.calibration_db[_label(method, options)] = plan.score(plan.culprits, f"calibration-{i}.onnx", method=method,
                                                                  options=options, cache=caches[-1])
    if not recipe.per_channel and not is_accelerator:
        _try_per_channel(plan, caches[0])
    sizes = weight_bytes(model)
    runs = segment_nodes(model, set(plan.culprits), SEGMENTS)
    plan.segments = tuple(Segment(j, tuple(nodes), sum(sizes.get(n, 0) for n in nodes), 0.0) for j, nodes in enumerate(runs))
    plan.total_bytes = sum(s.weight_bytes for s in plan.segments)
    if all(c.is_file() for c in caches):  # onnxruntime keeps ranges: each segment takes its best calibration
        scored = [_best_calibration(plan, s, caches) for s in plan.segments]
        plan.segments = tuple(s for s, _ in scored)
        plan.cache = merge_ranges(folder / "ranges-mixed.json", caches, model, [(s.nodes, i) for s, i in scored])
        plan.method, plan.options = CALIBRATIONS[0]
        plan.segment_calibration = tuple(i for _, i in scored)
    else:  # no calibration cache in this onnxruntime: one calibration for the whole graph
        best = max(range(len(CALIBRATIONS)), key=lambda i: (list(plan.calibration_db.values())[i], -i))
        plan.method, plan.options = plan.calibrations[best]
        plan.segments = tuple(replace(s, alone_db=plan.score(plan.exclude_for((s.index,)), f"segment-{s.index}.onnx"))
                              for s in plan.segments)
        plan.segment_calibration = (best,) * len(plan.segments)
    plan.base_db = plan.score(plan.culprits, "base.onnx")
    plan.seconds = time.perf_counter() - start
    return plan


def _try_per_channel(plan: Plan, cache: Path) -> None:
    """A per-tensor recipe: per-channel weights instead, when they score PER_CHANNEL_GAIN_DB better (weights
    whose channels differ in range lose most of their levels to one scale). Not on accelerator targets,
    whose profile may say per-tensor for its hardware."""
    method, options = plan.calibrations[0]
    per_tensor = next(iter(plan.calibration_db.values()))
    per_channel = replace(plan.recipe, per_channel=True)
    tensor_recipe, plan.recipe = plan.recipe, per_channel
    gained = plan.score(plan.culprits, "per-channel.onnx", method=method, options=options, cache=cache)
    plan.weights = {"per_tensor_db": _db(per_tensor), "per_channel_db": _db(gained)}
    if gained < per_tensor + PER_CHANNEL_GAIN_DB:
        plan.recipe = tensor_recipe
    plan.weights["chosen"] = "per-channel" if plan.recipe.per_channel else "per-tensor (as the recipe says)"


def _switched(plan: Plan) -> bool:
    return plan.weights is not None and plan.recipe.per_channel


def _best_calibration(plan: Plan, segment: Segment, caches: list[Path]) -> tuple[Segment, int]:
    """The segment scored alone with each calibration's ranges; the best (a tie keeps the earlier)."""
    best = None
    for i, (method, options) in enumerate(plan.calibrations):
        score = plan.score(plan.exclude_for((segment.index,)), f"segment-{segment.index}-{i}.onnx", method=method,
                           options=options, cache=caches[i])
        if best is None or score > best[0] + 0.05:
            best = (score, i)
    return replace(segment, alone_db=best[0]), best[1]


def _share(plan: Plan, quantized) -> float:
    return sum(plan.segments[j].weight_bytes for j in quantized) / plan.total_bytes if plan.total_bytes else 0.0


def _knapsack(plan: Plan, aim_db: float, k: int, last_db: float) -> Step | None:
    """The segments worth the most weight bytes per unit of noise whose noises add up to at most the
    aim's, measured together; the last one goes back to float until the measurement meets the aim.
    Where no mix within MIN_QUANTIZED_SHARE meets the aim: the most accurate mix that share allows,
    if it beats ``last_db``."""
    budget = 10 ** (-aim_db / 10)
    ranked = sorted(plan.segments, key=lambda s: (-s.weight_bytes / max(s.noise, 1e-12), s.index))
    chosen: list[int] = []
    spent = 0.0
    for s in ranked:
        if spent + s.noise <= budget:
            chosen.append(s.index)
            spent += s.noise
    tries = 0
    while chosen and _share(plan, chosen) >= MIN_QUANTIZED_SHARE:
        tries += 1
        quantized = tuple(sorted(chosen))
        exclude = plan.exclude_for(quantized)
        score = plan.score(exclude, f"step-{k}-{tries}.onnx")
        if score >= aim_db:
            return Step(tuple(sorted(exclude)), quantized, score, aim_db, tries)
        chosen.pop()
    bound: list[int] = []  # the size bound: as few segments as reach MIN_QUANTIZED_SHARE, least noise per byte first
    for s in ranked:
        if plan.total_bytes and _share(plan, bound) >= MIN_QUANTIZED_SHARE:
            break
        bound.append(s.index)
    quantized = tuple(sorted(bound))
    if not quantized or any(step.quantized == quantized for step in plan.steps):
        return None
    exclude = plan.exclude_for(quantized)
    score = plan.score(exclude, f"step-{k}-bound.onnx")
    if score < MIN_PROBE_DB or score <= last_db + 1.0:
        return None
    return Step(tuple(sorted(exclude)), quantized, score, None, tries + 1, "size bound")


def next_step(plan: Plan, attempt: int, verdict_reason: str) -> Step | None:
    """Step ``attempt`` of the schedule (computed on first use; the same for every target)."""
    with plan.lock:
        while len(plan.verdicts) < attempt:
            plan.verdicts.append(verdict_reason)
        while len(plan.steps) < attempt:
            k = len(plan.steps) + 1
            if k == 1 and (plan.culprits or any(plan.segment_calibration) or _switched(plan)) and plan.base_db >= MIN_PROBE_DB:
                everything = tuple(sorted(set(plan.culprits)))
                step = Step(everything, tuple(s.index for s in plan.segments), plan.base_db, None, 0, "culprits")
            else:
                last = plan.steps[-1].score_db if plan.steps else plan.base_db
                step = _knapsack(plan, max(min(last, 120.0) + STEP_DB, MIN_PROBE_DB), k, last)
            if step is None:
                return None
            plan.steps.append(step)
        return plan.steps[attempt - 1]


# ---------------------------------------------------------------------------------------- record


def record(plan: Plan, attempt: int) -> dict:
    """The manifest's account of a mixed candidate: what stays float, why, and the attempts before it."""
    step = plan.steps[attempt - 1]
    floating = [s for s in plan.segments if s.index not in step.quantized]
    out = {
        "why": f"full static int8 failed its judgement ({plan.verdicts[0]})",
        "attempt": attempt,
        "probe": {"samples": plan.probe.samples, "what": "calibration samples (never the verification inputs)",
                  "score": "SQNR in dB of the outputs against the fp32 model, worst output; an output a Concat "
                           "makes is scored per Concat input"},
        "calibration": {"full_int8_probe_db": {k: _db(v) for k, v in plan.calibration_db.items()},
                        "per_segment": [_label(*plan.calibrations[i]) for i in plan.segment_calibration]},
        **({"weights": plan.weights} if plan.weights else {}),
        "float_culprits": [{"node": n, "why": w} for n, w in sorted(plan.culprits.items())],
        "float_segments": [_segment_json(s) for s in floating],
        "quantized_segments": [_segment_json(plan.segments[j]) for j in step.quantized],
        "segments": len(plan.segments),
        "float_nodes": len(step.exclude),
        "quantized_weight_share": round(_share(plan, step.quantized), 4),
        "probe_db": _db(step.score_db),
        "probe_floor_db": MIN_PROBE_DB,
        "step": {"culprits": "output culprits float, each segment with its best calibration, every segment int8",
                 "aim": f"the mix that brings the most weight bytes to int8 for a probe score of at least "
                        f"{_db(step.aim_db or 0.0)} dB ({STEP_DB:g} dB above the previous attempt)",
                 "size bound": f"the most accurate mix with at least {MIN_QUANTIZED_SHARE:.0%} of the weight bytes "
                               "in int8 (no mix reached the next aim)"}[step.kind],
        "full_int8_probe_db": _db(plan.full_db),
        "culprits_float_probe_db": _db(plan.base_db),
        "previous_attempts": [{"attempt": i + 1, "float_nodes": len(s.exclude), "probe_db": _db(s.score_db),
                               "judgement": plan.verdicts[i + 1]} for i, s in enumerate(plan.steps[:attempt - 1])],
    }
    return out


def _segment_json(s: Segment) -> dict:
    return {"segment": s.index, "nodes": len(s.nodes), "first": s.nodes[0], "last": s.nodes[-1],
            "weight_bytes": s.weight_bytes, "alone_db": _db(s.alone_db)}


def _split_refusal(plan: Plan, path: Path, profile) -> str | None:
    """Why an accelerator mix is refused: its float islands add more than MAX_EXTRA_PARTITIONS
    accelerator partitions to full int8's (each switch between the accelerator and the CPU costs
    a copy of the tensors that cross it)."""
    from ...partition import coverage_summary

    if plan.base_partitions is None:
        plan.base_partitions = coverage_summary(plan.full, profile).partitions
    partitions = coverage_summary(path, profile).partitions
    if partitions > plan.base_partitions + MAX_EXTRA_PARTITIONS:
        return (f"its float nodes split the graph into {partitions} {profile.execution_provider} partitions "
                f"(full int8: {plan.base_partitions}; at most {MAX_EXTRA_PARTITIONS} more accepted)")
    return None


def _plan(ctx, m, recipe, candidate) -> Plan:
    def compute() -> Plan:
        if ctx.memo is None:
            folder = ctx.work / f"{m.name}.mixed"
        else:
            folder = ctx.memo.folder / f"mixed-{ctx.memo.file_key(m.prepared)[:16]}-{int(ctx.target.is_accelerator)}"
        return make_plan(folder, m.prepared, candidate.path, recipe, list(m.calibration),
                         is_accelerator=ctx.target.is_accelerator, notes=candidate.notes)

    if ctx.memo is None:
        return compute()
    key = ("mixed-plan", ctx.memo.file_key(m.prepared), recipe.name, recipe.activation_type, recipe.weight_type,
           recipe.per_channel, ctx.target.is_accelerator, id(m.calibration))
    return ctx.memo.get_or_compute(key, compute)


def refine(ctx, m, recipe, candidate, judgement, attempt: int):
    """The mixed candidate of ``attempt`` (see the module docstring), or None when the schedule is done."""
    from .quantize import _model_bytes, _op_counts

    plan = candidate.plan if isinstance(candidate, MixedCandidate) else _plan(ctx, m, recipe, candidate)
    step = next_step(plan, attempt, judgement.reason)
    if step is None:
        return None
    dst = ctx.work / f"{m.name}.{recipe.name}.mixed{attempt}.onnx"
    settings = plan.build(dst, step.exclude)
    if ctx.target.is_accelerator:
        refusal = _split_refusal(plan, dst, ctx.target)
        if refusal:
            msg = f"mixed candidate refused: {refusal}"
            raise StageError(msg)
    settings["mixed_precision"] = record(plan, attempt)
    share = settings["mixed_precision"]["quantized_weight_share"]
    note = (f"mixed precision: {len(step.exclude)} node(s) kept float ({len(plan.culprits)} output culprit(s), "
            f"{len(plan.segments) - len(step.quantized)} of {len(plan.segments)} segments); {share:.0%} of the "
            "weight bytes in int8")
    return MixedCandidate(recipe.name, dst, settings, (*plan.notes, note), _op_counts(dst), candidate.bytes_fp32,
                          _model_bytes(dst), None, plan)
