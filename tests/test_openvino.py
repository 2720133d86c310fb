"""The intel-openvino stages: IR conversion, NNCF int8 with fallbacks, verification, bundle files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import SAMPLE_MODEL, make_model, tiny_cnn
from real_models import find_real_model

ov = pytest.importorskip("openvino")

from edgepack.backends.openvino import ir as ovir  # noqa: E402
from edgepack.backends.openvino import run as ovrun  # noqa: E402
from edgepack.build import _initial_state, stages_for  # noqa: E402
from edgepack.data.inputs import SampleSets  # noqa: E402
from edgepack.errors import StageError  # noqa: E402
from edgepack.metrics.kinds import OutputKind  # noqa: E402
from edgepack.model import load_model  # noqa: E402
from edgepack.pipeline import Context, run_stages  # noqa: E402
from edgepack.target import load_target  # noqa: E402

CALIBRATION = SAMPLE_MODEL.parent / "calibration"
TEST_SET = SAMPLE_MODEL.parent / "digits_test.npz"
SHIPPED = ("model.xml", "model.bin", "runtime_config.json", "requirements.txt")


def wider_cnn() -> onnx.ModelProto:
    """Conv(3->32) -> Relu -> Conv(32->64) -> GlobalAveragePool -> Flatten -> Gemm(64->10): ~20k weights,
    enough for the weights rather than the XML to dominate the IR's size."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n) for n, s in
             (("w1", (32, 3, 3, 3)), ("w2", (64, 32, 3, 3)), ("fc_w", (10, 64)), ("fc_b", (10,)))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1),
    ]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)


def _build(model: Path, work: Path, calibration: Path | None = None, shapes: dict | None = None) -> Context:
    target = load_target("intel-openvino")
    state = _initial_state(load_model(model), "model", target, shapes or {}, SampleSets(calibration))
    work.mkdir(parents=True, exist_ok=True)
    return run_stages(Context(target=target, work=work, models=(state,)), stages_for(target))


def _decisions(ctx: Context) -> list[str]:
    return [f"{r.stage}: {d}" for r in ctx.records for d in r.decisions]


def _accuracy_ir(xml: Path, x: np.ndarray, y: np.ndarray) -> float:
    compiled = ov.Core().compile_model(str(xml), "CPU", ovir.properties(1))
    preds = [int(np.argmax(compiled({"input": x[i : i + 1]})[0])) for i in range(len(x))]
    return float(np.mean(np.asarray(preds) == y))


@pytest.fixture(scope="module")
def digits_int8(tmp_path_factory) -> tuple[Context, Context]:
    """The sample model built twice with calibration, in two different work folders."""
    base = tmp_path_factory.mktemp("ov")
    return (_build(SAMPLE_MODEL, base / "one", CALIBRATION), _build(SAMPLE_MODEL, base / "two" / "deeper", CALIBRATION))


def test_int8_ir_of_the_sample_model_keeps_accuracy(digits_int8):
    import onnxruntime as ort

    ctx = digits_int8[0]
    m = ctx.models[0]
    assert m.recipe.name == "static-int8"
    assert m.recipe.ops_after.get("FakeQuantize")
    assert not any(op.startswith("QLinear") for op in m.recipe.ops_after)
    data = np.load(TEST_SET)
    x, y = data["input"], data["label"]
    ref = ort.InferenceSession(str(SAMPLE_MODEL), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    fp32_acc = float(np.mean(ref.argmax(1) == y))
    int8_acc = _accuracy_ir(m.artifact, x, y)
    assert fp32_acc - int8_acc <= 0.01, (fp32_acc, int8_acc)
    assert m.verification.passed is True
    assert m.recipe.bytes_quantized < m.recipe.bytes_fp32


def test_bundle_files_records_and_decisions(digits_int8):
    ctx = digits_int8[0]
    m = ctx.models[0]
    assert sorted(ctx.files) == sorted(SHIPPED)
    assert m.artifact.suffix == ".xml" and m.companions == (m.artifact.with_suffix(".bin"),)
    ov.Core().read_model(str(ctx.files["model.xml"]))  # loads with openvino
    config = json.loads(ctx.files["runtime_config.json"].read_text())
    assert config["device"] == "CPU"
    assert set(config["properties"]) == {"PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS"}
    assert config["properties"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert ctx.files["requirements.txt"].read_text().startswith(f"openvino=={ovir.openvino_version()}")
    package = ctx.package.to_json()
    assert package["runtime"] == "openvino" and package["op_count"] == len(package["op_types"]) > 0
    coverage = m.coverage.to_json()
    assert set(coverage) >= {"nodes_total", "nodes_on_accelerator", "partitions", "partition_sizes", "unsupported"}
    assert coverage["nodes_on_accelerator"] == coverage["nodes_total"]
    assert set(m.recipe.to_json()) == {"recipe", "why", "tolerance", "settings", "model_class", "bytes_fp32",
                                       "bytes_quantized", "ops_after", "notes", "candidate_metrics", "attempts"}
    conversion = m.conversion.to_json()
    assert conversion["inference_precision_hint"] == "f32" and conversion["shapes"] == "dynamic"
    json.dumps([r.to_json() for r in (m.recipe, m.conversion, m.coverage, m.verification, ctx.package)])
    decisions = _decisions(ctx)
    assert any("static-int8 chosen" in d for d in decisions)
    assert any("storage only" in d for d in decisions)
    host = ctx.measurements["host_latency"]["model"]
    assert {"where", "session", "fp32_original", "shipped", "ratio", "openvino"} <= set(host)
    assert {"median_ms", "runs", "threads", "host_cpu"} <= set(host["shipped"])
    assert {"compile_ms", "first_inference_ms"} <= set(host["openvino"])


def test_two_builds_are_byte_identical(digits_int8):
    one, two = digits_int8
    for name in SHIPPED:
        assert one.files[name].read_bytes() == two.files[name].read_bytes(), name
    assert _decisions(one) == _decisions(two)
    xml = one.files["model.xml"].read_text()
    assert str(one.work) not in xml and "conversion_parameters" not in xml


def test_without_calibration_fp16_is_chosen_and_halves_the_weights(tmp_path):
    src = tmp_path / "wider.onnx"
    onnx.save(wider_cnn(), str(src))
    ctx = _build(src, tmp_path / "work")
    m = ctx.models[0]
    assert m.recipe.name == "fp16"
    assert any("static-int8 skipped: no calibration data" in d for d in _decisions(ctx))
    fp32_bin = (ctx.work / "model.fp32-reference.bin").stat().st_size
    fp16_bin = m.artifact.with_suffix(".bin").stat().st_size
    assert 0.45 <= fp16_bin / fp32_bin <= 0.55
    assert m.conversion.shapes == "fixed" and m.conversion.weights == "fp16"
    outs = ovrun.run_ir(m.artifact, list(m.verify_inputs))
    ref = m.reference_outputs[0]["y"]
    np.testing.assert_allclose(outs[0]["y"], ref, rtol=1e-2, atol=1e-2)


def test_int8_outside_tolerance_falls_back_to_fp16(tmp_path):
    """A profile whose int8 tolerance NNCF cannot meet ships the fp16 IR, and says why."""
    profile = tmp_path / "strict.toml"
    profile.write_text('extends = "intel-openvino"\nname = "strict-ov"\n\n[[quantization]]\nname = "static-int8"\n'
                       'tolerance = { cosine_min = 0.99999 }\n\n[[quantization]]\nname = "fp16"\n'
                       'tolerance = { cosine_min = 0.999 }\n')
    target = load_target(str(profile))
    logits = OutputKind("embedding", "the test says so: cosine_min applies")  # a classes output ignores cosine_min
    state = _initial_state(load_model(SAMPLE_MODEL), "model", target, {}, SampleSets(CALIBRATION), {"logits": logits})
    ctx = run_stages(Context(target=target, work=tmp_path, models=(state,)), stages_for(target))
    assert ctx.models[0].recipe.name == "fp16"
    assert any("static-int8 dropped: outside tolerance" in d for d in _decisions(ctx))
    assert any("fp16 chosen" in d for d in _decisions(ctx))


def test_same_model_converted_twice_in_one_process_is_identical(tmp_path):
    src = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), str(src))
    a = ovir.save(ovir.convert(src), tmp_path / "a.xml", True)
    b = ovir.save(ovir.convert(src), tmp_path / "b.xml", True)
    assert a.read_bytes() == b.read_bytes()
    assert a.with_suffix(".bin").read_bytes() == b.with_suffix(".bin").read_bytes()


def test_com_microsoft_ops_are_refused_before_openvino_sees_them(tmp_path):
    nodes = [helper.make_node("QLinearAdd", ["a", "s", "z", "a", "s", "z", "s", "z"], ["y"], domain="com.microsoft")]
    model = make_model(nodes, [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 4]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
                               helper.make_tensor_value_info("z", TensorProto.UINT8, [])],
                       [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4])], domains=[("com.microsoft", 1)])
    path = tmp_path / "qlinear.onnx"
    onnx.save(model, str(path))
    with pytest.raises(StageError, match="com.microsoft operators \\(QLinearAdd\\).*openvino#17461"):
        ovir.convert(path)


def test_a_model_openvino_cannot_convert_is_one_clear_stage_error(tmp_path):
    import onnxruntime

    model = Path(onnxruntime.__file__).parent / "datasets" / "logreg_iris.onnx"  # ai.onnx.ml: no OpenVINO frontend
    with pytest.raises(StageError, match="^OpenVINO cannot convert logreg_iris.onnx: ") as info:
        ovir.convert(model)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ real models


def _real(key: str) -> Path:
    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{key} is not installed (pip install the dev extra)")
    return path


@pytest.mark.integration
def test_yolo_int8_with_real_photos(tmp_path):
    path = _real("nudenet_yolov8n")
    import subprocess
    import sys

    calib = tmp_path / "cal"
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(repo / "benchmarks" / "make_calibration.py"), "--out", str(calib), "--size", "320",
                    "--input", "images", "--resize", "letterbox", "--count", "16"], check=True, capture_output=True)
    ctx = _build(path, tmp_path / "work", calib, {"images": (1, 3, 320, 320)})
    m = ctx.models[0]
    assert m.recipe.name == "static-int8" and m.verification.passed
    assert m.conversion.shapes == "fixed"
    assert m.recipe.bytes_quantized < 0.35 * m.recipe.bytes_fp32


@pytest.mark.integration
@pytest.mark.parametrize("key, shapes", [
    ("ppocrv2_rec_lstm", {"x": (1, 3, 32, 320)}),
    ("minilm_l6_int8", {"input_ids": (1, 16), "attention_mask": (1, 16), "token_type_ids": (1, 16)}),
])
def test_real_models_build_without_calibration(tmp_path, key, shapes):
    ctx = _build(_real(key), tmp_path, None, shapes)
    m = ctx.models[0]
    assert m.verification.passed and m.recipe.name in ("fp16", "none")
    ov.Core().compile_model(str(ctx.files["model.xml"]), "CPU")
