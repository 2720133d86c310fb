"""onnxruntime on this host: the one place SessionOptions are built, CPU sessions, and runs.

Every onnxruntime session edgepack opens - to run a model, to time it, to optimize or convert it, to
check that a bundle loads - takes its options from :func:`session_options`, so a setting (threads,
log level, the memory-lean options of large models) means the same everywhere. onnxruntime is
imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import StageError, first_line
from .host import return_freed_memory

SEQUENTIAL_ABOVE_BYTES = 256 * 2**20  # larger models run in memory-lean sessions; two of them are timed in turn
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "layout": "ORT_ENABLE_LAYOUT", "all": "ORT_ENABLE_ALL"}
CPU = ["CPUExecutionProvider"]


def onnxruntime():
    import onnxruntime as ort

    return ort


def level(name: str):
    """onnxruntime's GraphOptimizationLevel for one of LEVELS ('layout' is 'all' before onnxruntime has it)."""
    ort = onnxruntime()
    return getattr(ort.GraphOptimizationLevel, LEVELS[name], ort.GraphOptimizationLevel.ORT_ENABLE_ALL)


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


def session_options(*, level_name: str | None = None, threads: int | None = None, sequential: bool = False,
                    log_severity: int | None = -1, optimized_path: Path | None = None,
                    config: Iterable[tuple[str, str]] = (), lean: bool = False):
    """SessionOptions with only what is asked set (everything else onnxruntime's default).

    ``level_name``: a key of LEVELS; ``threads``: intra-op threads; ``sequential``: one inter-op
    thread, sequential execution (timing); ``log_severity`` -1 = edgepack's quiet level (:func:`edgepack.quiet.ort_severity`; None: onnxruntime's
    default); ``optimized_path``: write the optimized model there; ``config``: session config
    entries, in order; ``lean``: the memory-lean options of :func:`_lean`.
    """
    ort = onnxruntime()
    so = ort.SessionOptions()
    if level_name is not None:
        so.graph_optimization_level = level(level_name)
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    if threads is not None:
        so.intra_op_num_threads = threads
    if sequential:
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if log_severity == -1:
        from ..quiet import ort_severity

        log_severity = ort_severity()
    if log_severity is not None:
        so.log_severity_level = log_severity
    for key, value in config:
        so.add_session_config_entry(key, value)
    if lean:
        _lean(ort, so)
    return so


def inference_session(model: Path | str | bytes, so, disabled_optimizers: Iterable[str] = ()):
    """An onnxruntime CPU session of ``model`` (a path, or a serialized model); raises onnxruntime's own errors."""
    ort = onnxruntime()
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, so, providers=CPU, disabled_optimizers=list(disabled_optimizers) or None)


def model_bytes_on_disk(path: Path) -> int:
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


def session(path: Path, threads: int, level_name: str | None = None, disabled_optimizers: Iterable[str] = (),
            lean: bool | None = None):
    """A CPU session for running or timing a model; ``lean`` (default: the model is above
    SEQUENTIAL_ABOVE_BYTES) uses the memory-lean options of :func:`_lean`."""
    lean = lean if lean is not None else model_bytes_on_disk(path) > SEQUENTIAL_ABOVE_BYTES
    so = session_options(level_name=level_name, threads=threads, sequential=True, lean=lean)
    if lean:
        return_freed_memory()  # what earlier steps freed goes back before the weights come in
    try:
        return inference_session(path, so, disabled_optimizers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises Fail/InvalidGraph/NotImplemented...
        msg = f"onnxruntime cannot load {Path(path).name}: {first_line(exc)}"
        raise StageError(msg) from exc


def run(sess, feed: dict) -> list[Any]:
    from ..limits import run_ort

    return run_ort(sess, feed)  # under the time limit; failures are one StageError


def _own(value):
    """An output copied out of onnxruntime's buffers: an array that still pointed into the session's
    arena would keep the whole arena (all of its intermediate tensors) alive after the session."""
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


RUNNERS = 2  # verification samples run this many at a time through one session (one thread each)


def run_workers(n_inputs: int, lean: bool) -> int:
    """How many samples run at once: one session, RUNNERS calls in flight (each on its own core,
    intra-op threads as asked), never more than the host's CPUs; one at a time for memory-lean
    (large) models, whose every run holds its own activations."""
    import os

    return 1 if lean or n_inputs < 2 else max(1, min(RUNNERS, os.cpu_count() or 1, n_inputs))


def run_model(path: Path, inputs: list[dict], threads: int = 1, level: str | None = None) -> list[dict]:
    """Run a .onnx or .ort model on the CPU for each input dict; one {output name: array} per input.

    One session for all inputs; they run :func:`run_workers` at a time (onnxruntime's Run is
    thread-safe and releases the GIL; each run is the same single computation as a serial one, so the
    outputs are identical - tests/test_run_sharing.py). ``level`` None keeps onnxruntime's default;
    "disable" runs the graph exactly as stored (what a minimal build does with a .ort, and what checks
    of a rewrite itself need).
    """
    lean = model_bytes_on_disk(Path(path)) > SEQUENTIAL_ABOVE_BYTES
    sess = session(Path(path), threads, level, lean=lean)
    one = _runner(sess)
    workers = run_workers(len(inputs), lean)
    if workers == 1:
        return [one(feed) for feed in inputs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgepack-run") as pool:
        return list(pool.map(one, inputs))


def _runner(sess) -> Callable[[dict], dict]:
    names = [o.name for o in sess.get_outputs()]

    def one(feed: dict) -> dict:
        return dict(zip(names, map(_own, run(sess, feed))))

    return one


def queue_model_runs(path: Path, inputs: list[dict], level: str | None = None, wrap=None, first: bool = False):
    """:func:`run_model`'s outputs, computed on the background lane (:mod:`edgepack.runtime.lane`) while
    the caller goes on: a Pending (a sequence: indexing waits for one output, ``result()`` for the list).
    The session is opened here (a model onnxruntime cannot load fails now, as run_model would); a
    memory-lean (large) model runs now, one sample at a time, as run_model runs it. ``wrap``: see Pending;
    ``first``: ahead of the lane's other jobs (see Lane)."""
    from .lane import LANE, Done, Pending

    lean = model_bytes_on_disk(Path(path)) > SEQUENTIAL_ABOVE_BYTES
    if lean or len(inputs) < 2:
        try:
            return Done(run_model(path, inputs, level=level))
        except Exception as exc:
            if wrap is None:
                raise
            raise wrap(exc) from exc
    one = _runner(session(Path(path), 1, level, lean=False))
    return Pending([LANE.submit(one, feed, first=first) for feed in inputs], wrap)


def host_settings(profile) -> dict:
    """Session settings that make a host measurement of ``profile``'s model fair: the target's
    optimization level (a Pi build is optimized at 'extended' for arm, so the host must not add
    x86-only NCHWc layouts to the fp32 side), basic for accelerator targets' CPU fallback."""
    lvl = "basic" if profile.optimization_style == "runtime" else profile.optimization_level
    disabled = ["NchwcTransformer"] if lvl == "all" and profile.target_platform != "amd64" else []
    return {"level": lvl, "disabled_optimizers": disabled}
