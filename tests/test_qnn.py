"""The android-qnn target: profiles, provider options, placement parsing, candidates, the bundle.

Tests that need the QNN EP itself (onnxruntime-qnn, the `qnn` extra, part of `dev` on Python >= 3.11)
skip without it; they run tiny graphs on this host's QNN HTP backend (a simulator on x86_64).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import make_model
from edgepack.backends.qnn import coverage, options, qdq
from edgepack.errors import ProfileError, StageError
from edgepack.target import load_target

QNN = pytest.mark.skipif(sys.version_info < (3, 11), reason="onnxruntime-qnn needs Python >= 3.11")


def _has_qnn() -> bool:
    from edgepack.backends.qnn import session

    return session.installed()


needs_qnn = pytest.mark.skipif(not _has_qnn(), reason="onnxruntime-qnn is not installed (pip install 'edgepack[qnn]')")


# ------------------------------------------------------------------------------------- provider options


def _check(opts: dict) -> str | None:
    def fail(key, why):
        raise ProfileError(f"{key}: {why}")

    try:
        options.check(opts, fail)
    except ProfileError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(("opts", "expected"), [
    ({}, "runtime.provider_options.soc_model: required"),
    ({"soc_model": 9999}, "9999 is not a soc_model edgepack knows (QNN would silently run every node on the CPU"),
    ({"soc_model": "abc"}, "'abc' is not a soc_model"),
    ({"soc_model": True}, "True is not a soc_model"),
    ({"soc_model": 57, "htp_arch": 80}, "80 is not an HTP architecture onnxruntime-qnn parses"),
    ({"soc_model": 57, "htp_arch": 73}, "73 contradicts soc_model 57 (SM8650, HTP V75)"),
    ({"soc_model": 57, "htp_performance_mode": "fast"}, "'fast' is not one of: burst, balanced"),
    ({"soc_model": 57, "htp_performance_mode": "brust"}, "(did you mean 'burst'?)"),
    ({"soc_model": 57, "backend_type": "cpu"}, "edgepack packages the HTP (NPU) backend only"),
    ({"soc_model": 57, "backend_path": "/opt/qnn/libQnnHtp.so"}, "backend_path: not a profile setting"),
    ({"soc_model": 57, "enable_htp_fp16_precision": "1"}, "set by the fp16 recipe"),
    ({"soc_model": 57, "htp_perfomance_mode": "burst"}, "unknown QNN provider option (did you mean 'htp_performance_mode'?)"),
    ({"soc_model": 57, "vtcm_mb": 9}, "from 1 to 8 (the VTCM of SM8650)"),
    ({"soc_model": 57, "qnn_context_priority": "urgent"}, "'urgent' is not one of: low, normal, normal_high, high"),
    ({"soc_model": 57, "htp_graph_finalization_optimization_mode": 4}, "is not one of: 0, 1, 2, 3"),
])
def test_bad_provider_options_are_named(opts, expected):
    assert expected in (_check(opts) or "")


@pytest.mark.parametrize("opts", [
    {"soc_model": 57},
    {"soc_model": "43", "htp_arch": 73, "htp_performance_mode": "sustained_high_performance", "vtcm_mb": 8},
    {"backend_type": "htp", "soc_model": 69, "qnn_context_priority": "high", "htp_graph_finalization_optimization_mode": "3"},
])
def test_good_provider_options_pass_and_become_strings(opts):
    assert _check(opts) is None
    dev = options.device_options(opts)
    assert dev["backend_type"] == "htp" and all(isinstance(v, str) for v in dev.values())
    assert list(dev) == sorted(dev)


# ------------------------------------------------------------------------------------- profiles


def test_builtin_qnn_profiles_name_their_soc_and_sources():
    expected = {"android-qnn": (57, "S24"), "android-qnn-8gen2": (43, "S23"), "android-qnn-8elite": (69, "8 Elite QRD")}
    for name, (soc, device) in expected.items():
        p = load_target(name)
        assert p.engine == "onnxruntime-qnn" and p.execution_provider == "QNN" and p.is_accelerator
        assert options.device_options(p.provider_options)["soc_model"] == str(soc)
        assert [r.name for r in p.recipes] == ["static-int8", "static-w8a16", "fp16"]
        npu = next(u for u in p.device.units if u.kind == "npu")
        assert set(npu.peak_gops) == {"int8", "fp16"}
        for prec in npu.peak_gops:  # the SoC's own AI Hub figure, not the base profile's
            assert device in p.device.sources[f"units.npu.peak_gops.{prec}"]
        assert "proxy" in p.device.sources["units.npu.active_w"]
        assert p.device.battery_wh and p.device.sources["battery_wh"]


def _user_profile(tmp_path: Path, body: str, base: str = "android-qnn") -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(f'extends = "{base}"\nname = "mine"\n{body}', encoding="utf-8")
    return path


@pytest.mark.parametrize(("body", "expected"), [
    ('[runtime]\nprovider_options = { soc_model = 9999 }\n',
     "mine.toml: 'runtime.provider_options.soc_model' contradicts the profile: 9999 is not a soc_model"),
    ('[runtime]\nprovider_options = { soc_model = 57, htp_arch = 79 }\n', "79 contradicts soc_model 57"),
    ('[[quantization]]\nname = "none"\n', "the HTP has no float32 path"),
    ('[[quantization]]\nname = "static-int8"\nactivation_type = "int8"\n', "unsigned activations"),
    ('[[quantization]]\nname = "dynamic-int8"\n', "engine 'onnxruntime-qnn' has no 'dynamic-int8' recipe"),
    ('[minimal_build]\nlevel = "minimal"\n', "prebuilt AARs: use 'none'"),
    ('[shapes]\npolicy = "dynamic"\n', "fixed shapes"),
    ('[device]\nidle_w = 0.5\n', "'device.idle_w' has no source"),
    ('[minimal_build]\nstock_size = "published:android_full+qnn"\n', "several joined by '+'"),
])
def test_bad_qnn_profiles_are_refused(tmp_path, body, expected):
    with pytest.raises(ProfileError, match=None) as info:
        load_target(_user_profile(tmp_path, body))
    assert expected in str(info.value)


def test_w8a16_is_refused_where_the_engine_lacks_it(tmp_path):
    path = _user_profile(tmp_path, '[[quantization]]\nname = "static-w8a16"\n', base="android-nnapi")
    with pytest.raises(ProfileError, match="engine 'onnxruntime' has no 'static-w8a16' recipe"):
        load_target(path)


def test_qnn_stock_runtime_adds_the_plugin_to_onnxruntime():
    from edgepack.estimate.size import stock_runtime

    both = stock_runtime(load_target("android-qnn"))
    ort_only = stock_runtime(load_target("android-nnapi"))
    assert both.value > ort_only.value + 20e6  # the QNN plugin, libQnnHtp, the V75 skeleton...
    assert "libQnnHtpV75Skel.so" in both.method and "published figure" in both.method


def test_htp_estimate_puts_the_whole_graph_on_the_npu_and_prices_w8a16_at_its_16_bit_rate():
    from edgepack.estimate.latency import breakdown
    from edgepack.transforms import infer_shapes

    model, profile = infer_shapes(conv_net()), load_target("android-qnn")
    b8, b16 = breakdown(model, profile, "int8"), breakdown(model, profile, "int16")
    assert {c.unit for c in b8.nodes} == {"npu"} and b8.switches == 2
    assert {c.precision for c in b16.nodes} == {"fp16"}  # no int16 figure in the profile: its fp16 rate
    assert b16.total_us > b8.total_us
    assert any("16-bit activations" in a for a in b16.assumptions)
    assert any("QNN HTP partition" in a for a in b8.assumptions)


# ------------------------------------------------------------------------------------- placement parsing


def test_placement_maps_transformed_names_back_to_the_model():
    ops = {"in_q": "QuantizeLinear", "conv": "Conv", "w_dq": "DequantizeLinear", "det": "Det", "out_dq": "DequantizeLinear"}
    subgraphs = [("CPUExecutionProvider", ["in_q"]),
                 ("QNNExecutionProvider", ["conv_token_3", "Transpose_token_7", "conv/duplicated", "w_dq_token_1"]),
                 ("CPUExecutionProvider", ["det", "out_dq"])]
    unsupported = [{"node_name": "in_q", "op_type": "QuantizeLinear",
                    "reason": "QNN EP is configured to not take Q nodes that consume a graph input."},
                   {"node_name": "det", "op_type": "Det", "reason": "Operators of type `Det` are not supported by QNN EP."}]
    pl = coverage.parse(ops, subgraphs, unsupported, fallback=True)
    assert pl.total == 5 and pl.on_qnn == 2 and pl.rewritten == 0 and pl.partitions == (2,)
    assert {n for n, _ in pl.on_cpu} == {"in_q", "det", "out_dq"}
    cov = coverage.to_coverage(pl, load_target("android-qnn"), "test")
    groups = {next(iter(u.ops)): u for u in cov.unsupported}
    assert "Det` are not supported" in groups["Det"].remedy and "replace Det" in groups["Det"].remedy
    assert "none needed" in groups["QuantizeLinear"].remedy
    assert "no reason reported" in groups["DequantizeLinear"].remedy


def test_placement_counts_rewritten_nodes_with_the_one_htp_partition():
    ops = {"a": "Conv", "b": "DequantizeLinear", "c": "Relu"}
    pl = coverage.parse(ops, [("QNNExecutionProvider", ["a_token_1", "c", "DequantizeLinear_token_9"])], [], fallback=False)
    assert pl.rewritten == 1 and pl.on_qnn == 3 and pl.partitions == (3,) and pl.on_cpu == ()


# ------------------------------------------------------------------------------------- candidate graph edits


def _hardswish_model(swapped: bool) -> onnx.ModelProto:
    mul_in = ["hs", "x"] if swapped else ["x", "hs"]
    nodes = [helper.make_node("HardSigmoid", ["x"], ["hs"], alpha=1 / 6, beta=0.5), helper.make_node("Mul", mul_in, ["y"])]
    vi = helper.make_tensor_value_info
    return make_model(nodes, [vi("x", TensorProto.FLOAT, [1, 4])], [vi("y", TensorProto.FLOAT, [1, 4])])


def test_hardswish_fix_swaps_only_the_fused_form_and_keeps_the_values(tmp_path):
    import onnxruntime as ort

    m = _hardswish_model(swapped=False)
    before = m.SerializeToString()
    assert qdq.fix_hardswish(m) == 1 and list(m.graph.node[1].input) == ["hs", "x"]
    assert qdq.fix_hardswish(_hardswish_model(swapped=True)) == 0
    x = {"x": np.linspace(-4, 4, 4, dtype=np.float32)[None]}
    run = lambda b: ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, x)[0]  # noqa: E731
    np.testing.assert_array_equal(run(before), run(m.SerializeToString()))


def test_output_concat_stays_float_and_fp16_candidates_are_recognised(tmp_path):
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"), helper.make_node("Concat", ["x", "s"], ["y"], axis=1, name="head"),
             helper.make_node("Concat", ["x", "x"], ["z"], axis=1, name="inner")]
    m = make_model(nodes, [vi("x", TensorProto.FLOAT, [1, 2])], [vi("y", TensorProto.FLOAT, [1, 4])])
    assert qdq.output_concats(m) == ["head"]
    src, half = tmp_path / "f.onnx", tmp_path / "h.onnx"
    onnx.save(_hardswish_model(False), src)
    record = qdq.fp16_model(src, half)
    assert record["settings"]["hardswish_inputs_swapped"] == 1
    assert qdq.is_fp16(half) is False  # no float16 initializer in this graph
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    onnx.save(make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", TensorProto.FLOAT, [1, 2])],
                         [vi("y", TensorProto.FLOAT, [1, 2])], [w]), src)
    qdq.fp16_model(src, half)
    assert qdq.is_fp16(half) and not qdq.is_fp16(src)


# ------------------------------------------------------------------------------------- on the QNN HTP backend


def conv_net(with_det: bool = False) -> onnx.ModelProto:
    """Conv(3->32) -> Relu -> Conv(32->64) -> GlobalAveragePool -> Flatten -> Gemm(64->4) (~20k weights, enough for
    int8 to make it smaller); optionally a Det branch the HTP does not have."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n) for n, s in
             (("w1", (32, 3, 3, 3)), ("w2", (64, 32, 3, 3)), ("fc_w", (4, 64)), ("fc_b", (4,)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1, name="fc")]
    vi = helper.make_tensor_value_info
    outputs = [vi("y", TensorProto.FLOAT, [1, 4])]
    if with_det:
        nodes.append(helper.make_node("Det", ["c2"], ["d"], name="det"))
        outputs.append(vi("d", TensorProto.FLOAT, [1, 64]))
    return make_model(nodes, [vi("x", TensorProto.FLOAT, [1, 3, 16, 16])], outputs, inits)


def _calibration(tmp_path: Path, n: int = 16) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(1)
    np.save(folder / "x.npy", rng.uniform(0, 1, (n, 1, 3, 16, 16)).astype(np.float32))
    return folder


@pytest.fixture
def conv_path(tmp_path) -> Path:
    path = tmp_path / "conv.onnx"
    onnx.save(conv_net(), str(path))
    return path


@QNN
@needs_qnn
def test_a_bad_soc_model_is_why_edgepack_checks_options(conv_path, tmp_path):
    """soc_model 9999 makes QNN's backend setup fail and every node go to the CPU; only a session with
    CPU fallback disabled says so - the reason edgepack validates the value before any session."""
    from edgepack.backends.qnn import session

    qdq_path = tmp_path / "q.onnx"
    qdq.quantize_qdq(conv_path, qdq_path, "static-int8", [{"x": np.ones((1, 3, 16, 16), np.float32)}])
    loose = coverage.placement(qdq_path, session.host_options({"soc_model": "9999"}), fallback=True)
    assert loose.on_qnn == 0
    with pytest.raises(StageError, match="HTP must take the whole graph"):
        session.create(qdq_path, session.host_options({"soc_model": "9999"}))


@QNN
@needs_qnn
def test_every_known_soc_model_is_accepted_by_the_htp_backend(conv_path, tmp_path):
    from edgepack.backends.qnn import session

    qdq_path = tmp_path / "q.onnx"
    qdq.quantize_qdq(conv_path, qdq_path, "static-int8", [{"x": np.ones((1, 3, 16, 16), np.float32)}])
    for soc in options.SOCS:
        pl = coverage.placement(qdq_path, session.host_options({"soc_model": str(soc)}), fallback=False)
        assert pl.on_qnn == pl.total, soc


@QNN
@needs_qnn
def test_context_binary_bytes_do_not_depend_on_folder_or_run(conv_path, tmp_path):
    from edgepack.backends.qnn import context

    qdq_path = tmp_path / "q.onnx"
    qdq.quantize_qdq(conv_path, qdq_path, "static-int8", [{"x": np.ones((1, 3, 16, 16), np.float32)}])
    digests = []
    for folder in ("a", "b/deeper"):
        out = tmp_path / folder
        out.mkdir(parents=True)
        ctx, binary = context.compile_context(qdq_path, out, "model_ctx", {"backend_type": "htp", "soc_model": "57"})
        assert binary.name == "model_ctx_qnn.bin" and str(tmp_path).encode() not in ctx.read_bytes() + binary.read_bytes()
        digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in (ctx, binary)])
    assert digests[0] == digests[1]
    info = context.context_info(ctx)
    assert info["ep_cache_context"] == "model_ctx_qnn.bin" and info["ep_compatibility_info"].split(":")[5] == "57"


@QNN
@needs_qnn
def test_inspect_shows_what_qnn_refuses_and_why(tmp_path, cli):
    path = tmp_path / "det.onnx"
    onnx.save(conv_net(with_det=True), str(path))
    code, out, err = cli("inspect", path, "--target", "android-qnn", "--json")
    assert code == 0 and err == ""
    scenarios = json.loads(out)["targets"]["android-qnn"]["coverage"]
    assert [s["scenario"].split(",")[1].strip().split(" ")[0] for s in scenarios] == ["QDQ", "fp16"]
    for s in scenarios:
        assert s["available"] and s["nodes_supported"] < s["nodes_total"]
        det = [u for u in s["unsupported"] if "Det" in u["ops"]]
        assert det and "not supported by QNN EP" in det[0]["remedy"] and "android-nnapi" in det[0]["remedy"]


@QNN
@needs_qnn
def test_build_refuses_a_graph_the_htp_does_not_take_entirely(tmp_path, cli):
    path = tmp_path / "det.onnx"
    onnx.save(conv_net(with_det=True), str(path))
    code, out, err = cli("build", path, "--target", "android-qnn", "--calibration", _calibration(tmp_path), "-o", tmp_path / "o",
                         "--json")  # (no progress lines)
    assert code == 1 and err.startswith("target not built: android-qnn: quantize:"), err
    assert "cannot take model.static-int8.onnx: it refuses Det (1 node: Operators of type `Det` are not supported" in err
    assert "fp16 dropped" in err and not (tmp_path / "o" / "android-qnn").exists()


@QNN
@needs_qnn
def test_tiny_build_ships_a_reproducible_context_binary_verified_on_the_htp(conv_path, tmp_path, cli):
    calib = _calibration(tmp_path)
    bundles = []
    for run in ("one", "two"):
        code, out, err = cli("build", conv_path, "--target", "android-qnn", "--calibration", calib, "-o", tmp_path / run)
        assert code == 0, err
        bundles.append(tmp_path / run / "android-qnn")
    files = sorted(p.relative_to(bundles[0]).as_posix() for p in bundles[0].rglob("*") if p.is_file())
    assert files == ["README.md", "manifest.json", "model.onnx", "model_ctx.onnx", "model_ctx_qnn.bin",
                     "reference/model.in0.bin", "reference/model.out0.bin", "runtime_config.json"]
    for name in files:  # two builds -> identical bytes, the context binary included
        assert (bundles[0] / name).read_bytes() == (bundles[1] / name).read_bytes(), name
    doc = json.loads((bundles[0] / "manifest.json").read_text())
    assert doc["coverage"]["nodes_on_accelerator"] == doc["coverage"]["nodes_total"] and doc["coverage"]["partitions"] == 1
    assert doc["recipe"]["quantization"]["recipe"] == "static-int8"
    assert doc["runtime"]["provider_options"] == {"backend_type": "htp", "htp_performance_mode": "burst", "soc_model": "57"}
    assert doc["runtime"] == json.loads((bundles[0] / "runtime_config.json").read_text())
    verified = [d for d in doc["recipe"]["decisions"] if d.startswith("verify:")]
    import platform

    where = f"NPU numerics (QNN HTP backend on {platform.machine().lower()}, QNN SDK 2."
    assert where in verified[0] and "soc_model 57)" in verified[0]
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "with simulated NPU numerics" in verified[0]
    assert doc["recipe"]["conversion"]["verification_backend"] in verified[0]
    assert onnx.load(str(bundles[0] / "model_ctx.onnx")).ir_version <= onnx.load(str(bundles[0] / "model.onnx")).ir_version
    record = json.loads((tmp_path / "one" / "android-qnn.build.json").read_text())
    assert record["measurements"]["host_latency"] == {"model": {}}  # the simulator's timings are no device latency
    lat = doc["estimates"]["latency_ms"]
    assert lat["value"] > 0 and "QNN HTP partition" in " ".join(lat["assumptions"])
    code, out, err = cli("verify", bundles[0])
    assert code == 0, out + err
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "manifest.schema.json").read_text())
    jsonschema.validate(doc, schema)


@QNN
@needs_qnn
def test_cli_output_stays_clean_of_qnn_library_noise(conv_path, tmp_path):
    """libQnnHtp prints to fd 1 at the first HTP session of a process: a fresh process shows it or not."""
    done = subprocess.run([sys.executable, "-m", "edgepack", "inspect", str(conv_path), "--target", "android-qnn", "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout)["targets"]["android-qnn"]["coverage"][0]["nodes_supported"] > 0
    done = subprocess.run([sys.executable, "-m", "edgepack", "build", str(conv_path), "--target", "android-qnn", "--json",
                           "--calibration", str(_calibration(tmp_path)), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads(done.stdout)


def test_without_onnxruntime_qnn_the_target_says_how_to_install_it(conv_path, tmp_path):
    code = ("import sys; sys.modules['onnxruntime_qnn'] = None\n"
            "from edgepack.cli import main\n"
            f"raise SystemExit(main(sys.argv[1:]))")
    base = [sys.executable, "-c", code]
    built = subprocess.run([*base, "build", str(conv_path), "--target", "android-qnn", "-o", str(tmp_path / "o")],
                           capture_output=True, text=True, check=False)
    assert built.returncode == 2 and built.stderr.count("\n") == 1
    assert built.stderr.startswith("error:") and "pip install 'edgepack[qnn]'" in built.stderr
    inspected = subprocess.run([*base, "inspect", str(conv_path), "--target", "android-qnn", "--json"],
                               capture_output=True, text=True, check=False)
    assert inspected.returncode == 0
    cov = json.loads(inspected.stdout)["targets"]["android-qnn"]["coverage"][0]
    assert not cov["available"] and "pip install 'edgepack[qnn]'" in cov["notes"][0]
