"""ORT-format conversion (edgepack.backends.onnxruntime.convert) and operator reduction (.minimal_build)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.errors import StageError
from edgepack.backends.onnxruntime.convert import check_ort_loads, to_ort, to_ort_applied
from edgepack.backends.onnxruntime.minimal_build import build_command, build_script, ci_workflow, operator_config
from edgepack.target import load_target

DIGITS = Path(__file__).parents[1] / "sample_apps" / "model" / "digits_cnn.onnx"
VERSION = ort.__version__
STYLES = {"fixed": ("extended", "arm"), "runtime": ("basic", None)}


# ---------------------------------------------------------------------------------------- models


def _model(nodes, inputs, outputs, inits=(), domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", 17), *[helper.make_opsetid(d, v) for d, v in domains]]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="edgepack-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_relu() -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Relu -> GlobalAveragePool: two Conv+Relu pairs ORT fuses at 'extended'."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["y"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])],
        inits,
    )


def ml_normalizer() -> onnx.ModelProto:
    """An ai.onnx.ml Normalizer after a Relu (a scikit-learn style pipeline)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Normalizer", ["r"], ["y"], domain="ai.onnx.ml", norm="L2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        domains=[("ai.onnx.ml", 1)],
    )


@pytest.fixture
def conv_relu_path(tmp_path) -> Path:
    path = tmp_path / "conv_relu.onnx"
    onnx.save(conv_relu(), str(path))
    return path


@pytest.fixture
def ml_path(tmp_path) -> Path:
    path = tmp_path / "ml.onnx"
    onnx.save(ml_normalizer(), str(path))
    return path


def _feed(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in i.shape]
        feed[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feed


def _run(path: Path, feed, *, replay: bool = True):
    so = ort.SessionOptions()
    if path.suffix == ".ort" and replay:
        so.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feed)


def _convert(src: Path, dst: Path, style: str) -> dict:
    level, platform = STYLES[style]
    return to_ort(src, dst, optimization_style=style, optimization_level=level, target_platform=platform)


# ------------------------------------------------------------------------------------ conversion


@pytest.mark.parametrize("style", sorted(STYLES))
@pytest.mark.parametrize("which", ["digits", "conv_relu", "ml"])
def test_ort_gives_the_onnx_outputs(tmp_path, conv_relu_path, ml_path, style, which):
    src = {"digits": DIGITS, "conv_relu": conv_relu_path, "ml": ml_path}[which]
    dst = tmp_path / "out" / "model.ort"
    record = _convert(src, dst, style)
    check_ort_loads(dst)
    feed = _feed(src)
    for want, got in zip(_run(src, feed), _run(dst, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert record["bytes"] == dst.stat().st_size
    assert record["onnxruntime_version"] == VERSION
    assert record["optimization_style"] == style


def test_runtime_style_keeps_unfused_nodes_and_saves_the_fusions(tmp_path):
    record = _convert(DIGITS, tmp_path / "rt.ort", "runtime")
    assert record["op_counts"]["ai.onnx:Conv"] == 3
    assert record["op_counts"]["ai.onnx:Relu"] == 2
    assert not any(op.startswith("com.microsoft:") for op in record["op_counts"])
    assert record["saved_runtime_optimizations"] == {"ConvActivationFusion": 2}
    assert record["session_config"]["optimization.minimal_build_optimizations"] == "save"
    assert record["decisions"]  # the session level differs from the requested one: said so


def test_fixed_style_bakes_in_fusions(tmp_path):
    record = _convert(DIGITS, tmp_path / "fx.ort", "fixed")
    assert record["op_counts"]["com.microsoft:FusedConv"] == 2
    assert "ai.onnx:Relu" not in record["op_counts"]
    assert record["nodes"] < _convert(DIGITS, tmp_path / "rt.ort", "runtime")["nodes"]
    assert record["saved_runtime_optimizations"] == {}


def test_runtime_style_outputs_match_without_replay(tmp_path, conv_relu_path):
    dst = tmp_path / "rt.ort"
    _convert(conv_relu_path, dst, "runtime")
    feed = _feed(conv_relu_path)
    np.testing.assert_allclose(_run(dst, feed, replay=False)[0], _run(conv_relu_path, feed)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("level", "platform", "int8", "disabled"),
    [
        ("extended", "arm", "1", []),
        ("extended", None, "0", []),
        ("all", "arm", "1", ["NchwcTransformer"]),
        ("all", None, "0", ["NchwcTransformer"]),
        ("all", "amd64", "0", []),
    ],
)
def test_session_settings_follow_convert_onnx_models_to_ort(tmp_path, conv_relu_path, level, platform, int8, disabled):
    record = to_ort(
        conv_relu_path, tmp_path / "m.ort", optimization_style="fixed", optimization_level=level, target_platform=platform
    )
    assert record["session_config"] == {"session.qdqisint8allowed": int8, "session.save_model_format": "ORT"}
    assert record["disabled_optimizers"] == disabled


@pytest.mark.parametrize("style", sorted(STYLES))
def test_conversion_is_deterministic_in_content(tmp_path, style):
    """Same graph, kernels and size every time; NOT the same bytes (see edgepack.backends.onnxruntime.convert docstring)."""
    other = tmp_path / "elsewhere" / "copy.onnx"
    other.parent.mkdir()
    shutil.copyfile(DIGITS, other)
    a, b = tmp_path / "a" / "m.ort", tmp_path / "b" / "other_name.ort"
    ra, rb = _convert(DIGITS, a, style), _convert(other, b, style)
    assert ra == rb
    assert a.stat().st_size == b.stat().st_size
    assert str(tmp_path).encode() not in a.read_bytes()
    feed = _feed(DIGITS)
    np.testing.assert_array_equal(_run(a, feed)[0], _run(b, feed)[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimization_style": "fast"}, "unknown optimization style 'fast'; choose one of: fixed, runtime"),
        ({"optimization_level": "max"}, "unknown optimization level 'max'"),
        ({"target_platform": "x86"}, "unknown target platform 'x86'; choose one of: arm, amd64"),
    ],
)
def test_bad_conversion_settings(tmp_path, conv_relu_path, kwargs, message):
    args = {"optimization_style": "fixed", "optimization_level": "basic", "target_platform": None, **kwargs}
    with pytest.raises(StageError, match=message):
        to_ort(conv_relu_path, tmp_path / "m.ort", **args)


def test_conversion_failures_are_stage_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(StageError, match=r"could not convert bad.onnx to ORT format") as info:
        _convert(bad, tmp_path / "bad.ort", "fixed")
    assert "\n" not in str(info.value)
    with pytest.raises(StageError, match="model file not found: missing.onnx"):
        _convert(tmp_path / "missing.onnx", tmp_path / "m.ort", "fixed")
    with pytest.raises(StageError, match="bad.onnx does not load"):
        check_ort_loads(bad)


# ------------------------------------------------------------------------------- operator config


def test_config_from_digits(tmp_path):
    rt = tmp_path / "work" / "model.ort"
    applied = tmp_path / "work" / "model.applied.ort"
    _convert(DIGITS, rt, "runtime")
    to_ort_applied(DIGITS, applied, target_platform=None)
    cfg = tmp_path / "bundle" / "required_operators_and_types.config"
    record = operator_config([rt, applied], cfg)
    text = cfg.read_text()
    assert "/" not in text
    assert tmp_path.name not in text and "tmp" not in text
    assert 'Conv{"inputs": {"0": ["float"]}}' in text
    assert "com.microsoft;1;FusedConv" in text  # replayed fusions need their kernels too
    assert record["ops"]["ai.onnx"] == sorted(record["ops"]["ai.onnx"])
    assert {"Conv", "Relu", "Gemm", "MaxPool"} <= set(record["ops"]["ai.onnx"])
    assert record["uses_ml_ops"] is False
    assert record["lines"] == len(text.splitlines())
    # same bytes whatever the order or folder of the inputs
    again = tmp_path / "bundle2" / "required_operators_and_types.config"
    operator_config([applied, rt], again)
    assert again.read_bytes() == cfg.read_bytes()


def test_config_names_models_relative_to_the_bundle(tmp_path, conv_relu_path):
    bundle = tmp_path / "bundle"
    ort_file = bundle / "models" / "a.ort"
    _convert(conv_relu_path, ort_file, "fixed")
    record = operator_config([ort_file], bundle / "required_operators_and_types.config")
    assert record["sources"] == ["models/a.ort"]
    assert (bundle / "required_operators_and_types.config").read_text().startswith("# Generated from ORT format model(s):\n# - models/a.ort\n")


def test_config_without_type_reduction_has_no_types(tmp_path, conv_relu_path):
    _convert(conv_relu_path, tmp_path / "a.ort", "fixed")
    operator_config([tmp_path / "a.ort"], tmp_path / "ops.config", type_reduction=False)
    assert "{" not in (tmp_path / "ops.config").read_text()


def test_ml_ops_are_kept(tmp_path, ml_path, conv_relu_path):
    _convert(ml_path, tmp_path / "ml.ort", "fixed")
    _convert(conv_relu_path, tmp_path / "cnn.ort", "fixed")
    record = operator_config([tmp_path / "ml.ort", tmp_path / "cnn.ort"], tmp_path / "c.config")
    assert record["uses_ml_ops"] is True
    assert "Normalizer" in record["ops"]["ai.onnx.ml"]
    profile = load_target("rpi4-cpu")
    with_ml = build_command(profile, ort_version=VERSION, uses_ml_ops=True)
    assert "--disable_ml_ops" not in with_ml
    assert "--disable_ml_ops" in build_command(profile, ort_version=VERSION, uses_ml_ops=False)
    assert "keeps ai.onnx.ml" in build_script(profile, ort_version=VERSION, uses_ml_ops=True)


def test_config_errors(tmp_path):
    with pytest.raises(StageError, match="no .ort files"):
        operator_config([], tmp_path / "c.config")
    with pytest.raises(StageError, match=r".ort file not found: nope.ort"):
        operator_config([tmp_path / "nope.ort"], tmp_path / "c.config")
    junk = tmp_path / "junk.ort"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(StageError, match="could not read the ops of junk.ort"):
        operator_config([junk], tmp_path / "c.config")


# ---------------------------------------------------------------------------------- build recipe


def _has_pair(cmd: list[str], flag: str, value: str) -> bool:
    return any(a == flag and b == value for a, b in zip(cmd, cmd[1:]))


def test_android_build_command():
    """An AAR an app can link, by onnxruntime's packaging script (its flags: tests/test_mobile_packaging.py)."""
    cmd = build_command(load_target("android-nnapi"), ort_version=VERSION, uses_ml_ops=False)
    assert cmd[:2] == ["python3", "tools/ci_build/github/android/build_aar_package.py"]
    assert _has_pair(cmd, "--android_sdk_path", "$ANDROID_SDK_ROOT")
    assert _has_pair(cmd, "--android_ndk_path", "$ANDROID_NDK_HOME")
    assert _has_pair(cmd, "--include_ops_by_config", "required_operators_and_types.config")
    assert cmd[-1] == "runtime/android_aar_build_settings.json"
    from edgepack.backends.onnxruntime.mobile_packaging import aar_settings

    params = aar_settings(load_target("android-nnapi"), uses_ml_ops=False)["build_params"]
    assert _has_pair(params, "--minimal_build", "extended") and "--use_nnapi" in params and "--build_java" in params
    assert "--enable_reduced_operator_type_support" in params and "--skip_tests" in params


def test_ios_and_pi_build_commands():
    from edgepack.backends.onnxruntime.mobile_packaging import apple_settings

    ios = build_command(load_target("ios-coreml"), ort_version=VERSION, uses_ml_ops=False)
    assert ios[1] == "tools/ci_build/github/apple/build_and_assemble_apple_pods.py"
    base = apple_settings(load_target("ios-coreml"), uses_ml_ops=False)["build_params"]["base"]
    assert "--use_coreml" in base and _has_pair(base, "--minimal_build", "extended") and "--build_apple_framework" in base
    pi = build_command(load_target("rpi5-cpu"), ort_version=VERSION, uses_ml_ops=False, type_reduction=False)
    assert pi[0] == "./build.sh"
    assert "--minimal_build" in pi and not _has_pair(pi, "--minimal_build", "extended")
    assert "--enable_reduced_operator_type_support" not in pi


@pytest.mark.parametrize("target", ["android-nnapi", "ios-coreml", "rpi4-cpu", "rpi5-cpu"])
def test_build_script(target):
    text = build_script(load_target(target), ort_version=VERSION, uses_ml_ops=False)
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert f'ORT_VERSION="{VERSION}"' in text and '--branch "v$ORT_VERSION"' in text
    assert '"$BUNDLE_DIR/required_operators_and_types.config"' in text
    body = text.split("\n", 1)[1]
    assert " /" not in body.replace(" /dev/null", "")  # no absolute paths besides the shebang
    if shutil.which("bash"):
        subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    if target == "ios-coreml":
        assert '"$(uname -s)" != "Darwin"' in text
    if target.startswith("rpi"):
        assert "aarch64" in text and "EDGEPACK_CROSS" in text


@pytest.mark.parametrize(
    ("target", "runner"), [("android-nnapi", "ubuntu-latest"), ("ios-coreml", "macos-14"), ("rpi4-cpu", "ubuntu-24.04-arm")]
)
def test_ci_workflow(target, runner):
    text = ci_workflow(load_target(target), VERSION)
    assert f"runs-on: {runner}" in text
    assert "actions/upload-artifact@v6" in text and "build_runtime.sh" in text
    assert ("sdkmanager" in text) == (target == "android-nnapi")
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(text)
    assert doc["jobs"]["build"]["runs-on"] == runner


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("rpi4-cpu", {"ort_version": "1.32.0.dev20250101"}, "not a release with a git tag"),
        ("intel-openvino", {}, "does not use an ONNX Runtime minimal build"),
    ],
)
def test_build_recipe_errors(target, kwargs, message):
    args = {"ort_version": VERSION, "uses_ml_ops": False, **kwargs}
    with pytest.raises(StageError, match=message):
        build_command(load_target(target), **args)


def test_profile_that_disables_ml_ops_is_refused_for_ml_models(tmp_path):
    profile = tmp_path / "mine.toml"
    profile.write_text(
        'extends = "rpi4-cpu"\nname = "mine"\n[minimal_build]\nlevel = "minimal"\nflags = ["--minimal_build", "--disable_ml_ops"]\n'
    )
    with pytest.raises(StageError, match="--disable_ml_ops but the model uses ai.onnx.ml"):
        build_command(load_target(profile), ort_version=VERSION, uses_ml_ops=True)
