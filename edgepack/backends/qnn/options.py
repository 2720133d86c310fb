"""Provider options of the QNN execution provider, checked by edgepack before any session.

The EP itself does not refuse a bad value (onnxruntime-qnn 2.7.0, measured): ``soc_model=9999``
makes QNN's backend setup fail and *every node runs on the CPU*; ``htp_arch=80`` and
``htp_performance_mode=fast`` are logged and ignored; ``enable_htp_fp16_precision=2`` is ignored
silently. So a profile's options are validated here, against the values the EP parses, and a
value that would quietly change where the model runs is a profile error.

Pure data and string checks: no engine import (the profile loader calls this).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..._toml_check import did_you_mean


@dataclass(frozen=True)
class Soc:
    part: str
    name: str
    htp_arch: int
    vtcm_mb: int


# soc_model -> the phone SoC. Values and HTP architectures: pytorch/executorch
# backends/qualcomm/serialization/qc_schema.py (Copyright Qualcomm Innovation Center; QcomChipset and
# _soc_info_table: "SM8550 = 43  # v73", "SM8650 = 57  # v75", "SM8750 = 69  # v79", "SM8850 = 87  # v81",
# "SM8450 = 36  # v69", "SM8475 = 42  # v69", "SM8350 = 30  # v68", VTCM 8 MB except SM8350 4 MB); the same
# numbers in tensorflow/tensorflow litert/vendors/qualcomm/core/schema/soc_table.h (Qualcomm copyright).
# Every value here was accepted by the QNN HTP backend of onnxruntime-qnn 2.7.0 (tests/test_qnn_options.py).
SOCS: dict[int, Soc] = {
    30: Soc("SM8350", "Snapdragon 888", 68, 4),
    36: Soc("SM8450", "Snapdragon 8 Gen 1", 69, 8),
    42: Soc("SM8475", "Snapdragon 8+ Gen 1", 69, 8),
    43: Soc("SM8550", "Snapdragon 8 Gen 2", 73, 8),
    57: Soc("SM8650", "Snapdragon 8 Gen 3", 75, 8),
    69: Soc("SM8750", "Snapdragon 8 Elite", 79, 8),
    87: Soc("SM8850", "Snapdragon 8 Elite Gen 5", 81, 8),
}
SOC_SOURCE = ("pytorch/executorch backends/qualcomm/serialization/qc_schema.py (Qualcomm Innovation Center): "
              "QcomChipset and _soc_info_table")
HTP_ARCHS = (68, 69, 73, 75, 79, 81)  # what onnxruntime-qnn 2.7.0 parses (80 -> "Invalid HTP architecture", ignored)
PERFORMANCE_MODES = ("burst", "balanced", "default", "high_performance", "high_power_saver", "low_balanced",
                     "low_power_saver", "power_saver", "extreme_power_saver", "sustained_high_performance")
CONTEXT_PRIORITIES = ("low", "normal", "normal_high", "high")
FINALIZATION_MODES = ("0", "1", "2", "3")

# options a profile may set, and what each is for
PROFILE_OPTIONS = {
    "backend_type": "the QNN backend: only 'htp' (the NPU) is packaged",
    "soc_model": "the SoC the context binary is compiled for (required)",
    "htp_arch": "the HTP architecture; must be the SoC's own",
    "htp_performance_mode": "the HTP's clock/power vote on the device",
    "htp_graph_finalization_optimization_mode": "how hard QNN optimizes the graph when it compiles the context",
    "qnn_context_priority": "the context's priority against other HTP clients",
    "vtcm_mb": "VTCM (the HTP's tightly coupled memory) to reserve, in MB",
}
# options edgepack sets itself (or that name files of the build host), never a profile
EDGEPACK_OPTIONS = {
    "backend_path": "a host library path; edgepack sets it to onnxruntime-qnn's libQnnHtp on this host, and the "
                    "device app to its own (use backend_type)",
    "enable_htp_fp16_precision": "set by the fp16 recipe, not by the profile",
    "offload_graph_io_quantization": "builds compile with session.disable_cpu_ep_fallback=1, which makes QNN take "
                                     "the graph's input/output Q/DQ itself",
    "profiling_level": "host debugging", "profiling_file_path": "host debugging",
    "enable_framework_op_trace": "edgepack's coverage analysis sets it", "framework_op_trace_dir": "coverage analysis",
    "dump_json_qnn_graph": "host debugging", "json_qnn_graph_dir": "host debugging",
}


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def socs_listed() -> str:
    return ", ".join(f"{k} ({s.part}, {s.name}, V{s.htp_arch})" for k, s in sorted(SOCS.items()))


def check(options: dict, fail) -> None:
    """Report the first provider option a QNN profile must not have: ``fail(key, why)``."""
    for key in options:
        if key in EDGEPACK_OPTIONS:
            fail(f"runtime.provider_options.{key}", f"not a profile setting: {EDGEPACK_OPTIONS[key]}")
        if key not in PROFILE_OPTIONS:
            fail(f"runtime.provider_options.{key}",
                 f"unknown QNN provider option{did_you_mean(key, tuple(PROFILE_OPTIONS))}; a profile may set: "
                 + ", ".join(PROFILE_OPTIONS))
    backend = str(options.get("backend_type", "htp"))
    if backend != "htp":
        fail("runtime.provider_options.backend_type", f"'{backend}': edgepack packages the HTP (NPU) backend only ('htp')")
    if "soc_model" not in options:
        fail("runtime.provider_options.soc_model", "required: the SoC the context binary is compiled for; one of "
             + socs_listed())
    soc = _int(options["soc_model"])
    if soc not in SOCS:
        fail("runtime.provider_options.soc_model",
             f"{options['soc_model']!r} is not a soc_model edgepack knows (QNN would silently run every node on the "
             f"CPU for a value its HTP backend rejects); one of {socs_listed()} ({SOC_SOURCE})")
    if "htp_arch" in options:
        arch = _int(options["htp_arch"])
        if arch not in HTP_ARCHS:
            fail("runtime.provider_options.htp_arch",
                 f"{options['htp_arch']!r} is not an HTP architecture onnxruntime-qnn parses ({', '.join(map(str, HTP_ARCHS))}); "
                 "an invalid value is ignored with a warning")
        if arch != SOCS[soc].htp_arch:
            fail("runtime.provider_options.htp_arch",
                 f"{arch} contradicts soc_model {soc} ({SOCS[soc].part}, HTP V{SOCS[soc].htp_arch}); leave it out "
                 "(soc_model alone selects the architecture)")
    _choice(options, "htp_performance_mode", PERFORMANCE_MODES, fail)
    _choice(options, "qnn_context_priority", CONTEXT_PRIORITIES, fail)
    _choice(options, "htp_graph_finalization_optimization_mode", FINALIZATION_MODES, fail)
    if "vtcm_mb" in options:
        mb = _int(options["vtcm_mb"])
        if mb is None or not 1 <= mb <= SOCS[soc].vtcm_mb:
            fail("runtime.provider_options.vtcm_mb",
                 f"{options['vtcm_mb']!r}: a whole number of MB from 1 to {SOCS[soc].vtcm_mb} (the VTCM of {SOCS[soc].part})")


def _choice(options: dict, key: str, choices: tuple[str, ...], fail) -> None:
    if key in options and str(options[key]) not in choices:
        fail(f"runtime.provider_options.{key}",
             f"{options[key]!r}{did_you_mean(str(options[key]), choices)} is not one of: {', '.join(choices)} "
             "(onnxruntime-qnn ignores an invalid value and keeps its default)")


def soc_of(options: dict) -> Soc:
    return SOCS[_int(options["soc_model"])]  # type: ignore[index]


def device_options(options: dict) -> dict[str, str]:
    """The options as the EP takes them (strings), in sorted order: what the bundle's runtime config holds."""
    out = {"backend_type": "htp", **{k: str(v) for k, v in options.items()}}
    out["soc_model"] = str(_int(options["soc_model"]))
    return dict(sorted(out.items()))
