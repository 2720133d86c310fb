"""The OpenVINO backend: OpenVINO IR (``model.xml`` + ``model.bin``) for Intel CPUs.

Candidates are IRs: ``static-int8`` is NNCF post-training quantization of the OpenVINO model
(:mod:`.nncf`), ``fp16`` an IR with fp16 weights, ``none`` an fp32 IR (:mod:`.ir`). Each runs with
the OpenVINO CPU plugin on the held-out inputs (:mod:`.run`); int8 is timed against the fp32 IR on
the host. The bundle gets the IR, ``runtime_config.json`` and ``requirements.txt`` (:mod:`.package`)
and a README (:mod:`.readme`); coverage comes from ``Core.query_model`` (:mod:`.coverage`).
"""

from __future__ import annotations

from typing import Any

from ..base import Backend

STORAGE_NOTE = ("weights are stored in fp16 and decompressed to f32 at load time; this is storage only: the compute "
                "precision is the runtime's INFERENCE_PRECISION_HINT (runtime_config.json, openvino#15439)")


class OpenVinoBackend(Backend):
    name = "openvino"
    label = "OpenVINO"
    execution_providers = ("OpenVINO",)
    op_tables = ("openvino",)
    formats = ("openvino-ir",)
    bundle_suffix = ".xml"
    recipes = ("static-int8", "fp16", "none")
    package_stage = "package"
    artifact_noun = "IR"
    speed_reference = "the fp32 IR in OpenVINO"
    host_runtime = "openvino CPU"
    runs_long = True  # NNCF quantization makes OpenVINO the slowest target

    # ------------------------------------------------------------------ profiles and models

    def check_profile(self, p, fail) -> None:
        if p.minimal_build_level != "none":
            fail("minimal_build.level", "an ONNX Runtime minimal build does not apply to the OpenVINO runtime")

    def check_model(self, loaded, profile) -> None:
        from ..base import onnx_ml_ops

        ml = onnx_ml_ops(loaded)
        if ml:
            from ...errors import StageError

            msg = (f"{profile.name}: OpenVINO has no ai.onnx.ml operators ({ml} in "
                   f"{loaded.path.name}, e.g. a scikit-learn export); build it for an ONNX Runtime target")
            raise StageError(msg)

    def foreign_errors(self) -> tuple[type[BaseException], ...]:
        # OpenVINO's C++ exceptions reach Python as plain RuntimeError; its frontends and NNCF have their own
        return (RuntimeError,)

    # ------------------------------------------------------------------ coverage

    def inspect_coverage(self, loaded, profile, plan, variant):
        from .coverage import analyze_openvino

        return [analyze_openvino(loaded.path, profile, plan.fixed or None, "as-is")], list(plan.decisions)

    # ------------------------------------------------------------------ quantize: candidates

    def prepare_candidates(self, ctx, m, model_class, decisions, host):
        from . import ir

        return m, ir.save(ir.convert(m.prepared), ctx.work / f"{m.name}.fp32-reference.xml", False)

    def build_candidate(self, ctx, m, recipe, model_class, reference):
        from ...records import Candidate
        from . import ir

        dst = ctx.work / f"{m.name}.{recipe.name}.xml"
        model = ir.convert(m.prepared)
        notes: list[str] = []
        if recipe.name == "static-int8":
            from .nncf import nncf_quantize

            model, settings = nncf_quantize(model, list(m.calibration), model_class)
            compress = ctx.target.compress_to_fp16
            settings["compress_to_fp16"] = compress
            if compress:
                notes.append("weights NNCF left in float are stored in fp16 (conversion.compress_to_fp16)")
        elif recipe.name == "fp16":
            compress = True
            settings = {"compress_to_fp16": True}
            notes.append(STORAGE_NOTE)
        else:  # "none"
            compress = False
            settings = {"compress_to_fp16": False}
        settings["inference_precision_hint"] = ir.PRECISION_HINT
        ir.save(model, dst, compress)
        ops = ir.ir_ops(dst)
        empty = "NNCF found nothing to quantize" if recipe.name == "static-int8" and not ops.get("FakeQuantize") else None
        return Candidate(recipe.name, dst, settings, tuple(notes), ops, ir.ir_bytes(reference), ir.ir_bytes(dst), empty)

    def refine_candidate(self, ctx, m, recipe, candidate, judgement, attempt):
        """Static int8 that failed: NNCF accuracy control reverts what costs the most (:mod:`.mixed`)."""
        if recipe.name != "static-int8" or candidate.empty:
            return None
        from .mixed import refine

        return refine(ctx, m, recipe, candidate, judgement, attempt)

    def run(self, path, inputs, profile):
        from .run import run_ir

        return run_ir(path, inputs)

    def speed_gate_applies(self, ctx, recipe):
        return recipe.name == "static-int8"

    def time_candidate(self, ctx, m, recipe, candidate, reference):
        if not self.speed_gate_applies(ctx, recipe):
            return None
        from ...gates import MAX_SLOWDOWN
        from .run import compare_irs

        lat = compare_irs(reference, candidate.path, m.verify_inputs[0], clear_of=MAX_SLOWDOWN)
        return {"recipe": recipe.name, "vs": "fp32 IR, OpenVINO CPU", **lat}

    def chosen(self, ctx, m, candidate, decisions):
        if candidate.recipe in ("fp16", "static-int8") and candidate.settings.get("compress_to_fp16"):
            from .ir import PRECISION_HINT

            decisions.append(f"{m.name}: fp16 weight storage only; compute precision is INFERENCE_PRECISION_HINT="
                             f"{PRECISION_HINT} in runtime_config.json")
        return m.coverage

    # ------------------------------------------------------------------ convert, verify, package

    def convert(self, ctx, m, decisions):
        from .package import convert_model

        return convert_model(ctx, m, decisions, _shipped_coverage)

    def _device(self, profile) -> str:
        from .ir import DEVICE_DEFAULT

        return profile.runtime_device or DEVICE_DEFAULT

    def run_shipped(self, ctx, m):
        from .run import run_ir

        return run_ir(m.artifact, list(m.verify_inputs), device=self._device(ctx.target))

    def open_runner(self, path, profile):
        from .run import compile_ir, infer

        compiled = compile_ir(path, 1, self._device(profile))
        request = compiled.create_infer_request()
        shapes = {p.get_any_name(): [d.get_length() if d.is_static else None for d in p.get_partial_shape()]
                  for p in compiled.inputs}
        names = [p.get_any_name() for p in compiled.outputs]
        return (lambda feed: infer(request, compiled, feed)), shapes, names

    def verified_on(self, profile) -> str:
        return f" (OpenVINO {self._device(profile)})"

    def measure_shipped(self, ctx, m, threads: int = 1):
        from . import ir, run

        device = self._device(ctx.target)
        sample = m.verify_inputs[0]
        load = run.first_load(m.artifact, sample, threads, device)
        lat = run.compare_with_onnxruntime(m.source.path, m.artifact, sample, threads=threads, device=device)
        return {
            "where": (f"this build host: the shipped IR in OpenVINO {device}, the fp32 original ONNX in onnxruntime "
                      "CPUExecutionProvider, interleaved (a measurement of the host, not of the target device)"),
            "session": {"onnxruntime": {"level": "default (all)", "threads": threads},
                        "openvino": {"device": device, **ir.properties(threads)}},
            "fp32_original": lat["ref"], "shipped": lat["cand"], "ratio": lat["ratio"],
            "speedup": (1.0 / lat["ratio"]) if lat["ratio"] else None,
            "openvino": load,
        }

    def host_runners(self, source, artifact, profile, threads=1):
        from ...runtime import ort as ort_runtime
        from .run import compile_ir, infer

        device = self._device(profile)
        ref = ort_runtime.session(source, threads)
        fp32 = compile_ir(source, threads, device)  # OpenVINO reads the ONNX model itself: its fp32 figure
        shipped = compile_ir(artifact, threads, device)
        fp32_request, shipped_request = fp32.create_infer_request(), shipped.create_infer_request()
        return [("fp32", "fp32 original, onnxruntime CPU", lambda feed: ort_runtime.run(ref, feed)),
                ("fp32_engine", f"fp32 original, OpenVINO {device}", lambda feed: infer(fp32_request, fp32, feed)),
                ("shipped", f"shipped {artifact.name}, OpenVINO {device}",
                 lambda feed: infer(shipped_request, shipped, feed))]

    def package(self, ctx, decisions):
        from .package import package

        return package(ctx, decisions)

    def runtime_config(self, ctx) -> dict[str, Any]:
        p = ctx.target
        return {"execution_provider": p.execution_provider, "device": self._device(p),
                "config_file": ctx.package.runtime_config if ctx.package else "runtime_config.json",
                "notes": ["openvino.Core().compile_model(<xml>, device, properties from the config file)"]}

    def toolchain(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        versions = {}
        for dist in ("openvino", "nncf"):
            try:
                versions[dist] = version(dist)
            except PackageNotFoundError:
                pass
        return versions

    def readme(self, ctx) -> str:
        from .readme import render

        return render(ctx)

    def estimate_inputs(self, ctx, m):
        from ...records import EstimateInputs

        # the shipped IR is not ONNX: its fp32 ONNX source is analysed at the recipe's precision
        return EstimateInputs(m.prepared, (m.artifact, *m.companions), None)

    # ------------------------------------------------------------------ `edgepack verify BUNDLE`

    def installed_version(self) -> str | None:
        try:
            import openvino
        except ImportError:
            return None
        return getattr(openvino, "__version__", "?")

    def measure_session(self, path, checked, threads):
        return _measure_session(path, checked, threads)

    def run_bundled(self, path, session_config, feed, name) -> dict:
        import numpy as np
        import openvino as ov

        from ... import limits

        compiled = ov.Core().compile_model(str(path), "CPU")
        result = limits.run_openvino(compiled.create_infer_request(), feed, name)
        return {o.get_any_name(): np.asarray(result[o]) for o in compiled.outputs}


_MEASURE_PROPERTIES = {"PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS"}
_DEVICES = ("CPU", "GPU", "NPU", "AUTO")


def _runtime_config(path, checked) -> tuple[str, dict]:
    """Device and properties from the bundle's runtime_config.json (listed, so its bytes were checked;
    still read field by field: only the properties edgepack writes, only known devices)."""
    import json

    from ...errors import StageError

    if checked.config_file is None:
        return "CPU", {}
    try:
        doc = json.loads((path.parent / checked.config_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"{checked.config_file}: not a runtime config ({type(exc).__name__})"
        raise StageError(msg) from exc
    device = doc.get("device", "CPU") if isinstance(doc, dict) else "CPU"
    props = doc.get("properties", {}) if isinstance(doc, dict) else {}
    if device not in _DEVICES or not isinstance(props, dict):
        msg = f"{checked.config_file}: device {str(device)[:20]!r} or properties are not what edgepack writes"
        raise StageError(msg)
    return device, {k: v for k, v in props.items() if k in _MEASURE_PROPERTIES and isinstance(v, (str, int))
                    and not isinstance(v, bool)}


def _measure_session(path, checked, threads):
    import numpy as np
    import openvino as ov

    from ... import limits
    from ...errors import StageError
    from .coverage import openvino_error_summary

    device, props = _runtime_config(path, checked)
    props["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = ov.Core().compile_model(str(path), device, props)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with long texts
        msg = f"OpenVINO cannot compile {path.name} for {device}: {openvino_error_summary(exc)}"
        raise StageError(msg) from exc
    request = compiled.create_infer_request()

    def infer(feed):
        result = limits.run_openvino(request, feed, path.name)
        return {o.get_any_name(): np.asarray(result[o]) for o in compiled.outputs}

    used = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    return infer, {"runtime": f"openvino {ov.__version__.split('-')[0]}", "provider": f"OpenVINO {device}",
                   "requested": f"OpenVINO {device}", "threads": used, "note": None}


def _shipped_coverage(xml, profile):
    from ...errors import StageError
    from ...records import ShippedCoverage
    from .coverage import analyze_openvino

    cov = analyze_openvino(xml, profile, None, "shipped")
    if not cov.available:
        msg = f"OpenVINO cannot query {xml.name}: {'; '.join(cov.notes)}"
        raise StageError(msg)
    return ShippedCoverage.of(cov)
