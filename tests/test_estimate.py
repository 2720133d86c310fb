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
    out = estimate_bundle(tiny_cnn_path, load_target("android-nnapi"), "fp32", shapes={"x": (1, 3, 8, 8)})
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
    assert p.device.memory_bandwidth_gbps > 0 and p.device.dispatch_overhead_us > 0
    assert "measured by edgepack calibrate" in p.device.sources["memory_bandwidth_gbps"]
