"""Mixed precision (issue #13 item 4): when full static int8 fails its judgement, the nodes responsible
stay float and the rest is quantized, within a bounded number of attempts; the manifest says which
nodes stayed float and why. Tiny graphs built with onnx.helper; real models in test_mixed_real.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.backends import backend_for
from edgepack.backends.base import MAX_REFINE_ATTEMPTS
from edgepack.backends.onnxruntime import mixed
from edgepack.backends.onnxruntime.mixed_probe import output_culprits, range_mixing_outputs
from edgepack.backends.onnxruntime.quantize import quantize, quantize_qdq
from edgepack.errors import StageError
from edgepack.judge import Judgement, judge
from edgepack.pipeline import Context, Memo, ModelState
from edgepack.records import CHOSEN, DROPPED, Candidate
from edgepack.runtime.ort import run_model
from edgepack.stages import quantize as selector
from edgepack.target import Recipe, Tolerance, load_target

STATIC_U8 = Recipe("static-int8", activation_type="uint8", weight_type="int8", per_channel=True,
                   tolerance=Tolerance(cosine_min=0.98))


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def _graph(nodes, inputs, outputs, inits, name="g") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _w(name, shape, rng, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


@pytest.fixture
def yolo_head(tmp_path: Path) -> Path:
    """A YOLO-style head: boxes (~0..300) and sigmoid class scores (0..1) concatenated into one output."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "wb"], ["b0"], name="box_fc"),
        helper.make_node("Mul", ["b0", "px"], ["boxes"], name="box_scale"),
        helper.make_node("MatMul", ["x", "ws"], ["s0"], name="score_fc"),
        helper.make_node("Sigmoid", ["s0"], ["scores"], name="score_sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["out"], name="head_concat", axis=2),
    ]
    inits = [_w("wb", (8, 4), rng), _w("ws", (8, 6), rng, 1.5), numpy_helper.from_array(np.array(100.0, np.float32), "px")]
    return _save(_graph(nodes, [_f("x", [1, 64, 8])], [_f("out", [1, 64, 10])], inits), tmp_path / "head.onnx")


@pytest.fixture
def offset_model(tmp_path: Path) -> Path:
    """x + 1000 - 1000 (float: x; 8 bits: steps of ~4, the input is lost), then two MatMuls holding the weights."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Add", ["x", "big"], ["u"], name="offset"),
        helper.make_node("Sub", ["u", "big"], ["v"], name="unoffset"),
        helper.make_node("MatMul", ["v", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    inits = [numpy_helper.from_array(np.array(1000.0, np.float32), "big"), _w("w1", (256, 1024), rng),
             _w("w2", (1024, 256), rng)]
    return _save(_graph(nodes, [_f("x", [64, 256])], [_f("y", [64, 256])], inits), tmp_path / "offset.onnx")


@pytest.fixture
def outlier_model(tmp_path: Path) -> Path:
    """One input channel 3000x the others (weighted ~0 by fc1): a per-tensor 8-bit scale over fc1's input
    leaves the other channels, which make the output, a level or two."""
    rng = np.random.default_rng(0)
    scale = np.ones(256, np.float32)
    scale[0] = 3000.0
    w1 = (rng.standard_normal((256, 256)) * 0.1).astype(np.float32)
    w1[0, :] = 1e-5
    nodes = [helper.make_node("Mul", ["x", "scale"], ["v"], name="outlier"),
             helper.make_node("MatMul", ["v", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    inits = [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(w1, "w1"), _w("w2", (256, 256), rng)]
    return _save(_graph(nodes, [_f("x", [64, 256])], [_f("y", [64, 256])], inits), tmp_path / "outlier.onnx")


def _samples(shape, n, seed, uniform=False) -> list[dict]:
    rng = np.random.default_rng(seed)
    make = (lambda: rng.uniform(0, 1, shape)) if uniform else (lambda: rng.standard_normal(shape))
    return [{"x": make().astype(np.float32)} for _ in range(n)]


# ------------------------------------------------------------------------------ structural culprits


def test_range_mixing_output_concat_stays_float_from_the_first_candidate(yolo_head: Path, tmp_path: Path) -> None:
    calib = _samples((1, 64, 8), 16, 1, uniform=True)
    held = _samples((1, 64, 8), 8, 2, uniform=True)
    ref = run_model(yolo_head, held)
    full = tmp_path / "full.onnx"  # onnxruntime's quantizer alone: one uint8 scale over boxes and scores
    quantize_qdq(yolo_head, full, STATIC_U8, calib, is_accelerator=False)
    record = quantize(yolo_head, tmp_path / "int8.onnx", STATIC_U8, calib, is_accelerator=False)

    def score_error(path: Path) -> float:
        return max(float(np.max(np.abs(r["out"][..., 4:] - c["out"][..., 4:]))) for r, c in zip(ref, run_model(path, held)))

    assert score_error(full) > 0.3  # scores collapse onto a handful of levels
    assert score_error(tmp_path / "int8.onnx") < 0.02
    assert record["settings"]["nodes_to_exclude"] == ["head_concat"]
    (culprit,) = record["settings"]["float_culprits"]
    assert culprit["node"] == "head_concat" and "x apart" in culprit["why"]


def test_output_softmax_is_a_culprit_only_for_mixed_precision(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"], name="fc"),
             helper.make_node("Softmax", ["z"], ["zs"], name="softmax", axis=-1),
             helper.make_node("Reshape", ["zs", "shape"], ["p"], name="reshape")]
    inits = [_w("w", (8, 5), rng), numpy_helper.from_array(np.array([1, 5], np.int64), "shape")]
    model = _graph(nodes, [_f("x", [1, 8])], [_f("p", [1, 5])], inits)
    assert output_culprits(model, {}, activations=False) == {}
    culprits = output_culprits(model, {})
    assert set(culprits) == {"softmax", "reshape"} and "1/255" in culprits["softmax"]


def test_models_without_output_concats_are_quantized_as_before(offset_model: Path, tmp_path: Path) -> None:
    pre, culprits = range_mixing_outputs(offset_model, _samples((64, 256), 4, 1))
    assert pre == offset_model and culprits == {}


# ------------------------------------------------------------------------------ the refinement loop


def _context(tmp_path: Path, model: Path, calib: list[dict], verify: list[dict], target: str = "rpi5-cpu"):
    profile = load_target(target)
    m = ModelState(name="model", source=None, current=model, reference_outputs=tuple(run_model(model, verify)),
                   verify_inputs=tuple(verify), calibration=tuple(calib), prepared=model)
    (tmp_path / "memo").mkdir(exist_ok=True)
    return Context(target=profile, work=tmp_path, models=(m,), memo=Memo(tmp_path / "memo")), m


def _judge(backend, ctx, m, candidate) -> Judgement:
    """The selector's judgement (cosine: no kind known for these outputs) of the candidate as built."""
    outputs = backend.run(candidate.path, list(m.verify_inputs), ctx.target)
    return judge(list(m.reference_outputs), outputs, {}, STATIC_U8.tolerance)


def test_full_int8_fails_and_the_mixed_candidate_keeps_the_culprit_float(offset_model: Path, tmp_path: Path) -> None:
    ctx, m = _context(tmp_path, offset_model, _samples((64, 256), 24, 1), _samples((64, 256), 8, 2))
    backend = backend_for(ctx.target)
    full = backend.build_candidate(ctx, m, STATIC_U8, "matmul-heavy", offset_model)
    verdict = _judge(backend, ctx, m, full)
    assert not verdict.passed  # the offset wipes out the input at 8 bits
    candidate, attempts = full, 0
    while not verdict.passed:
        attempts += 1
        candidate = backend.refine_candidate(ctx, m, STATIC_U8, candidate, verdict, attempts)
        assert candidate is not None and attempts <= MAX_REFINE_ATTEMPTS
        verdict = _judge(backend, ctx, m, candidate)
    record = candidate.settings["mixed_precision"]
    assert "offset" in candidate.settings["nodes_to_exclude"]
    assert {"fc1", "fc2"}.isdisjoint(candidate.settings["nodes_to_exclude"])  # the weights stay int8
    assert record["quantized_weight_share"] == 1.0 and candidate.bytes_after < 0.3 * candidate.bytes_fp32
    assert record["attempt"] == attempts and len(record["previous_attempts"]) == attempts - 1
    assert record["probe_db"] >= record["probe_floor_db"] == mixed.MIN_PROBE_DB
    assert record["why"].startswith("full static int8 failed its judgement (output 'y' (embedding): cosine_min")
    assert all(s["alone_db"] >= record["probe_db"] - 10 for s in record["quantized_segments"])
    assert any(s["first"] == "offset" for s in record["float_segments"])


def test_a_per_tensor_recipe_tries_per_channel_weights(tmp_path: Path) -> None:
    """One weight 500x the rest, on an input feature that is ~0: per-tensor weights lose every other weight,
    per-channel ones only its column's."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((256, 256)) * 0.1).astype(np.float32)
    w[0, 5] = 50.0
    model = _save(_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], [_f("x", [64, 256])],
                         [_f("y", [64, 256])], [numpy_helper.from_array(w, "w")]), tmp_path / "outlier_weight.onnx")

    def feeds(n, seed):
        out = _samples((64, 256), n, seed)
        for feed in out:
            feed["x"][:, 0] *= 1e-3
        return out

    ctx, m = _context(tmp_path, model, feeds(24, 1), feeds(8, 2))
    backend = backend_for(ctx.target)
    per_tensor = replace(STATIC_U8, per_channel=False)
    full = backend.build_candidate(ctx, m, per_tensor, "matmul-heavy", model)
    verdict = _judge(backend, ctx, m, full)
    assert not verdict.passed
    candidate = backend.refine_candidate(ctx, m, per_tensor, full, verdict, 1)
    weights = candidate.settings["mixed_precision"]["weights"]
    assert weights["chosen"] == "per-channel" and weights["per_channel_db"] > weights["per_tensor_db"] + 10
    assert candidate.settings["per_channel"] is True and not candidate.settings.get("nodes_to_exclude")
    assert _judge(backend, ctx, m, candidate).passed


def test_schedule_ends_when_nothing_worth_shipping_is_left(offset_model: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(mixed, "MIN_QUANTIZED_SHARE", 1.01)  # no mix quantizes enough of the weights
    ctx, m = _context(tmp_path, offset_model, _samples((64, 256), 24, 1), _samples((64, 256), 8, 2))
    backend = backend_for(ctx.target)
    candidate = backend.build_candidate(ctx, m, STATIC_U8, "matmul-heavy", offset_model)
    offered = []
    for attempt in range(1, MAX_REFINE_ATTEMPTS + 1):
        candidate = backend.refine_candidate(ctx, m, STATIC_U8, candidate, _judge(backend, ctx, m, candidate), attempt)
        if candidate is None:
            break
        offered.append(candidate.settings["mixed_precision"]["quantized_weight_share"])
    assert candidate is None
    # attempt 1 (calibration per segment, every weight int8) leaves the offset's noise, below the probe floor;
    # no segment may go float
    assert offered == []


_REF = np.array([1, 2, 3, 4], np.float32)


class _Stub:
    """A backend whose candidates' artifacts fail their judgement until ``passes_at`` (0: never)."""

    name, label, recipes, artifact_noun, speed_reference = "stub", "Stub", ("static-int8",), "model", "fp32"
    host_runtime = "stub"

    def __init__(self, path: Path, passes_at: int = 0, raises: bool = False):
        self.path, self.passes_at, self.raises, self.calls, self.converted = path, passes_at, raises, [], []

    def build_candidate(self, ctx, m, recipe, model_class, reference):
        return Candidate(recipe.name, self.path, {}, (), {}, 100, 30)

    def convert(self, ctx, m, notes):
        self.converted.append(m.current)
        return replace(m, artifact=m.current)

    def verified_on(self, profile):
        return ""

    def run_shipped(self, ctx, m):
        good = self.passes_at and len(self.calls) >= self.passes_at
        return [{"y": _REF if good else np.array([1, -1, 1, -1], np.float32)} for _ in m.verify_inputs]

    def refine_candidate(self, ctx, m, recipe, candidate, judgement, attempt):
        self.calls.append((attempt, judgement.passed, judgement.reason))
        if self.raises:
            msg = "mixed candidate refused: 5 partitions"
            raise StageError(msg)
        return replace(candidate, settings={"attempt": attempt})

    def speed_gate_applies(self, ctx, recipe):
        return False


def _select(stub: _Stub, tmp_path: Path):
    profile = load_target("rpi5-cpu")
    m = ModelState(name="model", source=None, current=stub.path, reference_outputs=({"y": _REF},),
                   verify_inputs=({"x": np.zeros(1, np.float32)},), calibration=({"x": np.zeros(1, np.float32)},))
    ctx = Context(target=profile, work=tmp_path, models=(m,))
    host: dict = {}
    attempt, state, candidate = selector._try(ctx, stub, m, STATIC_U8, "conv-heavy", stub.path, host)
    return attempt, candidate, host


def test_selector_asks_for_at_most_the_bound(tmp_path: Path) -> None:
    stub = _Stub(tmp_path / "m.onnx")
    attempt, candidate, host = _select(stub, tmp_path)
    assert candidate is None and attempt.outcome == DROPPED
    assert [a for a, _, _ in stub.calls] == list(range(1, MAX_REFINE_ATTEMPTS + 1))
    assert len(stub.converted) == MAX_REFINE_ATTEMPTS + 1  # every mixed candidate is converted, then judged
    assert stub.calls[0][2].startswith("output 'y' (embedding): cosine_min")  # attempt 1 is told why full int8 failed
    assert stub.calls[1][2].startswith("mixed precision, attempt 1: ")
    assert attempt.reason.startswith("outside tolerance (output 'y' (embedding): cosine_min")  # full int8's reason,
    assert f"; mixed precision, attempt {MAX_REFINE_ATTEMPTS}: " in attempt.reason  # then the last attempt's
    assert host["model"][0]["mixed_precision_attempts"] == MAX_REFINE_ATTEMPTS


def test_selector_ships_the_first_mixed_candidate_that_passes(tmp_path: Path) -> None:
    stub = _Stub(tmp_path / "m.onnx", passes_at=2)
    attempt, candidate, _ = _select(stub, tmp_path)
    assert attempt.outcome == CHOSEN and candidate.settings == {"attempt": 2}
    assert attempt.reason.startswith("mixed precision, attempt 2: within tolerance")
    assert len(stub.calls) == 2


def test_a_refused_mix_drops_the_recipe_with_the_reason(tmp_path: Path) -> None:
    stub = _Stub(tmp_path / "m.onnx", raises=True)
    attempt, candidate, host = _select(stub, tmp_path)
    assert candidate is None and "mixed-precision attempt 1 failed: mixed candidate refused: 5 partitions" in attempt.reason
    assert host == {}


def test_accelerator_mix_that_adds_partitions_is_refused(offset_model: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(mixed, "MAX_EXTRA_PARTITIONS", -1)  # even an equal count is refused: the check runs
    ctx, m = _context(tmp_path, offset_model, _samples((64, 256), 24, 1), _samples((64, 256), 8, 2), "android-nnapi")
    backend = backend_for(ctx.target)
    full = backend.build_candidate(ctx, m, STATIC_U8, "matmul-heavy", offset_model)
    with pytest.raises(StageError, match="NNAPI partitions"):
        backend.refine_candidate(ctx, m, STATIC_U8, full, _judge(backend, ctx, m, full), 1)


def test_openvino_accuracy_control_puts_the_culprit_back_in_float(outlier_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    ctx, m = _context(tmp_path, outlier_model, _samples((64, 256), 24, 1), _samples((64, 256), 8, 2), "intel-openvino")
    backend = backend_for(ctx.target)
    m, reference = backend.prepare_candidates(ctx, m, "matmul-heavy", [], {})
    full = backend.build_candidate(ctx, m, STATIC_U8, "matmul-heavy", reference)
    verdict = _judge(backend, ctx, m, full)
    assert not verdict.passed
    mixed_ir = backend.refine_candidate(ctx, m, STATIC_U8, full, verdict, 1)
    assert _judge(backend, ctx, m, mixed_ir).passed
    record = mixed_ir.settings["mixed_precision"]
    assert record["float_ops"] == ["fc1"] and record["attempt"] == 1 and "cosine_min" in record["why"]
    assert mixed_ir.bytes_after < full.bytes_fp32 and mixed_ir.settings["tool"] == "nncf.quantize_with_accuracy_control"


# ------------------------------------------------------------------------------ the bundle


def test_manifest_records_the_float_nodes_and_why(offset_model: Path, tmp_path: Path, cli) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "x.npy", np.stack([s["x"] for s in _samples((64, 256), 32, 1)]))
    code, _, err = cli("build", str(offset_model), "--target", "rpi5-cpu", "-o", str(tmp_path / "out"),
                       "--calibration", str(calib))
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "rpi5-cpu" / "manifest.json").read_text())
    q = manifest["recipe"]["quantization"]
    assert q["recipe"] == "static-int8" and q["bytes_quantized"] < 0.3 * q["bytes_fp32"]
    assert "offset" in q["settings"]["nodes_to_exclude"]
    record = q["settings"]["mixed_precision"]
    assert record["probe"]["samples"] == 8 and record["float_nodes"] == len(q["settings"]["nodes_to_exclude"])
    assert any(s["first"] == "offset" and s["weight_bytes"] == 0 for s in record["float_segments"])
    assert any(d.startswith("quantize: model: static-int8 chosen: mixed precision, attempt")
               for d in manifest["recipe"]["decisions"])
    assert any("mixed precision:" in n for n in q["notes"])
    build = json.loads((tmp_path / "out" / "rpi5-cpu.build.json").read_text())
    assert "mixed_precision_seconds" in json.dumps(build)  # the cost goes to the build record, not the bundle
