"""Estimates: the cost model on hand-computable graphs, the runtime-size model's calibration points,
energy arithmetic, liveness peak memory, and the calibrate micro-benchmarks writing a loadable profile."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import TensorProto, helper, numpy_helper

from edgepack.estimate import energy, estimate_bundle, latency, size
from edgepack.estimate.base import Estimate
from edgepack.target import ComputeUnit, load_target
from edgepack.transforms import infer_shapes


def _profile(peak=100.0, bw=10.0, disp=2.0, **device):
    p = load_target("rpi5-cpu")
    unit = ComputeUnit("cpu", "cpu", 4, {"fp32": peak, "int8": 4 * peak}, 5.0)
    dev = dataclasses.replace(p.device, units=(unit,), memory_bandwidth_gbps=bw, dispatch_overhead_us=disp, **device)
    return dataclasses.replace(p, device=dev)


def _expected_us(flops, moved, cls, peak, bw, disp, columns):
    eff = latency.EFFICIENCY[cls] * min(1.0, flops / latency.SATURATION_FLOPS) ** latency.SMALL_EXP
    eff *= min(1.0, columns / latency.CHANNEL_SAT) ** latency.CHANNEL_EXP
    compute = flops / (peak * 1e3 * eff)
    bpus = bw * 1e3
    if moved <= latency.CACHE_BYTES:
        memory = moved / (bpus * latency.CACHE_SPEEDUP)
    else:
        memory = latency.CACHE_BYTES / (bpus * latency.CACHE_SPEEDUP) + (moved - latency.CACHE_BYTES) / bpus
    return max(compute, memory) + disp


def test_single_conv_cost_exact():
    w = numpy_helper.from_array(np.zeros((16, 8, 3, 3), np.float32), "w")
    m = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], [w])
    b = latency.breakdown(infer_shapes(m), _profile(), "fp32", fused=False)
    flops = 2.0 * (16 * 16 * 16) * (8 * 3 * 3)  # 589,824
    moved = 4.0 * (8 * 256 + 16 * 8 * 9 + 16 * 256)  # x + w + y bytes
    assert flops == 589_824 and moved == 29_184
    (node,) = b.nodes
    assert node.cost_class == "conv"
    assert node.total_us == pytest.approx(_expected_us(flops, moved, "conv", 100.0, 10.0, 2.0, columns=16), rel=1e-12)
    assert b.total_us == pytest.approx(node.total_us + latency.RUN_DISPATCHES * 2.0, rel=1e-12)


def test_single_matmul_cost_exact_and_memory_bound():
    w = numpy_helper.from_array(np.zeros((128, 32), np.float32), "w")
    m = make_model([helper.make_node("MatMul", ["a", "w"], ["y"])],
                   [helper.make_tensor_value_info("a", TensorProto.FLOAT, [64, 128])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 32])], [w])
    flops = 2.0 * 64 * 32 * 128
    moved = 4.0 * (64 * 128 + 128 * 32 + 64 * 32)
    for bw in (10.0, 0.001):  # compute-bound, then memory-bound (DRAM beyond the cache share)
        b = latency.breakdown(infer_shapes(m), _profile(bw=bw), "fp32", fused=False)
        (node,) = b.nodes
        assert node.total_us == pytest.approx(_expected_us(flops, moved, "matmul", 100.0, bw, 2.0, columns=32), rel=1e-12)
    assert node.memory_us > node.compute_us


def test_depthwise_conv_cost_exact():
    """Depthwise: FLOPs on H_out x W_in (a height stride saves rows, a width stride nothing) plus
    per-row and per-channel costs per kernel tap, in dispatches."""
    w = numpy_helper.from_array(np.zeros((8, 1, 5, 5), np.float32), "w")
    m = make_model([helper.make_node("Conv", ["x", "w"], ["y"], group=8, pads=[2, 2, 2, 2], strides=[2, 2])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 10, 10])], [w])
    b = latency.breakdown(infer_shapes(m), _profile(), "fp32", fused=False)
    (node,) = b.nodes
    assert node.cost_class == "conv-depthwise"
    flops = 2.0 * 8 * 10 * 20 * 25  # C x H_out x W_in x taps, 2 per MAC
    fixed = 8 * 25 * (10 * latency.DW_ROW_TAP_DISPATCHES + latency.DW_CHANNEL_TAP_DISPATCHES) * 2.0
    eff = latency.EFFICIENCY["conv-depthwise"]
    moved = 4.0 * (8 * 400 + 8 * 25 + 8 * 100)
    memory = moved / (10.0 * 1e3 * latency.CACHE_SPEEDUP)
    assert node.total_us == pytest.approx(max(flops / (100.0 * 1e3 * eff), memory) + 2.0 + fixed, rel=1e-12)


def test_elementwise_ops_priced_per_element_and_cache_from_profile():
    m = make_model([helper.make_node("Sigmoid", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1000])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1000])])
    b = latency.breakdown(infer_shapes(m), _profile(bw=10.0, cache_bytes=1000.0, cache_bandwidth_gbps=40.0), "fp32")
    (node,) = b.nodes
    compute = 1000 * latency.ELEMENT_OPS["Sigmoid"] / (100.0 * 1e3 * latency.EFFICIENCY["elementwise"])
    memory = 1000.0 / 40e3 + 7000.0 / 10e3  # 8,000 bytes: the first 1,000 at the cache rate
    assert node.compute_us == pytest.approx(compute, rel=1e-12)
    assert node.memory_us == pytest.approx(memory, rel=1e-12)
    assert any("1.0e-03 MB" in a or "0.001 MB" in a for a in b.assumptions)


def test_add_then_layernorm_priced_as_fused_skip_layernorm():
    dims = [1, 4, 16]
    g = numpy_helper.from_array(np.ones(16, np.float32), "g")
    nodes = [helper.make_node("Add", ["x", "r"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "g"], ["y"], axis=-1)]
    m = infer_shapes(make_model(nodes, [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("x", "r")],
                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)], [g]))
    fused = latency.breakdown(m, _profile(), "fp32", fused=True)
    assert [n.op_type for n in fused.nodes] == ["LayerNormalization"]
    assert fused.nodes[0].compute_us == pytest.approx(
        64 * latency.ELEMENT_OPS["SkipLayerNormalization"] / (100.0 * 1e3 * latency.EFFICIENCY["elementwise"]), rel=1e-12)
    plain = latency.breakdown(m, _profile(), "fp32", fused=False)
    assert [n.op_type for n in plain.nodes] == ["Add", "LayerNormalization"]


def test_swish_mul_is_fused_into_its_sigmoid():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    m = infer_shapes(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]))
    assert [n.op_type for n in latency.breakdown(m, _profile(), "fp32", fused=True).nodes] == ["Sigmoid"]
    assert [n.op_type for n in latency.breakdown(m, _profile(), "fp32", fused=False).nodes] == ["Sigmoid", "Mul"]


def test_activation_fused_into_conv_costs_its_arithmetic_only():
    w = numpy_helper.from_array(np.zeros((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("HardSigmoid", ["c"], ["y"])]
    m = infer_shapes(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w]))
    conv, act = latency.breakdown(m, _profile(), "fp32", fused=True).nodes
    assert act.op_type == "HardSigmoid" and act.memory_us == 0.0 and act.dispatch_us == 0.0
    assert act.compute_us == pytest.approx(
        256 * latency.ELEMENT_OPS["HardSigmoid"] / (100.0 * 1e3 * latency.EFFICIENCY["elementwise"]), rel=1e-12)
    unfused = latency.breakdown(m, _profile(), "fp32", fused=False).nodes[1]
    assert unfused.total_us > act.total_us


def test_int8_models_price_per_element_ops_in_fp32():
    m = infer_shapes(make_model([helper.make_node("Sigmoid", ["x"], ["y"])],
                                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1000])],
                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1000])]))
    (fp32,) = latency.breakdown(m, _profile(), "fp32").nodes
    (int8,) = latency.breakdown(m, _profile(), "int8").nodes  # the profile's int8 peak is 4x its fp32
    assert int8.precision == "fp32" and int8.compute_us == pytest.approx(fp32.compute_us, rel=1e-12)


def test_depthwise_recognised_through_qdq_weights():
    w = numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s"], ["w"]),
             helper.make_node("Conv", ["x", "w"], ["y"], group=8, pads=[1, 1, 1, 1])]
    m = infer_shapes(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w, scale]))
    conv = next(n for n in latency.breakdown(m, _profile(), "int8").nodes if n.op_type == "Conv")
    assert conv.cost_class == "conv-depthwise"


def test_gather_reads_only_the_rows_it_gathers():
    table = numpy_helper.from_array(np.zeros((50000, 64), np.float32), "table")
    m = make_model([helper.make_node("Gather", ["table", "ids"], ["y"])],
                   [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 64])], [table])
    (node,) = latency.breakdown(infer_shapes(m), _profile(), "fp32").nodes
    moved = 2.0 * 8 * 64 * 4 + 8.0 * 8  # rows read and written, plus the indices
    assert node.memory_us == pytest.approx(moved / (10.0 * 1e3 * latency.CACHE_SPEEDUP), rel=1e-12)


def test_fit_depthwise_recovers_known_coefficients():
    from edgepack.estimate.microbench import DEPTHWISE_GRID, fit_depthwise

    a, b, c = 2e-4, 3e-3, 8e-3
    samples = [(ch, h, w, k, s, ch * k * k * (a * ((h - 1) // s + 1) * w + b * ((h - 1) // s + 1) + c))
               for ch, h, w, k, s in DEPTHWISE_GRID]
    assert fit_depthwise(samples) == pytest.approx((a, b, c), rel=1e-6)


def test_estimate_latency_band_and_units():
    w = numpy_helper.from_array(np.zeros((128, 32), np.float32), "w")
    m = make_model([helper.make_node("MatMul", ["a", "w"], ["y"])],
                   [helper.make_tensor_value_info("a", TensorProto.FLOAT, [64, 128])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 32])], [w])
    e = latency.estimate_latency(infer_shapes(m), _profile(), "fp32")
    assert e.unit == "ms" and e.low < e.value < e.high and e.assumptions
    assert set(e.to_json()) == {"value", "low", "high", "unit", "method", "assumptions"}


def test_runtime_size_model_reproduces_calibration_points():
    pts = size.calibration_points()
    assert [p["point"] for p in pts] == ["minimal_no_ops", "mobile_reduced", "android_full"]
    for p in pts:
        assert p["low"] <= p["published_bytes"] <= p["high"], p
    assert pts[0]["model_bytes"] == 1_305_000


def test_stock_runtime_sizes_come_from_the_data_file():
    data = json.loads(size.runtime_sizes_file().read_text())
    entry = data["runtimes"]["onnxruntime-aarch64"]
    assert entry["sha256"] and entry["wheel"].endswith("aarch64.whl")
    est = size.stock_runtime(load_target("rpi4-cpu"))
    assert est.value == entry["runtime_bytes"] and entry["wheel"] in est.method
    assert size.stock_runtime(load_target("android-nnapi")).value == 12_200_000


def test_config_op_count():
    text = ("# comment\nai.onnx;17;Conv,Relu,Cast{\"inputs\": {\"0\": [\"float\",\"int32_t\"]}}\n"
            "com.microsoft;1;QLinearConv\n")
    assert size.count_config_ops(text) == (4, True)


def test_energy_arithmetic_phone_and_board():
    # phone: 10 ms on the CPU at 2 W -> 20 mJ; 3600 per hour -> 72 J = 0.02 Wh; at 4 V -> 5 mAh; 10 Wh -> 0.2 %
    phone = _profile(battery_wh=10.0, battery_v=4.0)
    phone = dataclasses.replace(phone, family="android",
                                device=dataclasses.replace(phone.device, units=(ComputeUnit("cpu", "cpu", 4, {"fp32": 1.0}, 2.0),)))
    e = energy.energy_per_inference(phone, {"cpu": 10_000.0})
    assert e.value == pytest.approx(20.0) and e.unit == "mJ"
    r = energy.at_rate(phone, e, 3600, 10.0)
    assert r["mah_per_hour"].value == pytest.approx(5.0)
    assert r["battery_pct_per_hour"].value == pytest.approx(0.2)
    # board: 20 mJ x 3600/h = 72 J/h = 0.02 W over 3 W idle; Wh per 1000 = 20 J / 3600; 37 Wh bank / 3.02 W
    board = _profile(idle_w=3.0, power_bank_wh=37.0)
    board = dataclasses.replace(board, device=dataclasses.replace(board.device, units=(ComputeUnit("cpu", "cpu", 4, {"fp32": 1.0}, 2.0),)))
    r = energy.at_rate(board, energy.energy_per_inference(board, {"cpu": 10_000.0}), 3600, 10.0)
    assert r["average_w"].value == pytest.approx(3.02)
    assert r["wh_per_1000"].value == pytest.approx(20.0 / 3600)
    assert r["power_bank_hours"].value == pytest.approx(37.0 / 3.02)


def test_energy_adds_partition_switches_at_cpu_power():
    p = _profile()
    e = energy.energy_per_inference(p, {"cpu": 1000.0}, switch_us=500.0)
    assert e.value == pytest.approx(5.0 * 1.0 + 5.0 * 0.5)


def _vi(name, n):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [n])


def test_liveness_chain_exact():
    # x(100) -> a(200) -> b(50) -> y(10): peaks are x+a=1200 bytes, then a+b=1000, then b+y=240
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    m = make_model(nodes, [_vi("x", 100)], [_vi("y", 10)])
    m.graph.value_info.extend([_vi("a", 200), _vi("b", 50)])
    assert size.peak_activation_bytes(m) == 4 * (100 + 200)


def test_liveness_diamond_exact():
    # x(10) -> p(100), x -> q(100), p+q -> y(10): while q is made, x, p and q are live (x still needed? no: q is x's last use)
    nodes = [helper.make_node("Relu", ["x"], ["p"]), helper.make_node("Relu", ["x"], ["q"]),
             helper.make_node("Add", ["p", "q"], ["y"])]
    m = make_model(nodes, [_vi("x", 10)], [_vi("y", 10)])
    m.graph.value_info.extend([_vi("p", 100), _vi("q", 100)])
    assert size.peak_activation_bytes(m) == 4 * (10 + 100 + 100)


def test_estimate_bundle_shape(tiny_cnn_path):
    out = estimate_bundle(tiny_cnn_path, load_target("android-nnapi"), "fp32", shapes={"x": (1, 3, 8, 8)}).to_json()
    for key in ("size", "latency_ms", "energy"):
        assert {"value", "low", "high", "unit", "method", "assumptions"} <= set(out[key])
        assert out[key]["low"] <= out[key]["value"] <= out[key]["high"]
    assert out["size"]["unit"] == "bytes" and out["latency_ms"]["unit"] == "ms" and out["energy"]["unit"] == "mJ"
    for part in ("artifact", "download", "runtime_stock", "runtime_minimal", "peak_memory"):
        assert out["size"][part]["unit"] == "bytes"
    assert out["energy"]["battery_pct_per_hour"]["unit"] == "%" and "mah_per_hour" in out["energy"]
    json.dumps(out)


def test_estimate_is_frozen():
    e = Estimate(1.0, 0.5, 2.0, "ms", "m", ["a"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.value = 2.0  # type: ignore[misc]


@pytest.mark.slow
def test_calibrate_writes_a_loadable_profile(tmp_path):
    from edgepack.estimate.calibrate import run_calibration

    out = tmp_path / "mydevice.toml"
    m = run_calibration("rpi4-cpu", out, small=True)
    p = load_target(out)
    assert p.name == "rpi4-cpu-calibrated" and p.device.anchors == ()
    cpu = next(u for u in p.device.units if u.kind == "cpu")
    assert cpu.peak_gops["fp32"] == pytest.approx(m["gemm_fp32_gops"] / latency.EFFICIENCY["matmul"], rel=1e-3)
    # the session its estimates model, and the per-class figures measured here with their spread
    assert p.estimate_session["optimization_level"] == "all" and p.estimate_session["threads"] == 1
    assert p.estimate_session["layout"] in ("nchw", "nchwc")
    assert {"eff_conv", "eff_conv_depthwise", "eff_conv_pointwise", "eff_recurrent", "op_Sigmoid"} <= set(p.device.cost_model)
    assert "spread" in p.device.sources["cost_model.eff_conv"]
    assert set(m["reference_drift"]) == {"overhead", "gemm-conv", "depthwise", "elementwise", "memory", "int8-recurrent"}
    assert p.device.memory_bandwidth_gbps > 0 and p.device.dispatch_overhead_us > 0
    assert "measured by edgepack calibrate" in p.device.sources["memory_bandwidth_gbps"]
    assert p.device.cache_bytes > 0 and p.device.cache_bandwidth_gbps > 0
    assert set(m["element_ops"]) >= {"Sigmoid", "Erf", "LayerNormalization", "SkipLayerNormalization"}


def test_hardswish_on_a_conv_output_is_the_convs_activation_under_nchwc():
    """x * HardSigmoid(x) after a Conv: onnxruntime's x86 NCHWc level runs it as the conv's HardSwish
    activation (no separate nodes, no reorders around them); elsewhere both stay separate nodes."""
    import dataclasses

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from conftest import make_model
    from edgepack.estimate import latency
    from edgepack.target import load_target
    from edgepack.transforms import infer_shapes

    w = numpy_helper.from_array(np.zeros((32, 32, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSigmoid", ["c"], ["h"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["c", "h"], ["y"])]
    model = infer_shapes(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 28, 28])],
                                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 28, 28])], [w]))
    base = load_target("rpi5-cpu")
    x86 = dataclasses.replace(base, estimate_session={"optimization_level": "all", "layout": "nchwc", "threads": 1})
    fused = latency.breakdown(model, x86, "fp32")
    ops = {c.op_type: c for c in fused.nodes}
    assert "Mul" not in ops and ops["HardSigmoid"].dispatch_us == 0 and ops["HardSigmoid"].memory_us == 0
    assert not [c for c in fused.nodes if c.op_type.startswith("Reorder") and c.name == "c"]
    plain = {c.op_type for c in latency.breakdown(model, base, "fp32").nodes}
    assert {"HardSigmoid", "Mul"} <= plain
