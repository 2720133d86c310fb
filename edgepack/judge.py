"""The one judgement of a candidate: used by the recipe selection for every converted candidate and by
the verify stage for the shipped artifact - the same function, metrics and bars, so a value outside
tolerance is never reported as passing.

Per output, the metrics of its kind (:mod:`edgepack.metrics`) are checked against the bars of that kind
(:func:`edgepack.metrics.bars.bars_for`); an output whose fp32 values give nothing to compare is *not
verifiable* (never passed); NaN/Inf in a candidate always fails. The user's own metric (``--eval``) is
gated on its drop. :func:`check_artifact` runs an artifact on the verification inputs (once per file and
inputs across the targets of a build) and judges it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import StageError
from .gates import _as_array, compare_outputs, round_metrics
from .metrics.bars import BAR_OF, PRIMARY, bars_for
from .metrics.kinds import OutputKind
from .quiet import numeric
from .records import FAILED, NOT_VERIFIABLE, VERIFIED, WEAK, Evidence, Verification

PASSED = "passed"
_COMMON = ("cosine_min", "max_abs_err", "max_rel_err", "ref_max_abs", "samples", "nonfinite_values")


@dataclass(frozen=True)
class Judgement:
    status: str  # PASSED | FAILED | NOT_VERIFIABLE
    reason: str  # one line: the failing output, or a summary
    outputs: dict  # name -> {kind, kind_from, status, reason, bars, metrics...} (rounded)
    user_metric: dict | None = None

    @property
    def passed(self) -> bool:
        return self.status != FAILED


def _where(evidence: Evidence | None) -> str:
    if evidence is None:
        return ""
    return " with generated inputs" if evidence.generated else f" on the {evidence.samples} verification samples"


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _judge_output(name: str, kind: OutputKind, refs: list, cands: list, common: dict, tolerance,
                  evidence: Evidence | None) -> dict:
    from .metrics.measure import measure

    bars = bars_for(kind.kind, tolerance)
    entry = {"kind": kind.kind, "kind_from": kind.to_json()["from"]}
    if kind.user and kind.options:
        entry["kind_options"] = dict(sorted(kind.options.items()))
    entry.update({k: common[k] for k in _COMMON if k in common})
    if common.get("nonfinite_values"):
        why = f"output '{name}': {common['nonfinite_values']} NaN/Inf values"
        if common.get("reference_nonfinite_values"):  # the model itself overflows on these inputs
            why += (f" (the fp32 original gives {common['reference_nonfinite_values']} NaN/Inf values on the same inputs: "
                    "check the model and that its inputs are what it was made for)")
        entry.update(status=FAILED, reason=why, bars=bars)
        return entry
    metrics = measure(kind, refs, cands)
    why = metrics.pop("not_verifiable")
    entry.update(metrics)
    entry["bars"] = bars
    if why is not None:
        entry.update(status=NOT_VERIFIABLE, reason=f"output '{name}' ({kind.kind}) is not verifiable{_where(evidence)}: {why}")
        return entry
    for key, bar in bars.items():
        metric = BAR_OF[key][1]
        value = metrics.get(metric, common.get(metric))
        if value is None or not value >= bar:  # NaN does not pass
            shown = "none" if value is None else _fmt(value)
            entry.update(status=FAILED, reason=f"output '{name}' ({kind.kind}): {metric} {shown} < {bar} required "
                                               f"(n={metrics['n']} {metrics['unit']})")
            return entry
    primary = PRIMARY[kind.kind]
    entry.update(status=PASSED, reason=f"'{name}' {kind.kind}: {primary} {_fmt(metrics.get(primary))} "
                                       f"(n={metrics['n']} {metrics['unit']})")
    return entry


def _user(user: dict | None) -> tuple[str, str | None]:
    """(status, reason) of the user's metric."""
    if user is None or user.get("value") is None and "error" not in user:
        return PASSED, None
    if "error" in user:
        return FAILED, user["error"]
    bar = user.get("max_drop")
    if bar is not None and user["drop"] > bar:
        return FAILED, (f"{user['function']} dropped by {user['drop']:.6g} > {bar:g} allowed "
                        f"(fp32 {user['fp32']:.6g}, this {user['value']:.6g})")
    return PASSED, None


@numeric  # inf/NaN in hostile outputs are values here, not warnings on stderr
def judge(reference: list[dict], outputs: list[dict], kinds: dict[str, OutputKind], tolerance,
          evidence: Evidence | None = None, user: dict | None = None) -> Judgement:
    """Judge ``outputs`` (one {name: value} per verification input) against the fp32 ``reference``."""
    common = round_metrics(compare_outputs(reference, outputs))
    entries = {}
    for name in reference[0]:
        kind = kinds.get(name) or OutputKind("embedding", "no kind known: values compared by cosine")
        refs = [_as_array(r[name]) for r in reference]
        cands = [_as_array(c[name]) for c in outputs]
        entries[name] = round_metrics({name: _judge_output(name, kind, refs, cands, common[name], tolerance,
                                                           evidence)})[name]
    if user is not None and user.get("max_drop") is None:  # --max-accuracy-drop, else the recipe's bar
        user = {**user, "max_drop": tolerance.max_accuracy_drop}
    ustatus, ureason = _user(user)
    user_json = None
    if user is not None:
        user_json = round_metrics({"u": {k: v for k, v in user.items() if k != "error"}})["u"]
        if ustatus == FAILED:
            user_json["status"], user_json["reason"] = FAILED, ureason
    failed = [e["reason"] for e in entries.values() if e["status"] == FAILED] + ([ureason] if ustatus == FAILED else [])
    unverifiable = [e["reason"] for e in entries.values() if e["status"] == NOT_VERIFIABLE]
    if failed:
        return Judgement(FAILED, failed[0], entries, user_json)
    if unverifiable:
        return Judgement(NOT_VERIFIABLE, "; ".join(unverifiable), entries, user_json)
    parts = [e["reason"] for e in entries.values()]
    if user_json is not None and user_json.get("value") is not None:
        parts.append(f"{user_json['function']} {user_json['value']:.6g} (fp32 {user_json['fp32']:.6g})")
    head = "within tolerance" if len(entries) == 1 else f"all {len(entries)} outputs within tolerance"
    return Judgement(PASSED, f"{head}: " + "; ".join(parts), entries, user_json)


def status_of(judgement: Judgement, evidence: Evidence | None) -> str:
    if judgement.status == FAILED:
        return FAILED
    if judgement.status == NOT_VERIFIABLE:
        return NOT_VERIFIABLE
    return WEAK if evidence is None or evidence.weak else VERIFIED


def summary(judgement: Judgement, evidence: Evidence | None) -> str:
    """The console's and the manifest's one line: 'weakly verified, n=16: ...'."""
    status = status_of(judgement, evidence)
    n = evidence.samples if evidence else 0
    head = {VERIFIED: f"verified, n={n}", WEAK: f"weakly verified, n={n}", FAILED: f"failed, n={n}",
            NOT_VERIFIABLE: f"not verifiable{' with generated inputs' if evidence and evidence.generated else ''}, n={n}"}[status]
    if status == WEAK and evidence is not None:
        head += " generated inputs" if evidence.generated else ("" if evidence.disjoint else
                                                                " (the same samples calibrated the model)")
    return f"{head}: {judgement.reason}"


def verification(judgement: Judgement, m, tolerance, checked: dict) -> Verification:
    return Verification(judgement.passed, tuple(m.input_notes), tolerance, judgement.outputs,
                        status_of(judgement, m.evidence), summary(judgement, m.evidence), m.evidence, checked,
                        judgement.user_metric)


# ---------------------------------------------------------------------------------------------- running artifacts


def _file_key(ctx, *paths) -> str:
    if ctx.memo is None:
        return "|".join(str(p) for p in paths)
    return "|".join(ctx.memo.file_key(p) for p in paths if p.exists())


def _memo(ctx, key: tuple, compute):
    return compute() if ctx.memo is None else ctx.memo.get_or_compute(key, compute)


def checked_json(ctx, backend, m) -> dict:
    runtime = backend.host_runtime + backend.verified_on(ctx.target)
    if ctx.target.is_accelerator:
        runtime += f" ({ctx.target.execution_provider} itself does not run on this host: the artifact's nodes on the CPU)"
    return {"artifact": m.artifact.name, "runtime": runtime,
            "what": "the shipped artifact: every recipe was converted before it was judged, so the converted file's "
                    "check is the one that counts"}


def _user_value(ctx, backend, m) -> dict | None:
    metric = ctx.user_metric
    if metric is None or m.user_fp32 is None:
        return None
    from .user_eval import Runner

    def compute():
        try:
            run, shapes, names = backend.open_runner(m.artifact, ctx.target)
            runner = Runner(run, model=m.source.path.stem, what=f"the {m.recipe.name} artifact {m.artifact.name}",
                            engine=backend.host_runtime, input_shapes=shapes, output_names=names)
            return {"value": metric.value(runner)}
        except StageError as exc:
            return {"error": str(exc)}

    got = _memo(ctx, ("eval", metric.spec, _file_key(ctx, m.artifact, *m.companions), ctx.target.runtime_device),
                compute)
    out = {**metric.to_json(), "fp32": m.user_fp32, "max_drop": metric.max_drop, **got}
    if got.get("value") is not None:
        out["drop"] = metric.drop(m.user_fp32, got["value"])
    return out


def check_artifact(ctx, backend, m) -> Judgement:
    """Run ``m.artifact`` as the device's runtime will (on this host) on the verification inputs, and judge it
    with ``m.recipe.tolerance``. Runs are shared across the targets of a build (same file, same inputs)."""
    key = ("run", backend.name, backend.verified_on(ctx.target), _file_key(ctx, m.artifact, *m.companions),
           m.samples_key)
    outputs = _memo(ctx, key, lambda: backend.run_shipped(ctx, m))
    return judge(list(m.reference_outputs), outputs, m.kinds, m.recipe.tolerance, m.evidence,
                 _user_value(ctx, backend, m))
