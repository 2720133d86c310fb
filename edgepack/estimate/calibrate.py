"""``edgepack calibrate``: micro-benchmarks on this machine, written as a profile that extends a base target.

Single-node ONNX models built with onnx.helper and timed with onnxruntime's CPU provider:
a large fp32 GEMM and 3x3 Conv (compute rate), QDQ int8 MatMul/Conv (int8 rate), a large
elementwise Add (memory bandwidth) and a chain of tiny Adds (per-node dispatch overhead).
The profile's ``peak_gops`` is the measured GEMM rate divided by latency.EFFICIENCY["matmul"],
so the cost model reproduces the measured GEMM; the other figures are written as measured.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import latency

OPSET = 17


@dataclass(frozen=True)
class Sizes:
    gemm: int = 1024  # M = K = N
    conv_hw: int = 28
    conv_c: int = 256
    dw_c: int = 256
    add_elems: int = 16 * 1024 * 1024  # 192 MB moved: DRAM
    add_cache_elems: int = 64 * 1024  # 0.75 MB moved: cache-resident
    lstm_seq: int = 64
    lstm_hidden: int = 256
    chain: int = 400
    runs: int = 20


SMALL = Sizes(gemm=256, conv_hw=28, conv_c=64, dw_c=64, add_elems=2 * 1024 * 1024, lstm_seq=16, lstm_hidden=64,
              chain=100, runs=5)


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "bench", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgepack-calibrate")
    m.ir_version = 8
    return m


def _vi(name, dims, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, dims)


def gemm_model(n: int, *, int8: bool = False) -> tuple[onnx.ModelProto, float]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n, n)).astype(np.float32)
    flops = 2.0 * n * n * n
    if not int8:
        return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [n, n])], [_vi("y", [n, n])],
                      [numpy_helper.from_array(w, "w")]), flops
    return _qdq(["MatMul"], [n, n], [n, n], w, {}), flops


def conv_model(c: int, hw: int, *, depthwise: bool = False, int8: bool = False) -> tuple[onnx.ModelProto, float]:
    rng = np.random.default_rng(1)
    cin_g = 1 if depthwise else c
    w = rng.standard_normal((c, cin_g, 3, 3)).astype(np.float32) * 0.1
    attrs = {"pads": [1, 1, 1, 1], "group": c if depthwise else 1}
    flops = 2.0 * c * hw * hw * cin_g * 9
    if int8:
        return _qdq(["Conv"], [1, c, hw, hw], [1, c, hw, hw], w, attrs), flops
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], [_vi("x", [1, c, hw, hw])],
                  [_vi("y", [1, c, hw, hw])], [numpy_helper.from_array(w, "w")]), flops


def _qdq(op, in_dims, out_dims, w: np.ndarray, attrs: dict) -> onnx.ModelProto:
    """x -Q-DQ-> op(DQ(w int8 per-tensor)) -Q-DQ-> y: the QDQ form ORT fuses into an int8 kernel."""
    scale_w = float(np.abs(w).max() / 127.0)
    wq = np.clip(np.round(w / scale_w), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.array(scale_w, np.float32), "sw"),
        numpy_helper.from_array(np.array(0, np.int8), "zw"),
        numpy_helper.from_array(np.array(0.05, np.float32), "sx"), numpy_helper.from_array(np.array(128, np.uint8), "zx"),
        numpy_helper.from_array(np.array(0.5, np.float32), "sy"), numpy_helper.from_array(np.array(128, np.uint8), "zy"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"]),
        helper.make_node(op[0], ["xd", "wd"], ["yf"], **attrs),
        helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"]),
    ]
    return _model(nodes, [_vi("x", in_dims)], [_vi("y", out_dims)], inits)


def lstm_model(seq: int, hidden: int) -> tuple[onnx.ModelProto, float]:
    """One forward LSTM over ``seq`` steps (input size = hidden); FLOPs as edgepack.flops counts them."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((1, 4 * hidden, hidden)) * 0.1).astype(np.float32)
    r = (rng.standard_normal((1, 4 * hidden, hidden)) * 0.1).astype(np.float32)
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=hidden)
    flops = 2.0 * seq * 4 * hidden * (hidden + hidden)
    return _model([node], [_vi("x", [seq, 1, hidden])], [_vi("y", [seq, 1, 1, hidden])],
                  [numpy_helper.from_array(w, "w"), numpy_helper.from_array(r, "r")]), flops


def add_model(n: int) -> tuple[onnx.ModelProto, float]:
    """y = a + b over n floats: 3 x 4n bytes moved."""
    return _model([helper.make_node("Add", ["a", "b"], ["y"])], [_vi("a", [n]), _vi("b", [n])], [_vi("y", [n])]), 12.0 * n


def chain_model(k: int) -> onnx.ModelProto:
    """k small nodes in a row on a [4, 8] tensor, cycling Add, Mul, Sigmoid, Transpose, Reshape, Slice
    (the mix of small ops real graphs have): their time is the per-node dispatch overhead."""
    inits = [numpy_helper.from_array(np.ones((4, 8), np.float32), "one"),
             numpy_helper.from_array(np.array([4, 8], np.int64), "shape"),
             numpy_helper.from_array(np.array([0, 0], np.int64), "starts"),
             numpy_helper.from_array(np.array([4, 8], np.int64), "ends")]
    nodes, cur, dims = [], "x", [4, 8]
    for i in range(k):
        dst = f"t{i + 1}" if i < k - 1 else "y"
        kind = i % 6 if i < k - 1 else 0
        if kind == 3 and dims == [4, 8]:
            nodes.append(helper.make_node("Transpose", [cur], [dst], perm=[1, 0]))
            dims = [8, 4]
        elif kind == 4 or dims != [4, 8]:
            nodes.append(helper.make_node("Reshape", [cur, "shape"], [dst]))
            dims = [4, 8]
        else:
            op = {0: "Add", 1: "Mul", 2: "Sigmoid", 3: "Add", 5: "Slice"}[kind]
            ins = {"Add": [cur, "one"], "Mul": [cur, "one"], "Sigmoid": [cur], "Slice": [cur, "starts", "ends"]}[op]
            nodes.append(helper.make_node(op, ins, [dst]))
        cur = dst
    return _model(nodes, [_vi("x", [4, 8])], [_vi("y", [4, 8])], inits)


def if_chain_model(k: int) -> onnx.ModelProto:
    """k If nodes in a row on a bool input, each branch one tiny Add: their time beyond dispatch is the
    cost of running a control-flow subgraph."""
    one = numpy_helper.from_array(np.ones(8, np.float32), "one")
    nodes: list = []
    for i in range(k):
        src, dst = ("x" if i == 0 else f"t{i}"), (f"t{i + 1}" if i < k - 1 else "y")
        branch = lambda tag: helper.make_graph(  # noqa: E731
            [helper.make_node("Add", [src, "one"], [f"{tag}{i}"])], f"{tag}{i}", [], [_vi(f"{tag}{i}", [8])])
        nodes.append(helper.make_node("If", ["c"], [dst], then_branch=branch("a"), else_branch=branch("b")))
    return _model(nodes, [_vi("x", [8]), _vi("c", [], TensorProto.BOOL)], [_vi("y", [8])], [one])


def _time_ms(model: onnx.ModelProto, threads: int, runs: int, folder: Path, name: str) -> float:
    import onnxruntime as ort

    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    feed = {i.name: (np.array(True) if i.type == "tensor(bool)" else rng.standard_normal(list(i.shape)).astype(np.float32))
            for i in sess.get_inputs()}
    for _ in range(2):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.min(times))  # the least-disturbed run: a rate, not a user-facing latency


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def measure(threads: int = 1, sizes: Sizes = Sizes(), rounds: int = 3) -> dict:
    """Run the micro-benchmarks ``rounds`` times; the median of each figure (a shared or throttling
    machine varies by tens of percent between rounds). Rates in GOPS, bandwidth GB/s, overhead us."""
    results = [_measure_once(threads, sizes) for _ in range(max(rounds, 1))]
    out: dict = {}
    for key, value in results[0].items():
        if isinstance(value, dict):
            out[key] = {k: float(np.median([r[key][k] for r in results])) for k in value}
        elif isinstance(value, float):
            out[key] = float(np.median([r[key] for r in results]))
        else:
            out[key] = value
    out["rounds"] = len(results)
    return out


def _measure_once(threads: int, sizes: Sizes) -> dict:
    out: dict = {"threads": threads}
    with tempfile.TemporaryDirectory(prefix="edgepack-calibrate-") as tmp:
        folder = Path(tmp)
        chain_ms = _time_ms(chain_model(sizes.chain), threads, sizes.runs, folder, "chain")
        one_ms = _time_ms(chain_model(1), threads, sizes.runs * 10, folder, "one")
        out["dispatch_us"] = max(chain_ms - one_ms, 1e-6) * 1e3 / (sizes.chain - 1)
        out["run_overhead_us"] = max(one_ms * 1e3 - out["dispatch_us"], 0.0)
        disp_ms = one_ms
        if_ms = _time_ms(if_chain_model(sizes.chain // 4), threads, sizes.runs, folder, "ifs")
        out["if_us"] = max(if_ms - one_ms, 0.0) * 1e3 / (sizes.chain // 4)

        def rate(model_flops, name):
            model, flops = model_flops
            ms = max(_time_ms(model, threads, sizes.runs, folder, name) - disp_ms, 1e-6)
            return flops / (ms * 1e6)  # GOPS

        out["gemm_fp32_gops"] = rate(gemm_model(sizes.gemm), "gemm")
        out["conv_fp32_gops"] = rate(conv_model(sizes.conv_c, sizes.conv_hw), "conv")
        out["conv_narrow_fp32_gops"] = rate(conv_model(sizes.conv_c // 4, sizes.conv_hw * 2), "conv_narrow")
        out["dwconv_fp32_gops"] = rate(conv_model(sizes.dw_c, sizes.conv_hw, depthwise=True), "dwconv")
        # depthwise kernels pay a fixed cost per channel: many channels on a small map vs few on a large one
        m_big, f_big = conv_model(sizes.dw_c // 4, sizes.conv_hw * 2, depthwise=True)
        m_small, f_small = conv_model(sizes.dw_c * 2, 8, depthwise=True)
        t_big = _time_ms(m_big, threads, sizes.runs, folder, "dw_big") - disp_ms
        t_small = _time_ms(m_small, threads, sizes.runs, folder, "dw_small") - disp_ms
        c_big, c_small = sizes.dw_c // 4, sizes.dw_c * 2
        # t = c x per_channel + f / rate, two equations
        det = c_big * f_small - c_small * f_big
        per_channel_ms = (t_big * f_small - t_small * f_big) / det if det else 0.0
        inv_rate = (c_big * t_small - c_small * t_big) / det if det else t_big / f_big
        out["dw_per_channel_us"] = max(per_channel_ms * 1e3, 0.0)
        out["dwconv_fp32_gops_no_channel_cost"] = 1.0 / max(inv_rate, 1e-18) / 1e6
        out["gemm_int8_gops"] = rate(gemm_model(sizes.gemm, int8=True), "gemm8")
        out["conv_int8_gops"] = rate(conv_model(sizes.conv_c, sizes.conv_hw, int8=True), "conv8")
        out["lstm_fp32_gops"] = rate(lstm_model(sizes.lstm_seq, sizes.lstm_hidden), "lstm")
        out["add_gbps"] = rate(add_model(sizes.add_elems), "add")
        out["add_cache_gbps"] = rate(add_model(sizes.add_cache_elems), "add_cache")
    g = out["gemm_fp32_gops"]
    out["ratios_to_gemm"] = {"conv": out["conv_fp32_gops"] / g, "conv-depthwise": out["dwconv_fp32_gops"] / g,
                             "recurrent": out["lstm_fp32_gops"] / g,
                             "conv-depthwise-streaming": out["dwconv_fp32_gops_no_channel_cost"] / g}
    out["if_dispatches"] = out["if_us"] / max(out["dispatch_us"], 1e-6)
    out["conv_narrow_ratio"] = out["conv_narrow_fp32_gops"] / out["conv_fp32_gops"]
    out["dw_per_channel_dispatches"] = out["dw_per_channel_us"] / max(out["dispatch_us"], 1e-6)
    out["cache_speedup"] = out["add_cache_gbps"] / out["add_gbps"]
    out["run_overhead_dispatches"] = out["run_overhead_us"] / max(out["dispatch_us"], 1e-6)
    return out


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def profile_text(base_target: str, m: dict, cpu: str, name: str | None = None, has_fp16: bool = False) -> str:
    """The TOML of a profile that extends ``base_target`` with the measured figures (power, battery
    and every other figure stay the base's)."""
    eff = latency.EFFICIENCY["matmul"]
    fp32 = m["gemm_fp32_gops"] / eff
    int8 = max(m["gemm_int8_gops"], m["conv_int8_gops"] / latency.EFFICIENCY["conv"] * eff) / eff
    src = f"measured by edgepack calibrate on {cpu} (onnxruntime CPU, {m['threads']} thread(s))"
    name = name or f"{base_target}-calibrated"
    lines = [
        f"# Written by `edgepack calibrate --base {base_target}` on {cpu}. Measured figures replace the",
        f"# base profile's; everything else is inherited from {base_target}.",
        f"# Micro-benchmarks: GEMM fp32 {m['gemm_fp32_gops']:.1f} GFLOPS, 3x3 conv fp32 {m['conv_fp32_gops']:.1f},"
        f" depthwise conv {m['dwconv_fp32_gops']:.2f}, int8 GEMM {m['gemm_int8_gops']:.1f} GOPS,",
        f"# int8 conv {m['conv_int8_gops']:.1f}, Add {m['add_gbps']:.2f} GB/s, {m['dispatch_us']:.2f} us per node.",
        f"extends = {_q(base_target)}",
        f"name = {_q(name)}",
        f"description = {_q(f'{base_target} calibrated on {cpu}')}",
        "",
        "[device]",
        f"name = {_q(cpu)}",
        f"memory_bandwidth_gbps = {m['add_gbps']:.3f}",
        f"dispatch_overhead_us = {m['dispatch_us']:.3f}",
        "anchors = []  # the base's published anchors are for its reference device, not this one",
        "",
        "[device.units.cpu]",
        "kind = \"cpu\"",
        f"cores = {m['threads']}",
        f"peak_gops = {{ fp32 = {fp32:.2f}, int8 = {int8:.2f}" + (f", fp16 = {fp32:.2f}" if has_fp16 else "") + " }",
        "",
        "[device.sources]",
        f"\"memory_bandwidth_gbps\" = {_q(src + ': elementwise Add of large tensors, 12 bytes per element')}",
        f"\"dispatch_overhead_us\" = {_q(src + ': chain of tiny Add nodes, time per node')}",
        f"\"units.cpu.cores\" = {_q(src + ': intra-op threads used by the benchmarks')}",
        f"\"units.cpu.peak_gops.fp32\" = {_q(src + f': fp32 GEMM rate / matmul efficiency {eff:g}')}",
        f"\"units.cpu.peak_gops.int8\" = {_q(src + f': best of QDQ int8 GEMM/conv rate / efficiency {eff:g}')}",
        *([f"\"units.cpu.peak_gops.fp16\" = {_q(src + ': no fp16 benchmark; set to the fp32 rate (onnxruntime CPU runs most fp16 work through fp32 kernels)')}"]
          if has_fp16 else []),
        "",
    ]
    return "\n".join(lines)


def run_calibration(base_target: str, out_path: str | Path, *, threads: int = 1, small: bool = False,
                    name: str | None = None) -> dict:
    """Measure this machine and write a profile extending ``base_target`` to ``out_path``.

    Returns the measurements (dict). The file loads with ``edgepack.target.load_target(out_path)``;
    ``base_target`` is a built-in name (or a path, written as given). ``small`` uses quick sizes (tests).
    """
    from ..target import load_target

    base = load_target(base_target)  # fail early on a bad base name
    m = measure(threads, SMALL if small else Sizes(), rounds=1 if small else 3)
    cpu = cpu_name()
    out_path = Path(out_path)
    cpu_unit = next(u for u in base.device.units if u.kind == "cpu")
    text = profile_text(base_target, m, cpu, name or f"{base.name}-calibrated", "fp16" in cpu_unit.peak_gops)
    out_path.write_text(text, encoding="utf-8")
    m["cpu"] = cpu
    return m
