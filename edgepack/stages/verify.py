"""Verify a candidate model against the fp32 original: outputs, accuracy gates, host latency.

Pure helpers used by the verify stage: run a model on the host CPU, compare its outputs
with the reference, check them against a recipe's tolerance, and time both models with
interleaved runs so their ratio is robust to machine noise. Input generation and
calibration loading live in :mod:`edgepack.stages.calibration` (re-exported here).
"""

from __future__ import annotations


import platform
import time
from pathlib import Path

import numpy as np

from ..errors import StageError, first_line
from ..limits import run_ort
from ..pipeline import return_freed_memory
from ..quiet import numeric, ort_severity
from ..target import Tolerance
from .calibration import generate_inputs, load_calibration, split_calibration

__all__ = [
    "compare_latency",
    "compare_outputs",
    "generate_inputs",
    "host_cpu",
    "load_calibration",
    "measure_latency",
    "passes",
    "run_model",
    "split_calibration",
]


# ------------------------------------------------------------------------------ metrics


def _is_classifier(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and shape[-1] > 1


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _compare_one(name: str, refs: list[np.ndarray], cands: list[np.ndarray]) -> dict:
    cosines, max_abs, max_ref, nonfinite = [], 0.0, 0.0, 0
    agree = total = 0
    classifier = all(_is_classifier(r.shape) for r in refs)
    for i, (r, c) in enumerate(zip(refs, cands)):
        if r.shape != c.shape:
            msg = f"output '{name}' sample {i}: candidate shape {list(c.shape)} differs from reference {list(r.shape)}"
            raise StageError(msg)
        rf = np.asarray(r, dtype=np.float64).ravel()
        cf = np.asarray(c, dtype=np.float64).ravel()
        bad = int(np.count_nonzero(~np.isfinite(cf)))
        nonfinite += bad
        if bad:
            cosines.append(0.0)
            continue
        cosines.append(_cosine(rf, cf))
        if rf.size:
            max_abs = max(max_abs, float(np.max(np.abs(rf - cf))))
            max_ref = max(max_ref, float(np.max(np.abs(rf))))
        if classifier:
            agree += int(np.count_nonzero(np.argmax(r, axis=-1) == np.argmax(c, axis=-1)))
            total += r.shape[0]
    out: dict = {
        "cosine_min": min(cosines) if cosines else 1.0,
        "max_abs_err": None if nonfinite else max_abs,
        "max_rel_err": None if nonfinite else (max_abs / max_ref if max_ref > 0 else max_abs),
        "ref_max_abs": max_ref,
        "top1_agreement": (agree / total if total else None) if classifier else None,
        "samples": len(refs),
    }
    if nonfinite:
        out["nonfinite_values"] = nonfinite
    return out


def _as_array(value) -> np.ndarray:
    """Outputs as arrays; a sequence of maps (scikit-learn's ZipMap) becomes rows of values by sorted key."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float64)
    return np.asarray(value)


def scaled_error(metrics: dict) -> float:
    """Largest output error relative to max(|reference|, 1).

    The unit floor keeps float32 rounding of tiny outputs (a sigmoid map near 1e-5) from reading
    as a large relative change; outputs of magnitude above 1 are judged fully relatively.
    """
    worst = 0.0
    for m in metrics.values():
        if m.get("max_abs_err") is None:
            return float("inf")
        worst = max(worst, m["max_abs_err"] / max(m.get("ref_max_abs") or 0.0, 1.0))
    return worst


FP32_EQUAL = 1e-5  # outputs within this scaled error are numerically the fp32 model


def accept(metrics: dict, tolerance) -> tuple[bool, str]:
    """``passes``, except that outputs equal to the reference within FP32_EQUAL always pass
    (cosine is unstable on near-constant outputs, e.g. a detector's map on random inputs)."""
    ok, why = passes(metrics, tolerance)
    if not ok and scaled_error(metrics) <= FP32_EQUAL:
        return True, f"outputs equal to the fp32 original within {FP32_EQUAL:g} of max(|output|, 1) ({why})"
    return ok, why


@numeric  # inf/NaN in hostile outputs are values here, not warnings on stderr
def compare_outputs(ref: list[dict[str, np.ndarray]], cand: list[dict[str, np.ndarray]]) -> dict:
    """Per output name: cosine_min, max_abs_err, max_rel_err (to max |ref|), top1_agreement (classifiers)."""
    if len(ref) != len(cand):
        msg = f"reference has {len(ref)} samples but the candidate {len(cand)}"
        raise StageError(msg)
    if not ref:
        msg = "no samples to compare"
        raise StageError(msg)
    metrics = {}
    for name in ref[0]:
        if any(name not in c for c in cand):
            msg = f"candidate model has no output '{name}'"
            raise StageError(msg)
        metrics[name] = _compare_one(name, [_as_array(r[name]) for r in ref], [_as_array(c[name]) for c in cand])
    return metrics


def passes(metrics: dict, tolerance: Tolerance, *, accuracy_drop: float | None = None) -> tuple[bool, str]:
    """(ok, reason) for per-output ``metrics`` against ``tolerance``; the reason names the failing output.

    ``accuracy_drop`` (reference accuracy minus candidate accuracy on labelled data) is checked
    against ``tolerance.max_accuracy_drop`` when both are given.
    """
    for name, m in metrics.items():
        if m.get("nonfinite_values"):
            return False, f"output '{name}': {m['nonfinite_values']} NaN/Inf values in the candidate's outputs"
        if not m["cosine_min"] >= tolerance.cosine_min:  # NaN (inf in the outputs) does not pass
            return False, f"output '{name}': cosine_min {m['cosine_min']:.6f} < {tolerance.cosine_min} required"
        top1 = m.get("top1_agreement")
        if tolerance.top1_agreement_min is not None and top1 is not None and top1 < tolerance.top1_agreement_min:
            return False, f"output '{name}': top1_agreement {top1:.4f} < {tolerance.top1_agreement_min} required"
    if accuracy_drop is not None and tolerance.max_accuracy_drop is not None and accuracy_drop > tolerance.max_accuracy_drop:
        return False, f"accuracy drop {accuracy_drop:.4f} > {tolerance.max_accuracy_drop} allowed"
    worst = min(metrics.items(), key=lambda kv: kv[1]["cosine_min"]) if metrics else None
    if worst is None:
        return True, "no outputs to check"
    return True, f"all {len(metrics)} outputs within tolerance (lowest cosine {worst[1]['cosine_min']:.6f} on '{worst[0]}')"


# ------------------------------------------------------------------------------ running


MAX_RUNS = 400
SEQUENTIAL_ABOVE_BYTES = 256 * 2**20  # two models this large together are timed one after the other


def _model_bytes_on_disk(path: Path) -> int:
    """A model file's bytes plus its external data files (same folder, referenced by name)."""
    path = Path(path)
    total = path.stat().st_size
    for extra in path.parent.glob(path.name + ".data"):
        total += extra.stat().st_size
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load_model(str(path), load_external_data=False)
        locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        total += sum((path.parent / loc).stat().st_size for loc in locations
                     if (path.parent / loc).is_file() and loc != path.name + ".data")
    return total
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def host_settings(profile) -> dict:
    """Session settings that make a host measurement of ``profile``'s model fair: the target's
    optimization level (a Pi build is optimized at 'extended' for arm, so the host must not add
    x86-only NCHWc layouts to the fp32 side), basic for accelerator targets' CPU fallback."""
    level = "basic" if profile.optimization_style == "runtime" else profile.optimization_level
    disabled = ["NchwcTransformer"] if level == "all" and profile.target_platform != "amd64" else []
    return {"level": level, "disabled_optimizers": disabled}


def _lean(ort, so) -> None:
    """Session options that keep a large model's memory near its weights' bytes (same outputs).

    MLAS pre-packs MatMul/Conv weights into a second copy: off. On a CPU without fp16 kernels,
    onnxruntime runs an fp16 model through inserted Casts whose float32 outputs are as large as the
    weights: with the arena and memory patterns they all stay allocated (twice over, the planned
    block beside the arena's), and in the default order every weight's Cast runs before the first
    MatMul. Without the arena each Cast output is freed after its consumer; in priority order a Cast
    runs just before the node that needs it, so about one weight's float32 copy is alive at a time.
    """
    so.add_session_config_entry("session.disable_prepacking", "1")
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.execution_order = ort.ExecutionOrder.PRIORITY_BASED


def _session(path: Path, threads: int, level: str | None = None, disabled_optimizers: list[str] | tuple = (),
             lean: bool | None = None):
    """An onnxruntime CPU session; ``lean`` (default: the model is above SEQUENTIAL_ABOVE_BYTES) uses
    the memory-lean options of :func:`_lean`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if level is not None:
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = ort_severity()
    if lean if lean is not None else _model_bytes_on_disk(path) > SEQUENTIAL_ABOVE_BYTES:
        _lean(ort, so)
        return_freed_memory()  # what earlier steps freed goes back before the weights come in
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled_optimizers) or None)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises Fail/InvalidGraph/NotImplemented...
        first = first_line(exc)
        msg = f"onnxruntime cannot load {Path(path).name}: {first}"
        raise StageError(msg) from exc


def _run(sess, feed: dict) -> list[np.ndarray]:
    return run_ort(sess, feed)  # under the time limit; failures are one StageError


def run_model(path: Path, inputs: list[dict], threads: int = 1, level: str | None = None) -> list[dict]:
    """Run a .onnx or .ort model on the CPU for each input dict; one {output name: array} per input.

    ``level`` None keeps onnxruntime's default; "disable" runs the graph exactly as stored (what a
    minimal build does with a .ort, and what checks of a rewrite itself need).
    """
    sess = _session(Path(path), threads, level)
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, map(_own, _run(sess, feed)))) for feed in inputs]


def _own(value):
    """An output copied out of onnxruntime's buffers: an array that still pointed into the session's
    arena would keep the whole arena (all of its intermediate tensors) alive after the session."""
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def host_cpu() -> str:
    """The host CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _summary(times_ms: list[float], threads: int) -> dict:
    arr = np.asarray(times_ms)
    return {
        "median_ms": float(np.median(arr)),
        "p10_ms": float(np.percentile(arr, 10)),
        "p90_ms": float(np.percentile(arr, 90)),
        "runs": len(times_ms),
        "threads": threads,
        "host_cpu": host_cpu(),
        "provider": "CPUExecutionProvider",
    }


def _ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def interleaved(run_a, run_b, *, warmup: int = 3, runs: int = 20, budget_s: float = 0.5,
                max_runs: int = MAX_RUNS) -> tuple[list[float], list[float]]:
    """Milliseconds of ``run_a`` and ``run_b`` timed in alternating pairs (ABBA...), after ``warmup``
    pairs: at least ``runs`` pairs, more for fast models (up to ``budget_s`` seconds, ``max_runs`` pairs)."""
    for _ in range(warmup):
        run_a()
        run_b()
    # small models run in microseconds, where noise dominates: time at least ~budget_s of pairs
    pair_ms = _ms(run_a) + _ms(run_b)
    runs = int(min(max_runs, max(runs, budget_s * 1000.0 / max(pair_ms, 1e-3))))
    a_ms: list[float] = []
    b_ms: list[float] = []
    for i in range(max(runs, 1)):
        # alternate which goes first, so neither always runs on a cache the other warmed
        pair = ((run_a, a_ms), (run_b, b_ms)) if i % 2 == 0 else ((run_b, b_ms), (run_a, a_ms))
        for fn, times in pair:
            times.append(_ms(fn))
    return a_ms, b_ms


def measure_latency(path: Path, sample: dict, *, threads: int = 1, warmup: int = 3, runs: int = 20,
                    level: str | None = None, disabled_optimizers: list[str] | tuple = (),
                    lean: bool | None = None) -> dict:
    """Median/p10/p90 milliseconds of ``runs`` runs of one sample after ``warmup`` runs."""
    sess = _session(Path(path), threads, level, disabled_optimizers, lean)
    for _ in range(warmup):
        _run(sess, sample)
    return _summary([_ms(lambda: _run(sess, sample)) for _ in range(max(runs, 1))], threads)


def compare_latency(
    ref_path: Path, cand_path: Path, sample: dict, *, threads: int = 1, warmup: int = 3, runs: int = 20,
    level: str | None = None, disabled_optimizers: list[str] | tuple = (), budget_s: float = 0.5,
) -> dict:
    """Time both models in one process with interleaved runs (ABAB...); ``ratio`` = cand / ref medians.

    At least ``runs`` pairs, more for fast models (up to ``budget_s`` seconds, at most MAX_RUNS pairs).

    Both sessions use the same ``level`` and ``disabled_optimizers`` (onnxruntime's defaults if None).
    """
    if _model_bytes_on_disk(ref_path) + _model_bytes_on_disk(cand_path) > SEQUENTIAL_ABOVE_BYTES:
        # too large to hold both sessions at once: one after the other (less robust to noise, says so),
        # both with the same memory-lean options so their ratio compares like with like
        r = measure_latency(ref_path, sample, threads=threads, warmup=warmup, runs=runs, level=level,
                            disabled_optimizers=disabled_optimizers, lean=True)
        c = measure_latency(cand_path, sample, threads=threads, warmup=warmup, runs=runs, level=level,
                            disabled_optimizers=disabled_optimizers, lean=True)
        r["order"] = c["order"] = "sequential (large models: one session at a time)"
        return {"ref": r, "cand": c, "ratio": c["median_ms"] / r["median_ms"] if r["median_ms"] > 0 else None,
                "lean": True}
    ref = _session(Path(ref_path), threads, level, disabled_optimizers, lean=False)
    cand = _session(Path(cand_path), threads, level, disabled_optimizers, lean=False)
    ref_ms, cand_ms = interleaved(lambda: _run(ref, sample), lambda: _run(cand, sample), warmup=warmup, runs=runs,
                                  budget_s=budget_s)
    r, c = _summary(ref_ms, threads), _summary(cand_ms, threads)
    return {"ref": r, "cand": c, "ratio": c["median_ms"] / r["median_ms"] if r["median_ms"] > 0 else None}


# ------------------------------------------------------------------------------------- the stage


def verify_stage(ctx, decisions: list[str]):
    """Check every shipped artifact against the fp32 original; measure both on this host."""
    from dataclasses import replace as _replace

    from ..errors import StageError as _StageError

    models = []
    measured = {}
    for m in ctx.models:
        # exactly the stored graph: a minimal build applies no further optimizations to a .ort
        outs = run_model(m.artifact, list(m.verify_inputs), level="disable")
        metrics = compare_outputs(list(m.reference_outputs), outs)
        metrics = {k: {kk: (float(f"{vv:.6g}") if isinstance(vv, float) else vv) for kk, vv in v.items()}
                   for k, v in metrics.items()}
        tol = m.recipe["tolerance"]
        from ..target import Tolerance

        ok, why = accept(metrics, Tolerance(**tol))
        if not ok:
            msg = f"{m.name}: the shipped {m.artifact.name} fails verification against the fp32 original: {why}"
            raise _StageError(msg)
        decisions.append(f"{m.name}: shipped {m.artifact.name} verified against the fp32 original: {why}")
        verification = {"passed": True, "inputs": list(m.input_notes), "tolerance": tol, "outputs": metrics}
        settings = host_settings(ctx.target)
        lat = compare_latency(m.source.path, m.artifact, m.verify_inputs[0], **settings)
        measured[m.name] = {"where": "this build host, onnxruntime CPUExecutionProvider (a measurement of the host, "
                                     "not of the target device)",
                            "session": {**settings, "lean": lat.get("lean", False)},
                            "fp32_original": lat["ref"], "shipped": lat["cand"], "ratio": lat["ratio"]}
        models.append(_replace(m, verification=verification))
    return ctx.with_models(models).measure("host_latency", measured)
