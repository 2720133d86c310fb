"""``edgepack calibrate``: micro-benchmarks on this machine, written as a profile that extends a base target.

Single-node ONNX models built with onnx.helper and timed with onnxruntime's CPU provider:
a large fp32 GEMM and 3x3 Conv (compute rate), QDQ int8 MatMul/Conv (int8 rate), a large
elementwise Add (memory bandwidth) and a chain of tiny Adds (per-node dispatch overhead).
The profile's ``peak_gops`` is the measured GEMM rate divided by latency.EFFICIENCY["matmul"],
so the cost model reproduces the measured GEMM; the other figures are written as measured.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..cleanup import tmp_prefix
from . import latency

OPSET = 17


@dataclass(frozen=True)
class Sizes:
    gemm: int = 1024  # M = K = N
    conv_hw: int = 28
    conv_c: int = 256
    dw_c: int = 256
    # 24 MB moved: beyond any per-core cache, the size of an edge model's larger per-node working sets
    # (on a Pi, DRAM; on a server core with a large shared L3, mostly that L3 - what such nodes see)
    add_elems: int = 2 * 1024 * 1024
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


def conv_model(c: int, hw: int, *, depthwise: bool = False, int8: bool = False,
               stride: int = 1) -> tuple[onnx.ModelProto, float]:
    rng = np.random.default_rng(1)
    cin_g = 1 if depthwise else c
    w = rng.standard_normal((c, cin_g, 3, 3)).astype(np.float32) * 0.1
    attrs = {"pads": [1, 1, 1, 1], "group": c if depthwise else 1, "strides": [stride, stride]}
    out = (hw - 1) // stride + 1
    flops = 2.0 * c * out * out * cin_g * 9
    if int8:
        return _qdq(["Conv"], [1, c, hw, hw], [1, c, out, out], w, attrs), flops
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], **attrs)], [_vi("x", [1, c, hw, hw])],
                  [_vi("y", [1, c, out, out])], [numpy_helper.from_array(w, "w")]), flops


def depthwise_model(c: int, h: int, w: int, k: int, stride: int = 1) -> onnx.ModelProto:
    """One depthwise k x k Conv (same padding) on [1, c, h, w]."""
    rng = np.random.default_rng(4)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32) * 0.1
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=c, pads=[k // 2] * 4, strides=[stride, stride],
                            kernel_shape=[k, k])
    return _model([node], [_vi("x", [1, c, h, w])], [_vi("y", [1, c, oh, ow])], [numpy_helper.from_array(wt, "w")])


# (channels, height, width, kernel, stride): square maps from few channels at 112 px to many at 7 px,
# and wide strips (text-line shapes), with 3x3 and 5x5 kernels
DEPTHWISE_GRID = ((16, 112, 112, 3, 1), (64, 56, 56, 3, 2), (128, 28, 28, 3, 1), (512, 7, 7, 3, 1),
                  (256, 14, 14, 5, 1), (64, 56, 56, 5, 1), (64, 4, 128, 5, 1), (128, 8, 64, 3, 1),
                  (32, 16, 256, 3, 2))


def fit_depthwise(samples: list[tuple[int, int, int, int, int, float]]) -> tuple[float, float, float]:
    """Fit t = C k^2 (a Ho Win + b Ho + c) to (channels, height, width, kernel, stride, us) samples.

    Returns (a, b, c) in microseconds: per multiply-accumulate (width stride is not skipped by the
    kernels, height stride is), per output row and per channel, each per kernel tap. Least squares
    on relative error, so small and large kernels weigh the same; negative terms are dropped.
    """
    x = np.array([[c * k * k * ((h - 1) // s + 1) * w, c * k * k * ((h - 1) // s + 1), c * k * k]
                  for c, h, w, k, s, _ in samples], float)
    y = np.array([max(us, 1e-3) for *_, us in samples])
    keep = [0, 1, 2]
    while True:
        coef, *_ = np.linalg.lstsq(x[:, keep] / y[:, None], np.ones(len(y)), rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            break
        keep.pop(int(np.argmin(coef[1:])) + 1 if (coef[1:] < 0).any() else 0)
    full = [0.0, 0.0, 0.0]
    for i, v in zip(keep, coef):
        full[i] = max(float(v), 0.0)
    return full[0], full[1], full[2]


def unary_model(op: str, n: int, **attrs) -> onnx.ModelProto:
    """y = op(x) over n floats (Div by a constant for 'Div')."""
    if op == "Div":
        return _model([helper.make_node("Div", ["x", "d"], ["y"])], [_vi("x", [n])], [_vi("y", [n])],
                      [numpy_helper.from_array(np.array([3.0], np.float32), "d")])
    if op == "Where":  # a mask broadcast over heads, as attention masks are: [1, n/64, 64] from [1, 1, 64]
        m = numpy_helper.from_array(np.arange(64).reshape(1, 1, 64) % 3 == 0, "m")
        return _model([helper.make_node("Reshape", ["x", "s"], ["x3"]), helper.make_node("Where", ["m", "v", "x3"], ["y"])],
                      [_vi("x", [n])], [_vi("y", [1, n // 64, 64])],
                      [m, numpy_helper.from_array(np.array(-1e4, np.float32), "v"),
                       numpy_helper.from_array(np.array([1, n // 64, 64], np.int64), "s")])
    return _model([helper.make_node(op, ["x"], ["y"], **attrs)], [_vi("x", [n])], [_vi("y", [n])])


# elementwise ops whose arithmetic, not memory traffic, sets their time (priced per element)
ELEMENT_OPS = ("Relu", "HardSigmoid", "HardSwish", "Div", "Reciprocal", "Sigmoid", "Tanh", "Exp", "Log",
               "Softplus", "Erf", "Sqrt", "Where")


def resize_model(n: int, mode: str) -> onnx.ModelProto:
    """2x Resize of [1, n/256, 16, 16] to [1, n/256, 32, 32] (``mode`` nearest or linear)."""
    c = max(n // 256, 1)
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
    return _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode=mode)], [_vi("x", [1, c, 16, 16])],
                  [_vi("y", [1, c, 32, 32])], [scales])


def layernorm_model(rows: int, hidden: int, *, skip: bool = False) -> onnx.ModelProto:
    """LayerNormalization over the last axis of [1, rows, hidden]; with ``skip``, of (x + r): the pair
    onnxruntime's extended level fuses into one SkipLayerNormalization kernel."""
    dims = [1, rows, hidden]
    inits = [numpy_helper.from_array(np.ones(hidden, np.float32), "g"),
             numpy_helper.from_array(np.zeros(hidden, np.float32), "b")]
    nodes = [helper.make_node("Add", ["x", "r"], ["s"])] if skip else []
    nodes.append(helper.make_node("LayerNormalization", ["s" if skip else "x", "g", "b"], ["y"], axis=-1, epsilon=1e-5))
    inputs = [_vi("x", dims)] + ([_vi("r", dims)] if skip else [])
    return _model(nodes, inputs, [_vi("y", dims)], inits)


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
    from ..runtime import ort as ort_runtime

    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    so = ort_runtime.session_options(level_name="extended", threads=threads, sequential=True)
    sess = ort_runtime.inference_session(path, so)
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
    # the median run, the statistic latency estimates and their validation use: a model's typical
    # latency; the fastest run would price every kernel as if the machine were never disturbed
    return float(np.median(times))


def gemm_rate(threads: int = 1, sizes: Sizes = Sizes()) -> float:
    """The fp32 GEMM rate (GOPS) now, timed as :func:`measure` times it (a check that the machine's
    speed has not moved since a calibration)."""
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("calibrate")) as tmp:
        one_ms = _time_ms(chain_model(1), threads, sizes.runs * 10, Path(tmp), "one")
        model, flops = gemm_model(sizes.gemm)
        return flops / (max(_time_ms(model, threads, sizes.runs, Path(tmp), "gemm") - one_ms, 1e-6) * 1e6)


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
    with tempfile.TemporaryDirectory(prefix=tmp_prefix("calibrate")) as tmp:
        folder = Path(tmp)
        chain_ms = _time_ms(chain_model(sizes.chain), threads, sizes.runs, folder, "chain")
        one_ms = _time_ms(chain_model(1), threads, sizes.runs * 10, folder, "one")
        out["dispatch_us"] = max(chain_ms - one_ms, 1e-6) * 1e3 / (sizes.chain - 1)
        out["run_overhead_us"] = max(one_ms * 1e3 - out["dispatch_us"], 0.0)
        disp_ms = one_ms
        if_ms = _time_ms(if_chain_model(sizes.chain // 4), threads, sizes.runs, folder, "ifs")
        out["if_us"] = max(if_ms - one_ms, 0.0) * 1e3 / (sizes.chain // 4)

        def net_ms(model, name):  # beyond a one-node session run
            return _time_ms(model, threads, sizes.runs, folder, name) - disp_ms

        def rate(model_flops, name):
            model, flops = model_flops
            return flops / (max(net_ms(model, name), 1e-6) * 1e6)  # GOPS

        out["gemm_fp32_gops"] = rate(gemm_model(sizes.gemm), "gemm")
        out["conv_fp32_gops"] = rate(conv_model(sizes.conv_c, sizes.conv_hw), "conv")
        out["conv_narrow_fp32_gops"] = rate(conv_model(sizes.conv_c // 4, sizes.conv_hw * 2), "conv_narrow")
        out["conv_narrow_s2_fp32_gops"] = rate(conv_model(sizes.conv_c // 4, sizes.conv_hw * 2, stride=2), "conv_narrow_s2")
        out["dwconv_fp32_gops"] = rate(conv_model(sizes.dw_c, sizes.conv_hw, depthwise=True), "dwconv")
        dw_samples = []
        for c, h, w, k, st in DEPTHWISE_GRID:
            dw_samples.append((c, h, w, k, st, net_ms(depthwise_model(c, h, w, k, st), f"dw{c}_{h}_{w}_{k}_{st}") * 1e3))
        a, b, c = fit_depthwise(dw_samples)
        out["dw_mac_gops"] = 2e-3 / a if a > 0 else out["dwconv_fp32_gops"]  # as FLOPs (2 per MAC)
        out["dw_row_tap_us"], out["dw_channel_tap_us"] = b, c
        # per-element cost of arithmetic-heavy elementwise ops on a cache-resident tensor:
        # (key, model, output elements); Resize is 2x upsampling, LayerNormalization over 384-wide rows
        n = sizes.add_cache_elems
        rows = max(n // 384, 1)
        element_models = [
            *((op, unary_model(op, n), n) for op in ELEMENT_OPS),
            *((f"Resize-{mode}", resize_model(n // 4, mode), 4 * (n // 4)) for mode in ("nearest", "linear", "cubic")),
            *((name, layernorm_model(rows, 384, skip=skip), rows * 384)
              for name, skip in (("LayerNormalization", False), ("SkipLayerNormalization", True))),
        ]
        out["element_ns"] = {key: max(net_ms(model, key), 0.0) * 1e6 / elements for key, model, elements in element_models}
        # the per-core cache: streaming Add rate over growing working sets; the knee is the largest
        # working set still moving faster than halfway between the cache-resident and DRAM rates
        ladder = []
        for i in range(12):
            elems = int(sizes.add_cache_elems * 1.3**i)
            ladder.append((12.0 * elems, rate(add_model(elems), f"ladder{i}")))
        out["gemm_int8_gops"] = rate(gemm_model(sizes.gemm, int8=True), "gemm8")
        out["conv_int8_gops"] = rate(conv_model(sizes.conv_c, sizes.conv_hw, int8=True), "conv8")
        out["lstm_fp32_gops"] = rate(lstm_model(sizes.lstm_seq, sizes.lstm_hidden), "lstm")
        out["add_gbps"] = rate(add_model(sizes.add_elems), "add")
        out["add_cache_gbps"] = rate(add_model(sizes.add_cache_elems), "add_cache")
        cache_rate = max([out["add_cache_gbps"]] + [g for _, g in ladder[:2]])
        half = (cache_rate + out["add_gbps"]) / 2
        fast = [w for w, g in ladder if g >= half]
        out["cache_bytes"] = max(fast) if fast else 12.0 * sizes.add_cache_elems
        out["cache_gbps"] = cache_rate
    g = out["gemm_fp32_gops"]
    disp = max(out["dispatch_us"], 1e-6)
    out["ratios_to_gemm"] = {"conv": out["conv_fp32_gops"] / g, "conv-depthwise": out["dw_mac_gops"] / g,
                             "recurrent": out["lstm_fp32_gops"] / g}
    out["if_dispatches"] = out["if_us"] / disp
    out["conv_narrow_ratio"] = out["conv_narrow_fp32_gops"] / out["conv_fp32_gops"]
    out["conv_strided_ratio"] = out["conv_narrow_s2_fp32_gops"] / out["conv_narrow_fp32_gops"]
    out["dw_row_tap_dispatches"] = out["dw_row_tap_us"] / disp
    out["dw_channel_tap_dispatches"] = out["dw_channel_tap_us"] / disp
    # latency.ELEMENT_OPS: ns per element x the elementwise compute rate (peak x efficiency)
    elem_rate = g / latency.EFFICIENCY["matmul"] * latency.EFFICIENCY["elementwise"]  # GOPS = ops per ns
    out["element_ops"] = {op: ns * elem_rate for op, ns in out["element_ns"].items()}
    out["cache_speedup"] = out["cache_gbps"] / out["add_gbps"]
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
        f"cache_bytes = {int(m['cache_bytes'])}",
        f"cache_bandwidth_gbps = {m['cache_gbps']:.3f}",
        f"dispatch_overhead_us = {m['dispatch_us']:.3f}",
        "anchors = []  # the base's published anchors are for its reference device, not this one",
        "",
        "[device.units.cpu]",
        "kind = \"cpu\"",
        f"cores = {m['threads']}",
        f"peak_gops = {{ fp32 = {fp32:.2f}, int8 = {int8:.2f}" + (f", fp16 = {fp32:.2f}" if has_fp16 else "") + " }",
        "",
        "[device.sources]",
        f"\"memory_bandwidth_gbps\" = {_q(src + ': elementwise Add over a 24 MB working set, 12 bytes per element')}",
        f"\"cache_bytes\" = {_q(src + ': largest Add working set still streaming faster than halfway between the cache and DRAM rates')}",
        f"\"cache_bandwidth_gbps\" = {_q(src + ': elementwise Add of cache-resident tensors, 12 bytes per element')}",
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
    from ..runtime.host import host_cpu

    cpu = host_cpu()
    out_path = Path(out_path)
    cpu_unit = next(u for u in base.device.units if u.kind == "cpu")
    text = profile_text(base_target, m, cpu, name or f"{base.name}-calibrated", "fp16" in cpu_unit.peak_gops)
    out_path.write_text(text, encoding="utf-8")
    m["cpu"] = cpu
    return m
