"""``edgepack calibrate``: micro-benchmarks on this machine, written as a profile that extends a base target.

The figures the cost model uses are measured here, per op class, with the session the profile's
estimates then model (onnxruntime's defaults: optimization level ``all`` - on x86 that includes the
NCHWc conv layout -, ``threads`` intra-op threads, the CPU execution provider): GEMM (the unit's peak),
convs by kernel (3x3, 1x1), stride and groups, depthwise (a fit over a grid), elementwise and
transcendental ops per element, normalization, resize, recurrent (LSTM), int8 GEMM/conv, data
movement (Add over growing working sets: cache and memory bandwidth), per-node dispatch and control
flow. Each figure is timed robustly (:mod:`edgepack.estimate.robust`); the spread goes into the
profile's sources, interference into its warnings.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..cleanup import tmp_prefix
from . import latency
from . import microbench as mb
from .microbench import DEPTHWISE_GRID, fit_depthwise  # noqa: F401 - re-exported (tests, benchmarks)
from .robust import (CORES_WAIT_S, CORES_WITHIN, DRIFT_BOUND, Cores, CoresProbe, Session, Timing, drift, open_session,
                     time_model, time_session)


# output channels and map size of the conv ladder (3x3, chains of three): multiples of 16, so no NCHWc padding
LADDER = ((16, 112), (32, 80), (64, 56))


@dataclass(frozen=True)
class Sizes:
    gemm: int = 512  # M = K = N: 3 MB of operands, cache-resident as most model layers are (a 1024 GEMM
    # streams 12 MB from a shared L3 and measures the neighbours as much as the core)
    ref_gemm: int = 256  # the reference kernel re-timed around each group
    conv_hw: int = 28
    conv_c: int = 256
    add_elems: int = 2 * 1024 * 1024  # 24 MB moved: beyond per-core caches (DRAM on a Pi)
    add_cache_elems: int = 64 * 1024  # 0.75 MB moved: cache-resident
    ladder: int = 10  # Add working sets from add_cache_elems up by 1.3x each
    lstm_seq: int = 64
    lstm_hidden: int = 256
    chain: int = 400
    budget_s: float = 0.9  # per figure (robust.time_session)
    retries: int = 1  # a group whose reference kernel moved is measured again this many times
    cores_wait_s: float = CORES_WAIT_S  # N threads: the most calibrate waits, in all, for N cores


PARALLEL_SIZE = 4  # N threads: elementwise ops are also timed at 4 x add_cache_elems (256 K floats), above the size
# from which onnxruntime's elementwise kernels split their work over the threads (between 85 K and 110 K floats
# for an Add on the AMD EPYC development host; the Add ladder finds it on each device: parallel_elems)
PARALLEL_GAIN = 1.3  # a ladder Add this much faster than the cache-resident (64 K) one runs on several threads

SMALL = Sizes(conv_c=128, ladder=4, lstm_seq=16, lstm_hidden=128, chain=100, budget_s=0.12, cores_wait_s=6.0)


def _cores_before(name: str, probe: CoresProbe | None, out: dict) -> Cores | None:
    """N threads: wait (within what is left of the calibration's budget) until the N cores are there."""
    if probe is None:
        return None
    c = probe.wait(out.get("cores_wait_left_s", 0.0))
    out["cores_wait_left_s"] = max(out.get("cores_wait_left_s", 0.0) - c.waited_s, 0.0)
    out.setdefault("cores", {})[name] = {"speedup_before": round(c.speedup, 2), "waited_s": c.waited_s}
    return c


def _group(name: str, bench, ref, out: dict, sizes: Sizes, probe: CoresProbe | None = None) -> dict:
    """Run ``bench()`` (-> {figure: Timing or value}) between two timings of the reference kernel;
    measured again when the reference ran more than DRIFT_BOUND slower than its fastest timing so far
    (another program took the CPU, its caches or a core of an N-thread run); a warning when it still does.
    At N threads (``probe``) the group also starts only once the N threads run as well as they have in
    this calibration, and is measured again when they did not by its end
    (:class:`~edgepack.estimate.robust.CoresProbe`; :func:`_stale_groups` redoes the groups a better
    later probe shows were measured in a bad period)."""
    for attempt in range(sizes.retries + 1):
        cores = _cores_before(name, probe, out)
        before = ref()
        figures = bench()
        after = ref()
        cores_after = probe.check() if probe is not None else None
        best = min(out.get("reference_best_ms", before.ms), before.ms, after.ms)
        out["reference_best_ms"] = best
        moved = drift(best, max(before.ms, after.ms))
        lost = cores_after is not None and not (cores is not None and cores.ok and cores_after.ok)
        if cores_after is not None:
            out["cores"][name]["speedup_after"] = round(cores_after.speedup, 2)
        if moved <= DRIFT_BOUND and not lost:
            break
    out.setdefault("reference_drift", {})[name] = round(moved, 3)
    if moved > DRIFT_BOUND:
        out.setdefault("warnings", []).append(
            f"{name}: the reference GEMM ran {moved:+.0%} slower than its best across the group after {attempt + 1} "
            "attempt(s) (another program was using the CPU); its figures may be off by as much")
    return figures


def _stale_groups(out: dict, probe: CoresProbe | None) -> list[str]:
    """The groups measured while the N threads ran worse than the best the probe has seen since."""
    if probe is None:
        return []
    return [k for k, c in out.get("cores", {}).items()
            if probe.stale(min(c["speedup_before"], c.get("speedup_after", c["speedup_before"])))]


def _cores_warnings(out: dict, probe: CoresProbe | None) -> None:
    for name in _stale_groups(out, probe):
        c = out["cores"][name]
        out.setdefault("warnings", []).append(
            f"{name}: {probe.threads} threads ran only {min(c['speedup_before'], c.get('speedup_after', c['speedup_before'])):.2f}x as fast "
            f"as one on the parallel probe, below {CORES_WITHIN:g} x the best {probe.best:.2f}x of this calibration, "
            f"after {c['waited_s']:g} s of waiting: the machine gave the threads less than its cores then; these "
            "figures describe a slower machine")


def measure(threads: int = 1, sizes: Sizes = Sizes(), level: str | None = None) -> dict:
    """Measure every figure; rates in GOPS, bandwidth GB/s, times us, spreads as fractions."""
    settings = Session(threads, level)
    out: dict = {"threads": threads, "level": level or "all", "spread": {}}
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("calibrate")) as tmp:
        folder = Path(tmp)
        ref_model, ref_flops = mb.gemm_model(sizes.ref_gemm)
        ref_sess, ref_feed = open_session(ref_model, folder, "ref", settings)

        def ref() -> Timing:
            return time_session(ref_sess, ref_feed, sizes.budget_s / 2, cpu_clock=settings.cpu_clock)

        def t(model, name) -> Timing:
            timing = time_model(model, folder, name, settings, sizes.budget_s)
            out["spread"][name] = round(timing.spread, 3)
            return timing

        one = t(mb.chain_model(1), "one")
        net = lambda model, name: max(t(model, name).ms - one.ms, 1e-6)  # noqa: E731 - beyond a one-node run
        rate = lambda mf, name: mf[1] / (net(mf[0], name) * 1e6)  # noqa: E731 - GOPS

        def overhead():
            chain = t(mb.chain_model(sizes.chain), "chain").ms
            disp = max(chain - one.ms, 1e-6) * 1e3 / (sizes.chain - 1)
            ifs = t(mb.if_chain_model(sizes.chain // 4), "ifs").ms
            return {"dispatch_us": disp, "run_overhead_us": max(one.ms * 1e3 - disp, 0.0),
                    "if_us": max(ifs - one.ms, 0.0) * 1e3 / (sizes.chain // 4)}

        def gemm_conv():
            c, hw = sizes.conv_c, sizes.conv_hw
            return {"conv_channels": c, "gemm_fp32_gops": rate(mb.gemm_model(sizes.gemm), "gemm"),
                    "conv_fp32_gops": rate(mb.conv_chain_model(c, hw), "conv3x3"),
                    "conv_ladder": [(ch, rate(mb.conv_chain_model(ch, size), f"conv3x3_c{ch}"))
                                    for ch, size in LADDER if ch < c],
                    "conv_s1_single_gops": rate(mb.conv_model(c // 4, hw * 2), "conv3x3_single"),
                    "conv_s2_single_gops": rate(mb.conv_model(c // 4, hw * 2, stride=2), "conv3x3_s2_single"),
                    "conv_1x1_fp32_gops": rate(mb.conv_chain_model(c, hw, k=1), "conv1x1"),
                    "conv_grouped_fp32_gops": rate(mb.conv_chain_model(c, hw, groups=4), "conv3x3_g4")}

        def depthwise():
            samples = [(c, h, w, k, s, net(mb.depthwise_model(c, h, w, k, s), f"dw{c}_{h}_{w}_{k}_{s}") * 1e3)
                       for c, h, w, k, s in DEPTHWISE_GRID]
            a, b, c = fit_depthwise(samples)
            return {"dw_mac_us": a, "dw_row_tap_us": b, "dw_channel_tap_us": c}

        def elementwise():
            n = sizes.add_cache_elems
            rows = max(n // 384, 1)
            models = [*((op, mb.unary_model(op, n), n) for op in mb.ELEMENT_OPS),
                      *((f"Resize-{m}", mb.resize_model(n // 4, m), 4 * (n // 4)) for m in ("nearest", "linear", "cubic")),
                      *((name, mb.layernorm_model(rows, 384, skip=skip), rows * 384)
                        for name, skip in (("LayerNormalization", False), ("SkipLayerNormalization", True)))]
            figures = {"element_ns": {k: net(m, k) * 1e6 / elems for k, m, elems in models}}
            if threads > 1:  # the same ops on tensors large enough for onnxruntime to split them over the threads
                big = PARALLEL_SIZE * n
                figures["par_element_ns"] = {op: net(mb.unary_model(op, big), f"{op}_par") * 1e6 / big
                                             for op in mb.ELEMENT_OPS}
            return figures

        def memory():
            ladder = []
            for i in range(sizes.ladder):
                elems = int(sizes.add_cache_elems * 1.3**i)
                ladder.append((12.0 * elems, rate(mb.add_model(elems), f"add_ladder{i}")))
            return {"add_gbps": rate(mb.add_model(sizes.add_elems), "add_dram"),
                    "add_cache_gbps": rate(mb.add_model(sizes.add_cache_elems), "add_cache"), "ladder": ladder}

        def int8_recurrent():
            return {"gemm_int8_gops": rate(mb.gemm_model(sizes.gemm, int8=True), "gemm_int8"),
                    "conv_int8_gops": rate(mb.conv_model(sizes.conv_c, sizes.conv_hw, int8=True), "conv_int8"),
                    "lstm_fp32_gops": rate(mb.lstm_model(sizes.lstm_seq, sizes.lstm_hidden), "lstm")}

        probe = CoresProbe(folder, threads) if threads > 1 else None
        if probe is not None:
            out["cores_wait_left_s"] = sizes.cores_wait_s
            for _ in range(3):  # a first idea of what the N threads can do here
                probe.speedup()
        out["reference_gops_start"] = ref_flops / (ref().ms * 1e6)
        groups = {"overhead": overhead, "gemm-conv": gemm_conv, "depthwise": depthwise, "elementwise": elementwise,
                  "memory": memory, "int8-recurrent": int8_recurrent}
        for name, bench in groups.items():
            out.update(_group(name, bench, ref, out, sizes, probe))
        for name in _stale_groups(out, probe):  # measured before the probe saw what the machine can do
            if out["cores_wait_left_s"] > 0:
                out["warnings"] = [w for w in out.get("warnings", []) if not w.startswith(f"{name}:")]
                out.update(_group(name, groups[name], ref, out, sizes, probe))
        _cores_warnings(out, probe)
        if probe is not None:
            out["cores_best_speedup"] = round(probe.best, 2)
            out.pop("cores_wait_left_s")
        out["reference_gops_end"] = ref_flops / (ref().ms * 1e6)
        out["layout"] = _layout(folder, settings)
    return _derive(out)


def _layout(folder: Path, settings: Session) -> str:
    """'nchwc' when this session rewrites a conv into onnxruntime's NCHWc layout (x86 AVX2/AVX-512 at level all)."""
    import onnx

    from ..runtime import ort as ort_runtime

    model, _ = mb.conv_model(32, 16)
    src, dst = folder / "layout.onnx", folder / "layout.opt.onnx"
    onnx.save(model, str(src))
    so = ort_runtime.session_options(level_name=settings.level, threads=1, optimized_path=dst)
    ort_runtime.inference_session(src, so)
    domains = {n.domain for n in onnx.load_model(str(dst)).graph.node}
    return "nchwc" if "com.microsoft.nchwc" in domains else "nchw"


def _derive(m: dict) -> dict:
    """The cost model's parameters from the raw figures (latency.py's conventions)."""
    peak = m["gemm_fp32_gops"] / latency.EFFICIENCY["matmul"]
    disp = max(m["dispatch_us"], 1e-6)
    ch_sat, channel_exp = fit_channels(m["conv_ladder"] + [(m["conv_channels"], m["conv_fp32_gops"])])
    col_factor = lambda cols: min(1.0, cols / ch_sat) ** channel_exp  # noqa: E731
    half = (max([m["add_cache_gbps"]] + [g for _, g in m["ladder"][:2]]) + m["add_gbps"]) / 2
    fast = [w for w, g in m["ladder"] if g >= half]
    m["cache_bytes"] = max(fast) if fast else 12.0 * Sizes().add_cache_elems
    m["cache_gbps"] = max([m["add_cache_gbps"]] + [g for _, g in m["ladder"][:2]])
    conv_cols = m["conv_channels"]
    m["cost_model"] = {
        "eff_conv": m["conv_fp32_gops"] / peak / col_factor(conv_cols),
        "eff_conv_pointwise": m["conv_1x1_fp32_gops"] / peak / col_factor(conv_cols),
        "eff_conv_grouped": m["conv_grouped_fp32_gops"] / peak / col_factor(conv_cols // 4),
        "eff_conv_depthwise": (2e-3 / m["dw_mac_us"]) / peak if m["dw_mac_us"] > 0 else latency.EFFICIENCY["conv-depthwise"],
        "eff_recurrent": m["lstm_fp32_gops"] / peak,
        "channel_exp": channel_exp,
        "channel_sat": ch_sat,
        "nchwc_block": nchwc_block() if m["layout"] == "nchwc" else 1.0,
        "strided_conv": min(m["conv_s2_single_gops"] / m["conv_s1_single_gops"], 1.5),
        "dw_row_tap_dispatches": m["dw_row_tap_us"] / disp,
        "dw_channel_tap_dispatches": m["dw_channel_tap_us"] / disp,
        "run_dispatches": m["run_overhead_us"] / disp,
    }
    elem_rate = peak * latency.EFFICIENCY["elementwise"]  # GOPS = operations per ns
    m["element_ops"] = {op: ns * elem_rate for op, ns in m["element_ns"].items()}
    m["cost_model"].update({f"op_{op}": max(v, 0.0) for op, v in m["element_ops"].items()})
    if m["threads"] > 1:
        m["cost_model"].update(_parallel_terms(m, elem_rate))
    m["peak_fp32_gops"] = peak
    m["peak_int8_gops"] = max(m["gemm_int8_gops"], m["conv_int8_gops"] / latency.EFFICIENCY["conv"]
                              * latency.EFFICIENCY["matmul"]) / latency.EFFICIENCY["matmul"]
    return m


def _parallel_terms(m: dict, elem_rate: float) -> dict:
    """N threads: from what size onnxruntime splits an elementwise op over the threads (the smallest Add
    of the ladder PARALLEL_GAIN x faster than the cache-resident one; none: never), the cache rate and
    per-element costs from there on (``parallel_elems``, ``par_cache_gbps``, ``par_op_<Op>``)."""
    serial = m["add_cache_gbps"]  # the ladder's first step is the cache-resident Add itself: not a candidate
    split = [(w / 12.0, g) for w, g in m["ladder"][1:] if g >= PARALLEL_GAIN * serial]
    if not split:
        return {}
    terms = {"parallel_elems": min(e for e, _ in split), "par_cache_gbps": max(g for _, g in split)}
    terms.update({f"par_op_{op}": max(ns * elem_rate, 0.0) for op, ns in m.get("par_element_ns", {}).items()})
    return terms


def fit_channels(ladder: list[tuple[int, float]]) -> tuple[float, float]:
    """(saturation channels, exponent) of rate(c) = top x min(1, c / sat)^exp from (channels, GOPS):
    sat is the fewest channels reaching 90% of the best rate; exp fits the narrowest conv below it."""
    ladder = sorted(ladder)
    top = max(r for _, r in ladder)
    sat = next(c for c, r in ladder if r >= 0.9 * top)
    c0, r0 = ladder[0]
    if c0 >= sat:
        return float(sat), 0.0
    return float(sat), min(max(math.log(r0 / top) / math.log(c0 / sat), 0.0), 2.0)


def nchwc_block() -> float:
    """Channels per NCHWc block of onnxruntime's MLAS on this CPU: 16 with AVX-512F, else 8 (AVX2)."""
    from .calibrate_profile import x86_features

    return 16.0 if "avx512f" in x86_features() else 8.0


def gemm_rate(threads: int = 1, sizes: Sizes = Sizes(), level: str | None = None) -> float:
    """The fp32 GEMM rate (GOPS) now, timed as :func:`measure` times it (has the machine's speed
    moved since a calibration?)."""
    settings = Session(threads, level)
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("calibrate")) as tmp:
        one = time_model(mb.chain_model(1), Path(tmp), "one", settings, sizes.budget_s).ms
        model, flops = mb.gemm_model(sizes.gemm)
        return flops / (max(time_model(model, Path(tmp), "gemm", settings, sizes.budget_s).ms - one, 1e-6) * 1e6)


def run_calibration(base_target: str, out_path: str | Path, *, threads: int = 1, small: bool = False,
                    name: str | None = None) -> dict:
    """Measure this machine and write a profile extending ``base_target`` to ``out_path``.

    Returns the measurements (dict). The file loads with ``edgepack.target.load_target(out_path)``;
    ``base_target`` is a built-in name (or a path, written as given). ``small``: ``--quick`` sizes.
    """
    from ..runtime.host import host_cpu
    from ..target import load_target
    from .calibrate_profile import profile_text

    base = load_target(base_target)  # fail early on a bad base name
    m = measure(threads, SMALL if small else Sizes())
    cpu = host_cpu()
    cpu_unit = next(u for u in base.device.units if u.kind == "cpu")
    text = profile_text(base_target, m, cpu, name or f"{base.name}-calibrated", "fp16" in cpu_unit.peak_gops)
    Path(out_path).write_text(text, encoding="utf-8")
    m["cpu"] = cpu
    return m
