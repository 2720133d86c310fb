"""The profile ``edgepack calibrate`` writes: the base target extended with what was measured, every
figure with its source (how it was measured and the spread of its timing), the session the estimates
model in ``[estimate]``, and the host's own ISA (a profile calibrated on an x86 machine describes an
x86 device)."""

from __future__ import annotations

import platform

from . import latency

# cost-model key -> (the timings it rests on (prefixes of measure()'s "spread" keys), what was measured)
_WHAT = {
    "eff_conv": (("conv3x3",), "chain of three 3x3 stride-1 convs / peak"),
    "eff_conv_pointwise": (("conv1x1",), "chain of three 1x1 convs / peak"),
    "eff_conv_grouped": (("conv3x3_g4",), "chain of three 3x3 convs in 4 groups / peak"),
    "eff_conv_depthwise": (("dw",), "least-squares fit over a grid of depthwise convs (3x3/5x5, stride 1/2), MAC term / peak"),
    "eff_recurrent": (("lstm",), "one-layer LSTM / peak"),
    "channel_exp": (("conv3x3",), "3x3 conv chains at 16-256 channels: exponent of the channel scaling below saturation"),
    "channel_sat": (("conv3x3",), "3x3 conv chains at 16-256 channels: fewest channels reaching 90% of the best rate"),
    "nchwc_block": ((), "onnxruntime MLAS NCHWc block: 16 channels with AVX-512F, 8 with AVX2 (CPU flags)"),
    "strided_conv": (("conv3x3_s2", "conv3x3_single"), "3x3 stride-2 conv rate / stride-1 rate"),
    "dw_row_tap_dispatches": (("dw",), "depthwise fit, per output row and kernel tap, in dispatches"),
    "dw_channel_tap_dispatches": (("dw",), "depthwise fit, per channel and kernel tap, in dispatches"),
    "run_dispatches": (("one",), "one-node session run beyond one dispatch, in dispatches"),
}


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _spread(m: dict, prefixes: tuple[str, ...]) -> str:
    if not prefixes:
        return "not timed"
    vals = [v for k, v in m["spread"].items() if any(k.startswith(p) for p in prefixes)]
    if not vals:
        return "spread not recorded"
    return f"spread of the kept round medians up to {100 * max(vals):.1f}%"


def _isa_lines(base_arch: str, cpu: str, layout: str) -> list[str]:
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    if arch is None or arch == base_arch:
        return []
    features = x86_features() if arch == "x86_64" else []
    return ["[isa]", f"arch = {_q(arch)}", f"abi = {_q('x86_64-linux-gnu' if arch == 'x86_64' else 'aarch64-linux-gnu')}",
            f"cpu = {_q(cpu)}", "features = [" + ", ".join(_q(f) for f in features) + "]", "",
            "[conversion]", f"target_platform = {_q('amd64' if arch == 'x86_64' else 'arm')}", ""]


def x86_features() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "f16c") if f in flags]


def _cores_lines(m: dict) -> list[str]:
    """N threads: the parallel probe per group (speedup of N threads over one before/after, seconds waited)."""
    cores = m.get("cores")
    if not cores:
        return []
    parts = [f"{k} {c['speedup_before']:.2f}x/{c.get('speedup_after', float('nan')):.2f}x"
             + (f" after {c['waited_s']:g} s" if c["waited_s"] else "") for k, c in cores.items()]
    from .robust import CORES_WITHIN

    return [f"# {m['threads']} threads ran this much faster than one on the parallel probe (before/after each group; a group "
            f"starts once within {CORES_WITHIN:g} x the best, {m.get('cores_best_speedup', 0):.2f}x): " + ", ".join(parts)]


def profile_text(base_target: str, m: dict, cpu: str, name: str, has_fp16: bool = False) -> str:
    """The TOML of a profile that extends ``base_target`` with the measured figures (power, battery
    and every other figure stay the base's)."""
    from ..target import load_target

    eff = latency.EFFICIENCY["matmul"]
    clock = "the thread's CPU clock" if m["threads"] == 1 else "the wall clock"
    src = (f"measured by edgepack calibrate on {cpu} (onnxruntime CPU, level {m['level']}, {m['threads']} thread(s); "
           f"timed by {clock}; min of round medians, rounds repeated until within 5%)")
    warnings = m.get("warnings", [])
    lines = [
        f"# Written by `edgepack calibrate --base {base_target}` on {cpu}. Measured figures replace the",
        f"# base profile's; everything else is inherited from {base_target}.",
        f"# GEMM fp32 {m['gemm_fp32_gops']:.1f} GFLOPS, 3x3 conv {m['conv_fp32_gops']:.1f}, 1x1 conv {m['conv_1x1_fp32_gops']:.1f},"
        f" int8 GEMM {m['gemm_int8_gops']:.1f} GOPS, Add {m['add_gbps']:.2f} GB/s, {m['dispatch_us']:.2f} us per node.",
        f"# Reference GEMM {m['reference_gops_start']:.1f} GFLOPS at the start, {m['reference_gops_end']:.1f} at the end;"
        " drift per group: " + ", ".join(f"{k} {100 * v:+.0f}%" for k, v in m.get("reference_drift", {}).items()),
        *_cores_lines(m),
        *(f"# WARNING: {w}" for w in warnings),
        f"extends = {_q(base_target)}",
        f"name = {_q(name)}",
        f"description = {_q(f'{base_target} calibrated on {cpu}')}",
        "",
        *_isa_lines(load_target(base_target).arch, cpu, m["layout"]),
        "[estimate]",
        f"optimization_level = {_q(m['level'])}",
        f"layout = {_q(m['layout'])}",
        f"threads = {m['threads']}",
        f"note = {_q('onnxruntime default session options (CPU execution provider) at ' + str(m['threads']) + ' intra-op thread(s), as calibrate measured them' + ('; NCHWc conv layout (x86)' if m['layout'] == 'nchwc' else ''))}",
        "",
        "[device]",
        f"name = {_q(cpu)}",
        f"memory_bandwidth_gbps = {m['add_gbps']:.3f}",
        f"cache_bytes = {int(m['cache_bytes'])}",
        f"cache_bandwidth_gbps = {m['cache_gbps']:.3f}",
        f"dispatch_overhead_us = {m['dispatch_us']:.3f}",
        "anchors = []  # the base's published anchors are for its reference device, not this one",
        "",
        "[device.units.cpu]",
        "kind = \"cpu\"",
        f"cores = {m['threads']}",
        f"peak_gops = {{ fp32 = {m['peak_fp32_gops']:.2f}, int8 = {m['peak_int8_gops']:.2f}"
        + (f", fp16 = {m['peak_fp32_gops']:.2f}" if has_fp16 else "") + " }",
        "",
        "[device.cost_model]",
        *(f"{_q(k)} = {v:.5g}" for k, v in sorted(m["cost_model"].items())),
        "",
        "[device.sources]",
        f"\"memory_bandwidth_gbps\" = {_q(src + ': elementwise Add over a 24 MB working set, 12 bytes per element; ' + _spread(m, ('add_dram',)))}",
        f"\"cache_bytes\" = {_q(src + ': largest Add working set still streaming faster than halfway between the cache and DRAM rates; ' + _spread(m, ('add_ladder',)))}",
        f"\"cache_bandwidth_gbps\" = {_q(src + ': elementwise Add of cache-resident tensors; ' + _spread(m, ('add_cache', 'add_ladder0', 'add_ladder1')))}",
        f"\"dispatch_overhead_us\" = {_q(src + ': chain of tiny nodes, time per node; ' + _spread(m, ('chain',)))}",
        f"\"units.cpu.cores\" = {_q(src + ': intra-op threads used by the benchmarks')}",
        f"\"units.cpu.peak_gops.fp32\" = {_q(src + f': fp32 GEMM rate / matmul efficiency {eff:g}; ' + _spread(m, ('gemm',)))}",
        f"\"units.cpu.peak_gops.int8\" = {_q(src + f': best of QDQ int8 GEMM/conv rate / efficiency {eff:g}; ' + _spread(m, ('gemm_int8', 'conv_int8')))}",
        *([f"\"units.cpu.peak_gops.fp16\" = {_q(src + ': no fp16 benchmark; set to the fp32 rate (onnxruntime CPU runs most fp16 work through fp32 kernels)')}"]
          if has_fp16 else []),
        *(f"{_q('cost_model.' + k)} = {_q(src + ': ' + _source(k, m))}" for k in sorted(m["cost_model"])),
        "",
    ]
    return "\n".join(lines)


def _source(key: str, m: dict) -> str:
    from .calibrate import PARALLEL_GAIN, PARALLEL_SIZE, Sizes

    if key.startswith("par_op_"):
        op = key[7:]
        floats = PARALLEL_SIZE * Sizes().add_cache_elems
        return (f"{op} per element on a tensor onnxruntime splits over the {m['threads']} threads ({floats // 1024} K "
                f"floats), as operations at the elementwise rate; {_spread(m, (op + '_par',))}")
    if key == "parallel_elems":
        return (f"smallest Add of the working-set ladder running {PARALLEL_GAIN:g}x faster than the cache-resident one at "
                f"{m['threads']} threads: from this many elements onnxruntime splits an elementwise op (the Add's "
                f"threshold, used for every elementwise op: costlier ones split earlier); {_spread(m, ('add_ladder',))}")
    if key == "par_cache_gbps":
        return f"fastest Add of the ladder from parallel_elems on, {m['threads']} threads; {_spread(m, ('add_ladder',))}"
    if key.startswith("op_"):
        op = key[3:]
        return f"{op} per element on a cache-resident tensor, as operations at the elementwise rate; {_spread(m, (op,))}"
    prefixes, what = _WHAT[key]
    return f"{what}; {_spread(m, prefixes)}"
