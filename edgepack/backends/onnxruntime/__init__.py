"""The ONNX Runtime backend: ORT-format models for the CPU, NNAPI and Core ML execution providers.

Candidates come from onnxruntime's own quantizer (:mod:`.quantize`, :mod:`.streamed`) and, for
transformer encoders on CPU targets, its fusions (:mod:`.fusion`); the chosen model becomes an
``.ort`` file (:mod:`.convert`, :mod:`.ort_format`) and the bundle gets the operator config and
the pinned minimal-runtime build (:mod:`.minimal_build`) and a README (:mod:`.readme`).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..base import Backend

_QUANT_OPS = ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul")
# the shipped model's host latency (build record and reports; it decides nothing): timed until the ratio to
# fp32 is known within +-10% at 99% confidence, or for 0.4 s of pairs (the stop is recorded with it)
MEASURE_WITHIN = 0.10
MEASURE_BUDGET_S = 0.4


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    label = "ONNX Runtime"
    execution_providers = ("CPU", "NNAPI", "CoreML")
    accelerator_providers = ("NNAPI", "CoreML")
    op_tables = ("cpu", "nnapi", "coreml-mlprogram", "coreml-neuralnetwork")
    formats = ("ort",)
    bundle_suffix = ".ort"
    recipes = ("static-int8", "dynamic-int8", "fp16", "none")
    package_stage = "reduce"
    artifact_noun = "model"
    speed_reference = "fp32"
    host_runtime = "onnxruntime CPU"

    # ------------------------------------------------------------------ profiles and models

    def check_profile(self, p, fail) -> None:  # noqa: C901 - a flat list of rules reads best
        if p.minimal_build_level == "none":
            fail("minimal_build.level", "ONNX Runtime targets need a 'minimal' or 'extended' minimal build")
        if p.is_accelerator:
            if p.shape_policy != "fixed":
                fail("shapes.policy", f"the {p.execution_provider} execution provider needs fixed shapes")
            if p.optimization_style != "runtime":
                fail("conversion.optimization_style",
                     f"{p.execution_provider} must see unfused nodes: use 'runtime' so fused CPU kernels are not baked in")
            if p.optimization_level != "basic":
                fail("conversion.optimization_level",
                     "extended/all levels add fused ops (FusedConv, NCHWc) accelerators cannot run")
            if p.minimal_build_level != "extended":
                fail("minimal_build.level", "compiling execution providers need '--minimal_build extended'")
        for i, r in enumerate(p.recipes):
            key = f"quantization[{i}]"
            if r.name == "static-int8":
                if r.activation_type is None:
                    fail(f"{key}.activation_type", "static int8 needs an activation type ('uint8' or 'int8')")
                if p.execution_provider == "NNAPI" and r.activation_type != "uint8":
                    fail(f"{key}.activation_type", "NNAPI rejects int8 QLinearConv; QDQ activations must be uint8")
                if p.execution_provider == "CoreML":
                    fail(f"{key}.name", "the CoreML EP does not take int8 QuantizeLinear/DequantizeLinear")
            if r.name == "fp16" and p.execution_provider == "CPU" and "fp16" not in p.isa_features:
                fail(f"{key}.name", f"{p.cpu or p.arch} has no fp16 arithmetic: fp16 would insert Casts and run slower "
                                    "than fp32")
        if p.target_platform is None and p.optimization_style == "fixed":
            fail("conversion.target_platform", "fixed optimizations need a target platform ('arm' or 'amd64')")

    def format_limit(self, profile):
        # flatbuffers: 32-bit signed offsets, so one buffer stays below 2 GiB (flatbuffers docs, "Internals");
        # the minimal builds load ORT-format models only, so there is no .onnx-with-external-data way out
        return 2**31 - 1, "the limit of the ORT format (one flatbuffer)"

    # ------------------------------------------------------------------ coverage

    def inspect_coverage(self, loaded, profile, plan, variant):
        from ... import partition
        from ...transforms import DECOMPOSITIONS

        info = loaded.info
        notes: list[str] = list(plan.decisions)
        as_is, _, _ = variant(None, frozenset())
        if not profile.is_accelerator:
            return [partition.analyze_cpu(as_is, profile, "as-is")], notes
        first = partition.analyze_ort_ep(as_is, profile, True, "as-is")
        scenarios = [first]
        dynamic = any(not t.is_fixed for t in info.inputs)
        if dynamic and first.nodes_supported < first.nodes_total:
            scenarios.append(partition.analyze_ort_ep(as_is, profile, False, "fixed-shapes upper bound"))
        if plan.all_fixed:
            ops = partition.decomposable_ops(profile, set(info.op_histogram))
            prepared, _, counts = variant(plan.fixed, ops)
            scenarios.append(partition.analyze_ort_ep(prepared, profile, True, "after prepare", ort_checker_quirks=False))
            notes += [f"decompose {n} {op} node(s) into {'/'.join(DECOMPOSITIONS[op])}" for op, n in counts.items()]
            notes.append("constant-fold and fold BatchNormalization (onnxruntime basic optimizations)")
        else:
            notes.append("cannot compute 'after prepare': " + ", ".join(plan.undecided) + " undecided; pass --shape NAME=DIMS")
        return scenarios, notes

    def prepared_coverage(self, path, profile):
        if not profile.is_accelerator:
            return None
        from ...partition import coverage_summary

        return coverage_summary(path, profile)

    # ------------------------------------------------------------------ quantize: candidates

    def prepare_candidates(self, ctx, m, model_class, decisions, host):
        """onnxruntime.transformers fusions for transformer encoders on CPU targets, kept where they help."""
        if ctx.target.execution_provider != "CPU" or model_class != "matmul-heavy":
            return m, m.prepared
        from ...cross import stands_in
        from ...runtime.ort import host_settings
        from .fusion import fuse_transformer

        dst = ctx.work / f"{m.name}.fused.onnx"
        stand = stands_in(ctx.target)
        record = fuse_transformer(m.prepared, dst, list(m.verify_inputs), list(m.reference_outputs),
                                  host=host_settings(ctx.target), timed=stand.ok, timed_why=stand.why)
        if record.get("host_latency"):
            host.setdefault(m.name, []).append({"recipe": "transformer-fusion", **record["host_latency"]})
        decisions.append(f"{m.name}: transformer fusion {'applied' if record['applied'] else 'not applied'}: "
                         f"{record['why']}")
        if record["applied"]:
            m = replace(m, prepared=dst, current=dst)
        return m, m.prepared

    def builds_ahead(self, ctx, m, model_class):
        # candidates are memoized (_quantize_shared); the transformer fusion replaces m.prepared
        return ctx.memo is not None and not (ctx.target.execution_provider == "CPU" and model_class == "matmul-heavy")

    def build_candidate(self, ctx, m, recipe, model_class, reference):
        from ...records import Candidate

        dst = ctx.work / f"{m.name}.{recipe.name}.onnx"
        record = _quantize_shared(ctx, m, recipe, dst)
        empty = None
        if recipe.name in ("static-int8", "dynamic-int8") and not _added_quant_ops(record):
            empty = "the quantizer found nothing to quantize"
        return Candidate(recipe.name, dst, record["settings"], tuple(record["notes"]), record["ops_after"],
                         record["bytes_before"], record["bytes_after"], empty)

    def refine_candidate(self, ctx, m, recipe, candidate, judgement, attempt):
        """Static int8 that failed: mixed precision, the nodes responsible kept float (:mod:`.mixed`)."""
        if recipe.name != "static-int8" or not m.calibration or candidate.empty:
            return None
        from .mixed import refine

        return refine(ctx, m, recipe, candidate, judgement, attempt)

    def run(self, path, inputs, profile):
        from ...runtime.ort import run_model

        return run_model(path, inputs, level="disable")

    def speed_gate_applies(self, ctx, recipe):
        return ctx.target.execution_provider == "CPU" and recipe.name != "none"

    def time_candidate(self, ctx, m, recipe, candidate, reference):
        if not self.speed_gate_applies(ctx, recipe):
            return None
        from ...gates import MAX_SLOWDOWN
        from ...runtime.ort import host_settings
        from ...runtime.timing import compare_latency

        settings = host_settings(ctx.target)

        def compute():
            return compare_latency(reference, candidate.path, m.verify_inputs[0], clear_of=MAX_SLOWDOWN, **settings)

        if ctx.memo is None:
            lat = compute()
        else:  # measured once per (fp32, candidate, session settings) across targets
            key = ("gate", ctx.memo.file_key(reference), ctx.memo.file_key(candidate.path), settings["level"],
                   tuple(settings["disabled_optimizers"]))
            lat = ctx.memo.get_or_compute(key, compute)
        return {"recipe": recipe.name, **lat}

    def chosen(self, ctx, m, candidate, decisions):
        profile = ctx.target
        if not profile.is_accelerator:
            return m.coverage
        from ...partition import coverage_summary

        coverage = coverage_summary(candidate.path, profile)
        decisions.append(f"{m.name}: shipped graph {coverage.nodes_on_accelerator}/{coverage.nodes_total} nodes "
                         f"on {profile.execution_provider} in {coverage.partitions} partition(s)")
        share = coverage.nodes_on_accelerator / max(coverage.nodes_total, 1)
        if coverage.partitions > 2 or share < 0.5:
            decisions.append(f"{m.name}: warning: with {coverage.partitions} partitions covering {share:.0%} of the "
                             f"nodes, switching between {profile.execution_provider} and the CPU will probably cost "
                             "more than it gains; compare against a CPU-only session on the device")
        return coverage

    # ------------------------------------------------------------------ convert, verify, package

    def convert(self, ctx, m, decisions):
        from .convert import convert_model

        return convert_model(ctx, m, decisions)

    def run_shipped(self, ctx, m):
        from ...runtime.ort import run_model

        # exactly the stored graph: a minimal build applies no further optimizations to a .ort
        return run_model(m.artifact, list(m.verify_inputs), level="disable")

    def open_runner(self, path, profile):
        from ...runtime.ort import _own, run, session

        sess = session(path, 1, "disable")  # as run_shipped: the graph exactly as stored
        names = [o.name for o in sess.get_outputs()]
        shapes = {i.name: [d if isinstance(d, int) else None for d in i.shape] for i in sess.get_inputs()}
        return (lambda feed: dict(zip(names, map(_own, run(sess, feed))))), shapes, names

    def measure_shipped(self, ctx, m):
        from ...runtime.ort import host_settings
        from ...runtime.timing import compare_latency

        settings = host_settings(ctx.target)
        lat = compare_latency(m.source.path, m.artifact, m.verify_inputs[0], within=MEASURE_WITHIN,
                              stop_budget_s=MEASURE_BUDGET_S, **settings)
        return {"where": "this build host, onnxruntime CPUExecutionProvider (a measurement of the host, "
                         "not of the target device)",
                "session": {**settings, "lean": lat.get("lean", False)},
                "fp32_original": lat["ref"], "shipped": lat["cand"], "ratio": lat["ratio"],
                **({"stop": lat["stop"]} if "stop" in lat else {})}

    def host_runners(self, source, artifact, profile, threads=1):
        from ...runtime import ort as ort_runtime

        settings = ort_runtime.host_settings(profile)
        ref = ort_runtime.session(source, threads, settings["level"], settings["disabled_optimizers"])
        shipped = ort_runtime.session(artifact, threads, settings["level"], settings["disabled_optimizers"])
        return [("fp32", "fp32 original, onnxruntime CPU", lambda feed: ort_runtime.run(ref, feed)),
                ("shipped", f"shipped {artifact.name}, onnxruntime CPU", lambda feed: ort_runtime.run(shipped, feed))]

    def package(self, ctx, decisions):
        from .minimal_build import package

        return package(ctx, decisions)

    def runtime_config(self, ctx) -> dict[str, Any]:
        p = ctx.target
        cfg: dict[str, Any] = {"execution_provider": p.execution_provider,
                               "provider_options": dict(sorted(p.provider_options.items())), "session_config": {}}
        if p.optimization_style == "runtime":
            cfg["session_config"]["session.enable_saved_runtime_optimizations"] = "1"
            cfg["notes"] = ["replay the saved runtime optimizations on CPU-EP nodes"]
        return cfg

    def readme(self, ctx) -> str:
        from .readme import render

        return render(ctx)

    def estimate_inputs(self, ctx, m):
        from ...records import EstimateInputs
        from .minimal_build import CONFIG_NAME

        return EstimateInputs(m.current, (m.artifact, *m.companions), ctx.files.get(CONFIG_NAME))

    # ------------------------------------------------------------------ `edgepack verify BUNDLE`

    def emulation(self, profile):
        # the PyPI wheel is the runtime of glibc-Linux CPU targets; qemu-user runs its aarch64 build here
        if profile.execution_provider != "CPU" or profile.abi != "aarch64-linux-gnu":
            return None
        return {"arch": "aarch64", "cpu": profile.cpu}

    def installed_version(self) -> str | None:
        try:
            import onnxruntime
        except ImportError:
            return None
        return onnxruntime.__version__

    def pin_problem(self, pinned, have):
        if pinned and have != pinned:
            return (f"the .ort files were written by onnxruntime {pinned}; this runtime is {have} "
                    "(ORT-format models are tied to the version that wrote them, onnxruntime#8044)")
        return None

    def run_bundled(self, path, session_config, feed, name) -> dict:
        from ... import limits, quiet
        from ...runtime import ort as ort_runtime

        options = ort_runtime.session_options(log_severity=quiet.ort_severity(), config=sorted(session_config.items()))
        sess = ort_runtime.inference_session(path, options)
        return dict(zip([o.name for o in sess.get_outputs()], limits.run_ort(sess, feed, name)))

    def measure_session(self, path, checked, threads):
        import onnxruntime as ort

        from ... import limits, quiet
        from ...errors import StageError, first_line
        from ...runtime import ort as ort_runtime

        wanted = ORT_PROVIDERS.get(checked.provider or "CPU", "CPUExecutionProvider")
        cpu = "CPUExecutionProvider"
        available = ort.get_available_providers()
        note = None
        providers: list = [cpu]
        if wanted != cpu:
            if wanted in available:
                providers = [(wanted, dict(checked.provider_options)), cpu]
            else:
                note = f"{wanted} is not in this onnxruntime ({', '.join(available)}): measured on {cpu}"

        def make(chosen):
            options = ort_runtime.session_options(log_severity=quiet.ort_severity(), threads=threads,
                                                  config=sorted(checked.session_config.items()))
            return ort.InferenceSession(str(path), options, providers=chosen)

        try:
            sess = make(providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
            if providers == [cpu]:
                msg = f"onnxruntime cannot load {path.name}: {first_line(exc)}"
                raise StageError(msg) from exc
            note = f"the {wanted} session could not be created ({first_line(exc)[:160]}): measured on {cpu}"
            sess = make([cpu])
        names = [o.name for o in sess.get_outputs()]

        def infer(feed):
            return dict(zip(names, limits.run_ort(sess, feed, path.name)))

        return infer, {"runtime": f"onnxruntime {ort.__version__}", "provider": sess.get_providers()[0],
                       "requested": wanted, "threads": threads, "note": note}

    def foreign_errors(self) -> tuple[type[BaseException], ...]:
        return ()


# the manifest's execution_provider -> onnxruntime's provider name
ORT_PROVIDERS = {"CPU": "CPUExecutionProvider", "NNAPI": "NnapiExecutionProvider", "CoreML": "CoreMLExecutionProvider"}


# ---------------------------------------------------------------------- helpers


def _added_quant_ops(record: dict) -> bool:
    before, after = record["ops_before"], record["ops_after"]
    return any(after.get(op, 0) > before.get(op, 0) for op in _QUANT_OPS)


def _quantize_shared(ctx, m, recipe, dst: Path) -> dict:
    """quantize(), computed once per (prepared model, recipe settings, accelerator or not) across targets."""
    from .quantize import quantize

    def compute():
        record = quantize(m.prepared, dst, recipe, list(m.calibration) or None, is_accelerator=ctx.target.is_accelerator)
        if ctx.memo is None:
            return record, None
        keep = ctx.memo.folder / f"{ctx.memo.file_key(dst)}{dst.suffix}"
        shutil.copyfile(dst, keep)
        data = dst.with_name(dst.name + ".data")
        if data.exists():  # large models: weights beside the model
            shutil.copyfile(data, keep.with_name(keep.name + ".data"))
        return record, keep

    if ctx.memo is None:
        return compute()[0]
    key = ("quantize", ctx.memo.file_key(m.prepared), recipe.name, recipe.activation_type, recipe.weight_type,
           recipe.per_channel, ctx.target.is_accelerator, id(m.calibration))
    record, keep = ctx.memo.get_or_compute(key, compute)
    if not dst.exists():
        shutil.copyfile(keep, dst)
        if keep.with_name(keep.name + ".data").exists():
            shutil.copyfile(keep.with_name(keep.name + ".data"), dst.with_name(dst.name + ".data"))
    return record
