"""Rewrite checks compare like with like: the original and the rewritten graph run with the same
session settings, within the noise onnxruntime itself shows on the model; a rewrite that fails its
check is skipped and recorded, and the build goes on without it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import make_model, tiny_cnn
from onnx import TensorProto, helper, numpy_helper

from edgepack import rewrite_check as rc
from edgepack.build import build
from edgepack.target import load_target


def _feeds(values):
    return [{"y": np.asarray(v, np.float32)} for v in values]


# ---------------------------------------------------------------- the metrics


def test_deviation_is_relative_to_the_outputs_range_and_pools_the_cosine():
    ref = _feeds([[1000.0, 1000.5], [1001.0, 1000.0]])
    cand = _feeds([[1000.0, 1000.5], [1001.0, 1000.1]])
    d = rc.deviation(ref, cand)["y"]
    assert d.scale == pytest.approx(1.0) and d.err == pytest.approx(0.1, rel=1e-3)  # of the range, not of 1000
    assert d.magnitude == pytest.approx(1001.0) and 0 < d.cos < 1e-8 and d.nonfinite == 0


def test_deviation_counts_nonfinite_values_the_original_does_not_have():
    ref = _feeds([[0.0, -np.inf, 2.0]])
    assert rc.deviation(ref, _feeds([[0.0, -np.inf, 2.0]]))["y"].nonfinite == 0  # the same -inf: fine
    assert rc.deviation(ref, _feeds([[np.nan, -np.inf, 2.0]]))["y"].nonfinite == 1
    noise = rc.Noise({"y": rc.Deviation(0.0, 0.0, 0, 2.0, 2.0)}, 1, ("basic",))
    ok, why = noise.check(rc.deviation(ref, _feeds([[np.nan, -np.inf, 2.0]])))
    assert not ok and "NaN/Inf" in why


def test_limits_scale_with_the_noise_and_have_a_floor():
    loud = rc.Noise({"y": rc.Deviation(1e-4, 1e-11, 0, 1.0, 1.0)}, 8, ("basic", "default"))
    err, cos = loud.limits("y", magnitude=1.0, scale=1.0)
    assert err == pytest.approx(rc.MARGIN * 1e-4) and cos == pytest.approx(max(rc.MARGIN * 1e-11, rc.COSINE_FLOOR))
    silent = rc.Noise({"y": rc.Deviation(0.0, 0.0, 0, 1.0, 1.0)}, 8, ("basic",))
    err, _ = silent.limits("y", magnitude=4.0, scale=2.0)
    assert err == pytest.approx(rc.FLOOR_ULPS * rc.FLOAT32_EPS * 2.0)
    ok, why = silent.check({"y": rc.Deviation(err * 1.01, 0.0, 0, 2.0, 4.0)})
    assert not ok and "32 float32 ulps" in why
    ok, why = loud.check({"y": rc.Deviation(3e-4, 1e-12, 0, 1.0, 1.0)})
    assert ok and "4 x onnxruntime's own 1.0e-04" in why


def test_within_the_floors_a_rewrite_passes_whatever_the_noise():
    """The limits never go below the floors, so a deviation inside them passes with any noise - and the
    noise need not be measured; one beyond a floor (or with NaN/Inf) needs the noise to be judged."""
    inside = {"y": rc.Deviation(rc.FLOOR_ULPS * rc.FLOAT32_EPS * 0.5, rc.COSINE_FLOOR / 2, 0, 1.0, 1.0)}
    text = rc.within_floor(inside)
    assert text is not None and "32 float32 ulps" in text and "need not be measured" in text
    for noise in (rc.Noise({"y": rc.Deviation(0.0, 0.0, 0, 1.0, 1.0)}, 8, ("basic",)),
                  rc.Noise({"y": rc.Deviation(1e-3, 1e-6, 0, 1.0, 1.0)}, 8, ("basic",))):
        assert noise.check(inside)[0]
    beyond = {"y": rc.Deviation(rc.FLOOR_ULPS * rc.FLOAT32_EPS * 2, 0.0, 0, 1.0, 1.0)}
    assert rc.within_floor(beyond) is None
    assert rc.within_floor({"y": rc.Deviation(0.0, 0.0, 0, 1.0, 1.0), "z": rc.Deviation(0.0, 2 * rc.COSINE_FLOOR, 0, 1.0, 1.0)}) is None
    assert rc.within_floor({"y": rc.Deviation(0.0, 0.0, 1, 1.0, 1.0)}) is None


def test_a_noise_measurement_that_fails_is_the_targets_failure_not_a_skipped_rewrite(tmp_path, monkeypatch):
    from edgepack import transforms
    from edgepack.errors import StageError
    from edgepack.stages import prepare

    def broken(*a):
        raise StageError("onnxruntime cannot run the unrewritten graph at level basic: out of memory")

    monkeypatch.setattr(prepare, "measure_noise", broken)
    monkeypatch.setattr(transforms, "_real_decompose", transforms.decompose, raising=False)
    monkeypatch.setattr(transforms, "decompose", _wrong_decomposition)  # beyond the floors: the noise is needed
    with pytest.raises(StageError, match="out of memory"):
        build([_tiny_with_hardswish(tmp_path)], [load_target("android-nnapi")], tmp_path / "out",
              shapes={"x": (1, 3, 8, 8)})


def test_within_the_floors_holds_for_any_noise_including_broken_ones():
    inside = {"y": rc.Deviation(rc.FLOOR_ULPS * rc.FLOAT32_EPS * 0.5, 0.0, 0, 1.0, 1.0)}
    assert rc.within_floor(inside) is not None
    for noise in (rc.Noise({"y": rc.Deviation(float("inf"), float("nan"), 0, 1.0, 1.0)}, 8, ("basic",)),
                  rc.Noise({}, 8, ("basic",))):  # non-finite noise counts as none; a missing output too
        assert noise.check(inside)[0]
    assert rc.within_floor({"y": rc.Deviation(float("nan"), 0.0, 0, 1.0, 1.0)}) is None
    assert rc.within_floor({"y": rc.Deviation(float("inf"), 1.0, 1, 1.0, 0.0)}) is None  # an output that went missing
    assert rc.within_floor({}) is None  # nothing to judge by the floors: the full check decides


@pytest.mark.parametrize("case", ["noisy", "all_equal", "zeros", "empty", "transposed"])
def test_the_unmasked_deviation_equals_the_masked_one(case, monkeypatch):
    rng = np.random.default_rng(3)
    base = [rng.standard_normal((2, 5)).astype(np.float32) for _ in range(3)]
    refs = {"noisy": base, "all_equal": [np.full((4,), 2.5, np.float32)] * 2, "zeros": [np.zeros((3,), np.float32)],
            "empty": [np.zeros((3, 0), np.float32)], "transposed": [b.T for b in base]}[case]
    cands = [r + np.float32(1e-6) * rng.standard_normal(r.shape).astype(np.float32) for r in refs]
    fast = rc.deviation([{"y": r} for r in refs], [{"y": c} for c in cands])
    monkeypatch.setattr(rc, "_all_finite", lambda *a: None)
    masked = rc.deviation([{"y": r} for r in refs], [{"y": c} for c in cands])
    assert fast == masked


def test_prepare_measures_the_noise_only_when_a_rewrite_leaves_the_floors(tmp_path, monkeypatch):
    from edgepack import transforms
    from edgepack.stages import prepare

    calls = []
    real = prepare.measure_noise
    monkeypatch.setattr(prepare, "measure_noise", lambda *a: calls.append(1) or real(*a))
    # basic optimizations alone compute (nearly) the same bits: no noise run is spent
    [r] = build([_tiny_with_hardswish(tmp_path)], [load_target("rpi5-cpu")], tmp_path / "a", shapes={"x": (1, 3, 8, 8)})
    line = next(d for d in r.manifest["recipe"]["decisions"] if "onnxruntime basic optimizations" in d)
    assert not calls and "need not be measured" in line, line
    # a decomposition with a wrong constant leaves the floors: the noise is measured (once) and judges it
    monkeypatch.setattr(transforms, "_real_decompose", transforms.decompose, raising=False)
    monkeypatch.setattr(transforms, "decompose", _wrong_decomposition)
    [r] = build([_tiny_with_hardswish(tmp_path)], [load_target("android-nnapi")], tmp_path / "b",
                shapes={"x": (1, 3, 8, 8)})
    skipped = [d for d in r.manifest["recipe"]["decisions"] if "decomposed skipped" in d]
    assert calls == [1] and len(skipped) == 1 and "onnxruntime's own" in skipped[0], skipped


def _deep_model() -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu, twice: BatchNormalization folding and NCHWc layouts move the
    float32 sums, so onnxruntime's levels disagree in the last bits."""
    rng = np.random.default_rng(1)
    inits, nodes, x = [], [], "x"
    for i in range(2):
        inits += [numpy_helper.from_array(rng.standard_normal((16, 16 if i else 3, 3, 3)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.random(16).astype(np.float32) + 0.5, f"s{i}"),
                  numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), f"b{i}"),
                  numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), f"m{i}"),
                  numpy_helper.from_array(rng.random(16).astype(np.float32) + 0.5, f"v{i}")]
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"s{i}", f"b{i}", f"m{i}", f"v{i}"], [f"n{i}"]),
                  helper.make_node("Relu", [f"n{i}"], [f"r{i}"] if i == 0 else ["y"])]
        x = f"r{i}"
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])], inits)


def test_noise_is_measured_on_the_model_and_its_inputs(tmp_path):
    from edgepack.runtime.ort import run_model

    path = tmp_path / "deep.onnx"
    onnx.save(_deep_model(), str(path))
    feeds = [{"x": np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32)} for i in range(3)]
    unoptimized = run_model(path, feeds, level="disable")
    noise = rc.measure_noise(path, feeds, unoptimized, run_model(path, feeds))
    assert noise.evaluations == ("basic", "extended", "default") and noise.samples == 3
    d = noise.outputs["y"]
    # BatchNormalization folded into the Conv weights rounds differently: a few float32 ulps, not zero
    assert 0 < d.err < 1e-5 and d.nonfinite == 0
    assert "differ from its unoptimized run by up to" in noise.describe()


# ---------------------------------------------------------------- the prepare stage


def _tiny_with_hardswish(tmp_path):
    path = tmp_path / "tiny_cnn.onnx"
    onnx.save(tiny_cnn(), str(path))
    return path


def test_checked_rewrites_record_their_check(tmp_path):
    [r] = build([_tiny_with_hardswish(tmp_path)], [load_target("android-nnapi")], tmp_path / "out",
                shapes={"x": (1, 3, 8, 8)})
    decisions = r.manifest["recipe"]["decisions"]
    assert any("decomposed 1 HardSwish" in d for d in decisions)
    line = next(d for d in decisions if "onnxruntime basic optimizations" in d)
    assert "checked on 8 samples against the original run with the same session settings" in line
    assert "largest change" in line and "limit" in line


def _wrong_decomposition(model, ops):
    """A decomposition with a wrong constant: HardSwish as x * clip(x/4 + 1/2) instead of x/6."""
    from edgepack import transforms

    out, counts = transforms._real_decompose(model, ops)
    for t in out.graph.initializer:
        if t.name.startswith("edgepack_const") and abs(numpy_helper.to_array(t) - 1 / 6) < 1e-6:
            t.CopyFrom(numpy_helper.from_array(np.array(0.25, np.float32), t.name))
    return out, counts


def test_a_decomposition_that_changes_outputs_is_skipped_and_the_build_goes_on(tmp_path, monkeypatch):
    from edgepack import transforms

    monkeypatch.setattr(transforms, "_real_decompose", transforms.decompose, raising=False)
    monkeypatch.setattr(transforms, "decompose", _wrong_decomposition)
    [r] = build([_tiny_with_hardswish(tmp_path)], [load_target("android-nnapi")], tmp_path / "out",
                shapes={"x": (1, 3, 8, 8)})
    decisions = r.manifest["recipe"]["decisions"]
    skipped = [d for d in decisions if "decomposed skipped" in d]
    assert len(skipped) == 1 and "['HardSwish']" in skipped[0] and "of its range (limit" in skipped[0], decisions
    assert not any("decomposed 1 HardSwish" in d for d in decisions)
    assert any("onnxruntime basic optimizations" in d for d in decisions)  # basic optimization alone passed
    assert r.manifest["verification"]["passed"]


def test_when_every_rewrite_fails_the_unrewritten_graph_ships(tmp_path, monkeypatch):
    from edgepack import transforms
    from edgepack.stages import prepare

    real = transforms.prepare_graph

    def broken(model, external_data_dir, dst, **kwargs):  # basic optimization that drops the Gemm bias
        counts = real(model, external_data_dir, dst, **kwargs)
        m = onnx.load_model(str(dst))
        for t in m.graph.initializer:
            if t.name == "fc_b":
                t.CopyFrom(numpy_helper.from_array(np.full(5, 0.5, np.float32), "fc_b"))
        onnx.save(m, str(dst))
        return counts

    monkeypatch.setattr(prepare, "prepare_graph", broken)
    [r] = build([_tiny_with_hardswish(tmp_path)], [load_target("rpi5-cpu")], tmp_path / "out",
                shapes={"x": (1, 3, 8, 8)})
    decisions = r.manifest["recipe"]["decisions"]
    assert any(d.startswith("prepare: model: onnxruntime basic optimization skipped: output 'y' moved by")
               for d in decisions), decisions
    assert any("kept the unrewritten graph" in d for d in decisions)
    assert not any("onnxruntime basic optimizations (" in d for d in decisions)
    assert r.manifest["verification"]["passed"]


def _weight_only_int8() -> onnx.ModelProto:
    """y = x @ (Cast(W int8) * scale): the weight-only int8 export prepare keeps as DequantizeLinear."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (16, 8)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0.01, np.float32), "scale")]
    nodes = [helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["wf", "scale"], ["wd"]),
             helper.make_node("MatMul", ["x", "wd"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)


def test_a_weight_protection_that_changes_outputs_is_skipped(tmp_path, monkeypatch):
    from edgepack.stages import prepare

    real = prepare.protect_weight_only_int8

    def wrong_scale(model, **kwargs):
        out, n = real(model, **kwargs)
        for t in out.graph.initializer:
            if t.name.endswith("_scale"):
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 2, t.name))
        return out, n

    path = tmp_path / "wo8.onnx"
    onnx.save(_weight_only_int8(), str(path))
    [ok] = build([path], [load_target("android-nnapi")], tmp_path / "ok")
    assert ok.manifest["models"][0] and any("weight-only int8 weights kept int8" in d
                                            for d in ok.manifest["recipe"]["decisions"])
    monkeypatch.setattr(prepare, "protect_weight_only_int8", wrong_scale)
    [r] = build([path], [load_target("android-nnapi")], tmp_path / "out")
    decisions = r.manifest["recipe"]["decisions"]
    assert any("weight-only int8 kept as DequantizeLinear skipped: output 'y' moved by" in d for d in decisions), decisions
    assert not any("kept int8" in d for d in decisions)
    assert r.manifest["verification"]["passed"]


def _if_reshape_model() -> onnx.ModelProto:
    """An If whose branches reshape x to [2, -1] and [3, -1]: with x of 4 elements the else branch cannot
    type-check, so onnxruntime refuses the graph with x fixed to 4 although the dynamic one runs."""
    def branch(k, name):
        return helper.make_graph([helper.make_node("Reshape", ["x", f"s{k}"], [f"o{k}"])], name, [],
                                 [helper.make_tensor_value_info(f"o{k}", TensorProto.FLOAT, [k, "m"])],
                                 [numpy_helper.from_array(np.array([k, -1], np.int64), f"s{k}")])
    return make_model([helper.make_node("If", ["c"], ["y"], then_branch=branch(2, "t"), else_branch=branch(3, "e"))],
                      [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                       helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])


def test_fixed_shapes_onnxruntime_rejects_fall_back_to_the_models_dynamic_dimensions(tmp_path):
    path = tmp_path / "if_reshape.onnx"
    onnx.save(_if_reshape_model(), str(path))
    calib = tmp_path / "calib"  # the inputs the model is used with: the then branch, 4 elements
    calib.mkdir()
    np.save(calib / "c.npy", np.ones(16, np.bool_))
    np.save(calib / "x.npy", np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    [r] = build([path], [load_target("rpi5-cpu")], tmp_path / "out", calibration=calib, shapes={"x": (4,), "c": ()})
    decisions = r.manifest["recipe"]["decisions"]
    assert any("fixed shapes rejected by onnxruntime's shape inference" in d and "kept the model's dynamic dimensions"
               in d for d in decisions), decisions
    # the estimate analyses the same graph with its own dynamic dimensions too, and says so
    assert "analysed with its own dynamic dimensions" in json.dumps(r.manifest)
