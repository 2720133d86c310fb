"""The QNN backend: Snapdragon NPUs (Hexagon HTP) through onnxruntime's QNN execution provider.

onnxruntime-qnn (a plugin EP, :mod:`.session`) runs here on the HTP backend of the build host - a
simulator of the NPU on x86_64 - so every candidate is judged on the NPU's own numerics for the
profile's ``soc_model``, not on onnxruntime's CPU emulation of QDQ (the two differ: a uint16
YOLOv8n loses boxes on the HTP that the CPU keeps). Candidates (:mod:`.qdq`): QDQ with QNN's
rules, uint8 or uint16 activations, and fp16; the profile's order and tolerances decide. The chosen
one is compiled into an EPContext model + context binary (:mod:`.context`) that ships with the
model it came from as the fallback for other SoCs (:mod:`.package`). Coverage comes from the EP
(:mod:`.coverage`, :mod:`.inspect`); option values are checked by edgepack (:mod:`.options`)
because the EP silently ignores bad ones. Host timings of the simulator are never reported as
latencies: the estimates come from the profile.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import replace
from typing import Any

from ..base import Backend
from . import options as qnn_options

RECIPES = ("static-int8", "static-w8a16", "fp16")


class QnnBackend(Backend):
    name = "onnxruntime-qnn"
    label = "onnxruntime-qnn (QNN HTP)"
    execution_providers = ("QNN",)
    accelerator_providers = ("QNN",)
    op_tables = ("qnn",)
    formats = ("qnn-context",)
    bundle_suffix = ".onnx"
    recipes = RECIPES
    package_stage = "package"
    artifact_noun = "model"
    speed_reference = "fp32"
    int8_on_host_kernels = False  # judged on the QNN HTP backend's simulation, not on MLAS's CPU kernels
    host_runtime = "QNN HTP backend of this host (onnxruntime-qnn)"

    # ------------------------------------------------------------------ profiles and models

    def check_profile(self, p, fail) -> None:
        if p.minimal_build_level != "none":
            fail("minimal_build.level", "the QNN EP plugin and QNN runtime are prebuilt AARs: use 'none'")
        if p.shape_policy != "fixed":
            fail("shapes.policy", "the HTP compiles a graph for fixed shapes: use 'fixed'")
        qnn_options.check(p.provider_options, fail)
        for i, r in enumerate(p.recipes):
            key = f"quantization[{i}]"
            if r.name == "none":
                fail(f"{key}.name", "the HTP has no float32 path (an fp32 graph fails HTP finalization); "
                                    "use 'fp16' (enable_htp_fp16_precision)")
            if r.name == "static-int8" and r.activation_type not in (None, "uint8"):
                fail(f"{key}.activation_type", "QNN's QDQ rules use unsigned activations: 'uint8' (or the "
                                               "'static-w8a16' recipe for uint16)")
            if r.name == "static-int8" and r.weight_type not in (None, "int8"):
                fail(f"{key}.weight_type", "QNN's QDQ rules use symmetric int8 weights: 'int8'")

    def check_model(self, loaded, profile) -> None:
        from .session import qnn_module

        qnn_module()  # one clear error with the install line before any work
        from ..base import onnx_ml_ops

        ml = onnx_ml_ops(loaded)
        if ml:  # the QNN EP has no ai.onnx.ml kernels, and the HTP must take the whole graph (no CPU fallback)
            from ...errors import StageError

            msg = (f"{profile.name}: the QNN HTP has no ai.onnx.ml operators ({ml} "
                   f"in {loaded.path.name}, e.g. a scikit-learn export) and QNN bundles run without CPU fallback; "
                   "build it for an ONNX Runtime CPU target")
            raise StageError(msg)

    # ------------------------------------------------------------------ coverage

    def inspect_coverage(self, loaded, profile, plan, variant):
        from . import inspect, session

        notes = list(plan.decisions)
        scenario = "after prepare"
        if not session.installed():
            return [inspect.unavailable(profile, scenario, f"onnxruntime-qnn is not installed: {session.INSTALL}")], notes
        if not plan.all_fixed:
            return [inspect.unavailable(profile, scenario, "the HTP needs fixed shapes: " + ", ".join(plan.undecided)
                                        + " undecided; pass --shape NAME=DIMS")], notes
        _, path, _ = variant(plan.fixed, frozenset())
        from ...model import TensorSpec

        specs = [TensorSpec(t.name, t.dtype, tuple(plan.fixed.get(t.name, t.shape))) for t in loaded.info.inputs]
        return inspect.scenarios(path, specs, profile), notes + inspect.PREPARE_NOTES

    # ------------------------------------------------------------------ quantize: candidates

    def _options(self, profile, recipe: str | None) -> dict[str, str]:
        from .package import device_options
        from .session import host_options

        return host_options(device_options(profile, recipe))

    def prepare_candidates(self, ctx, m, model_class, decisions, host):
        from .qdq import prepare_for_qnn

        dst = ctx.work / f"{m.name}.qnn.onnx"
        decisions.extend(f"{m.name}: {n}" for n in prepare_for_qnn(m.prepared, dst))
        decisions.append(f"{m.name}: the model prepared for QNN keeps the fp32 outputs ({_same_outputs(m, dst)})")
        return replace(m, prepared=dst, current=dst), dst

    def build_candidate(self, ctx, m, recipe, model_class, reference):
        from ...records import Candidate
        from .qdq import ACTIVATIONS, fp16_model, quantize_qdq

        dst = ctx.work / f"{m.name}.{recipe.name}.onnx"

        def make():
            if recipe.name in ACTIVATIONS:
                return quantize_qdq(m.prepared, dst, recipe.name, list(m.calibration), per_channel=recipe.per_channel)
            return fp16_model(m.prepared, dst)

        record = _shared(ctx, ("qnn", recipe.name, recipe.per_channel, id(m.calibration)), m.prepared, dst, make)
        return Candidate(recipe.name, dst, record["settings"], tuple(record["notes"]), _ops(dst),
                         reference.stat().st_size, dst.stat().st_size)

    def run(self, path, inputs, profile):
        from ...errors import StageError
        from .qdq import is_fp16
        from .session import run

        opts = self._options(profile, "fp16" if is_fp16(path) else None)
        try:
            return run(path, inputs, opts)
        except StageError as exc:
            refused = _refused(path, opts)
            if refused is None:
                raise
            msg = f"the QNN HTP backend cannot take {path.name}: it refuses {refused}"
            raise StageError(msg) from exc

    def chosen(self, ctx, m, candidate, decisions):
        from ...records import ShippedCoverage
        from .coverage import placement, to_coverage

        cov = to_coverage(placement(candidate.path, self._options(ctx.target, candidate.recipe), fallback=False),
                          ctx.target, "shipped")
        decisions.append(f"{m.name}: shipped graph {cov.nodes_supported}/{cov.nodes_total} nodes on the QNN HTP in "
                         f"{cov.partitions} partition(s) (placed by the QNN EP, CPU fallback disabled)")
        return ShippedCoverage.of(cov)

    # ------------------------------------------------------------------ convert, verify, package

    def convert(self, ctx, m, decisions):
        from ...errors import StageError
        from .package import convert_model

        try:
            return convert_model(ctx, m, decisions, numerics_label(ctx.target))
        except StageError as exc:  # name what the HTP refuses, in QNN's words, where a placement shows it
            refused = _refused(m.current, self._options(ctx.target, m.recipe.name if m.recipe else None))
            if refused is None:
                raise
            msg = f"the QNN HTP backend cannot take {m.current.name}: it refuses {refused}"
            raise StageError(msg) from exc

    def run_shipped(self, ctx, m):
        from .session import run

        return run(m.artifact, list(m.verify_inputs), self._options(ctx.target, m.recipe.name))

    def verified_on(self, profile) -> str:
        return f" with {numerics_label(profile)}"

    def measure_shipped(self, ctx, m) -> dict:
        return {}  # the HTP backend here is a simulator: its timings are no latency of the phone (see estimates)

    def package(self, ctx, decisions):
        from .package import package

        return package(ctx, decisions)

    def runtime_config(self, ctx) -> dict[str, Any]:
        from .package import runtime_config

        return runtime_config(ctx)

    def toolchain(self) -> dict[str, str]:
        from .session import installed, versions

        return versions() if installed() else {}

    def readme(self, ctx) -> str:
        from .readme import render

        return render(ctx)

    def estimate_inputs(self, ctx, m):
        from ...records import EstimateInputs

        return EstimateInputs(m.current, (m.artifact, *m.companions), None)

    def estimate_placement(self, model, profile):
        keys = _main_graph_keys(model)
        return keys, 1, ("the whole graph in one QNN HTP partition (builds create every session with "
                         "session.disable_cpu_ep_fallback=1, so a graph the HTP does not take entirely is not shipped)")

    # ------------------------------------------------------------------ `edgepack verify BUNDLE`

    def installed_version(self) -> str | None:
        from .session import installed, versions

        return versions()["onnxruntime-qnn"] if installed() else None

    def pin_problem(self, pinned, have):
        if pinned and have != pinned:
            return (f"the context binaries were compiled by onnxruntime-qnn {pinned}; {have} is installed here, and a QNN "
                    "context binary loads only with a compatible QNN runtime")
        return None

    def measure_session(self, path, checked, threads):
        """``verify --measure`` on a Snapdragon host (the HTP itself). On x86_64 the HTP backend is a
        simulator of the NPU: its timings are no latency, so nothing is measured there."""
        from ... import limits
        from ...errors import StageError
        from .session import create, host_options, versions

        if platform.machine().lower() in ("x86_64", "amd64"):
            msg = ("the QNN HTP backend on x86_64 is a simulator of the NPU: its timings are no latency of the phone; "
                   "measure QNN bundles on a Snapdragon device (the Android sample app)")
            raise StageError(msg)
        options = dict(checked.provider_options) or {"backend_type": "htp"}
        sess = create(path, host_options(options), config=sorted(checked.session_config.items()), what=path.name)
        names = [o.name for o in sess.get_outputs()]

        def infer(feed):
            return dict(zip(names, limits.run_ort(sess, feed, path.name)))

        v = versions()
        return infer, {"runtime": f"onnxruntime-qnn {v['onnxruntime-qnn']} (QNN SDK {v['qnn_sdk']})",
                       "provider": "QNNExecutionProvider (HTP)", "requested": "QNNExecutionProvider (HTP)",
                       "threads": threads, "note": None}

    def run_bundled(self, path, session_config, feed, name) -> dict:
        from ... import limits
        from .session import create, host_options

        sess = create(path, host_options({"backend_type": "htp"}), fallback=True, what=name,
                      config=sorted(session_config.items()))
        return dict(zip([o.name for o in sess.get_outputs()], limits.run_ort(sess, feed, name)))


# ---------------------------------------------------------------------- helpers


def numerics_label(profile) -> str:
    """Where the shipped model's outputs were checked: the QNN HTP backend of this host (a simulator of
    the NPU on x86_64, the NPU itself on a Snapdragon host) for the profile's SoC."""
    from .session import versions

    soc = qnn_options.device_options(profile.provider_options)["soc_model"]
    machine = platform.machine().lower()
    kind = "simulated NPU numerics" if machine in ("x86_64", "amd64") else "NPU numerics"
    return f"{kind} (QNN HTP backend on {machine}, QNN SDK {versions()['qnn_sdk']}, soc_model {soc})"


def _ops(path) -> dict[str, int]:
    from collections import Counter

    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _same_outputs(m, path) -> str:
    """The QNN preparation (opset upgrade, qnn_preprocess_model) is a graph rewrite: checked like prepare's
    rewrites, against the graph before it run with the same settings, within onnxruntime's own measured
    noise on this model and these inputs (edgepack.rewrite_check)."""
    from ...errors import StageError
    from ...rewrite_check import deviation, measure_noise
    from ...runtime.ort import run_model

    inputs = list(m.verify_inputs)
    before = run_model(m.prepared, inputs, level="disable")
    noise = measure_noise(m.prepared, inputs, before, None)
    ok, why = noise.check(deviation(before, run_model(path, inputs, level="disable")))
    if not ok:
        msg = f"{m.name}: preparing the model for QNN (opset upgrade, qnn_preprocess_model) changed the fp32 outputs: {why}"
        raise StageError(msg)
    return why


def _refused(path, opts) -> str | None:
    """What the QNN EP refuses in a model, in its own words (a placement with CPU fallback allowed), or None."""
    from collections import Counter

    from ...errors import StageError
    from .coverage import IO_QDQ, placement

    try:
        pl = placement(path, opts, fallback=True)
    except StageError:
        return None
    ops = Counter((op, pl.reasons.get(name, "no reason reported")) for name, op in pl.on_cpu
                  if IO_QDQ not in pl.reasons.get(name, ""))
    if not ops:
        return None
    return "; ".join(f"{op} ({n} node{'s' if n > 1 else ''}: {why})" for (op, why), n in sorted(ops.items()))


def _main_graph_keys(model) -> set[tuple]:
    from ...partition import node_key

    return {node_key(n) for n in model.graph.node}


def _shared(ctx, key: tuple, src, dst, make) -> dict:
    """A candidate made once per (prepared model, recipe) for every QNN target of a build (the
    quantized model does not depend on the SoC; running it does)."""
    if ctx.memo is None:
        return make()

    def compute():
        record = make()
        keep = ctx.memo.folder / f"qnn-{ctx.memo.file_key(dst)}.onnx"
        shutil.copyfile(dst, keep)
        return record, keep

    record, keep = ctx.memo.get_or_compute(("qnn-candidate", ctx.memo.file_key(src), *key), compute)
    if not dst.exists():
        shutil.copyfile(keep, dst)
    return record
