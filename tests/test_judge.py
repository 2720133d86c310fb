"""The one judgement (edgepack.judge) and its per-kind metrics (edgepack.metrics), on tiny graphs and arrays."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import make_model
from edgepack.errors import UsageError
from edgepack.judge import judge, summary
from edgepack.metrics.bars import bars_for
from edgepack.metrics.kinds import OutputKind, detect, parse_kind, parse_output_kind_arg, resolve
from edgepack.records import Evidence
from edgepack.target import Tolerance

REAL = Evidence("calibration folder", 40, True)
TOL = Tolerance(cosine_min=0.98, top1_agreement_min=0.95)


def _graph(op: str, in_shape, out_shape, extra_nodes=(), inits=(), **attrs):
    nodes = [*extra_nodes, helper.make_node(op, ["x"] if op not in ("Gemm", "Concat") else ["x", "w"], ["y"], **attrs)]
    if op == "Concat":
        nodes = list(extra_nodes)
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits).graph


# ------------------------------------------------------------------------------------------- kinds


@pytest.mark.parametrize("op,shape,kind", [
    ("Softmax", (1, 10), "classes"),
    ("LogSoftmax", (1, 10), "classes"),
    ("Softmax", (1, 40, 97), "sequence"),
    ("Sigmoid", (1, 1, 64, 64), "map"),
    ("Sigmoid", (1, 172, 88), "map"),
    ("Relu", (1, 384), "embedding"),
    ("LayerNormalization", (1, 128, 384), "embedding"),
    ("Sigmoid", (1, 1), "embedding"),  # one value per sample: compared by cosine over the samples
    ("Clip", (1, 1, 97, 32), "embedding"),  # a spectrogram is not a mask
])
def test_kind_detected_from_the_op_that_makes_the_output(op, shape, kind):
    attrs = {"axis": -1} if "Softmax" in op else {}
    graph = make_model([helper.make_node(op, ["x"], ["y"], **attrs)],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))]).graph
    got = detect(graph, "y", np.zeros(shape, np.float32))
    assert got.kind == kind, got.why


def test_kind_looks_through_reshapes_and_reads_gemm_logits_and_labels():
    w = numpy_helper.from_array(np.ones((10, 4), np.float32), "w")
    graph = make_model([helper.make_node("Gemm", ["x", "w"], ["g"], transB=1),
                        helper.make_node("Identity", ["g"], ["y"]), helper.make_node("ArgMax", ["g"], ["label"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10]),
                        helper.make_tensor_value_info("label", TensorProto.INT64, [1, 1])], [w]).graph
    assert detect(graph, "y", np.zeros((1, 10), np.float32)).kind == "classes"
    labels = detect(graph, "label", np.zeros((1, 1), np.int64))
    assert labels.kind == "classes" and "labels" in labels.why


def test_a_yolo_style_concat_of_boxes_and_sigmoid_scores_is_boxes():
    graph = make_model([helper.make_node("Slice", ["x", "s0", "e4", "ax"], ["xy"]),
                        helper.make_node("Slice", ["x", "e4", "e22", "ax"], ["raw"]),
                        helper.make_node("Sigmoid", ["raw"], ["cls"]),
                        helper.make_node("Concat", ["xy", "cls"], ["y"], axis=1)],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 22, 2100])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 22, 2100])],
                       [numpy_helper.from_array(np.array([v], np.int64), n) for v, n in
                        ((0, "s0"), (4, "e4"), (22, "e22"), (1, "ax"))]).graph
    got = detect(graph, "y", np.zeros((1, 22, 2100), np.float32))
    assert got.kind == "boxes" and got.options == {"layout": "channels-first"}
    assert detect(graph, "y", np.zeros((1, 2100, 22), np.float32)).options == {"layout": "anchors-first"}


@pytest.mark.parametrize("text,expected", [
    ("logits=embedding", ("logits", "embedding", {})),
    ("StatefulPartitionedCall:2=map:threshold=0.3", ("StatefulPartitionedCall:2", "map", {"threshold": 0.3})),
    ("rec:x=sequence:blank=5,ctc=1", ("rec:x", "sequence", {"blank": 5, "ctc": 1})),
    ("out=boxes:layout=anchors-first,objectness=1", ("out", "boxes", {"layout": "anchors-first", "objectness": 1})),
])
def test_output_kind_arguments(text, expected):
    assert parse_output_kind_arg(text) == expected


@pytest.mark.parametrize("text,message", [
    ("logits", "must look like NAME=KIND"),
    ("logits=clases", "unknown output kind 'clases' (did you mean 'classes'?)"),
    ("logits=map:thresh=0.3", "'thresh=0.3' is not an option of 'map'"),
    ("logits=map:threshold=high", "option 'threshold' of 'map' must be a float"),
    ("o=boxes:layout=sideways", "boxes layout must be one of"),
])
def test_bad_output_kind_arguments_are_one_clear_line(text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_output_kind_arg(text)


def test_user_kinds_resolve_by_output_name_or_model_and_name():
    given = [("x", *parse_kind("map", "w"), "w1"), ("cls:y", *parse_kind("classes", "w"), "w2")]
    got = resolve(given, {"det": ["x"], "cls": ["y"], "rec": ["y"]})
    assert got["det"]["x"].kind == "map" and got["cls"]["y"].kind == "classes" and got["rec"] == {}
    with pytest.raises(UsageError, match="names no output of the model"):
        resolve([("z", "map", {}, "--output-kind 'z=map'")], {"det": ["x"]})


# ------------------------------------------------------------------------------------------- metrics


def _ctc_logits(path: list[int], classes: int = 6, gap: float = 4.0) -> np.ndarray:
    x = np.zeros((1, len(path), classes), np.float32)
    x[0, np.arange(len(path)), path] = gap
    return x


def test_a_candidate_that_passes_cosine_but_changes_decoded_ctc_text_is_rejected():
    # 40 lines of 24 steps; in 4 of them one step's top class flips (near-tied logits): cosine stays ~1
    rng = np.random.default_rng(0)
    refs, cands = [], []
    for i in range(40):
        path = list(rng.integers(0, 6, 24))
        r = _ctc_logits(path) + rng.normal(0, 0.01, (1, 24, 6)).astype(np.float32)
        c = r.copy()
        if i % 10 == 0:  # a near-tie at one step (as int8 noise meets it) flips, by a hair
            t, other = 5, (path[5] + 1) % 6
            if other == path[4] or other == path[6] or path[5] in (path[4], path[6]):
                other = next(k for k in range(1, 6) if k not in (path[4], path[5], path[6]))
            r[0, t, other] = r[0, t, path[t]] - 0.02
            c = r.copy()
            c[0, t, other] = r[0, t, path[t]] + 0.02
        refs.append({"probs": r})
        cands.append({"probs": c})
    seq = OutputKind("sequence", "test")
    j = judge(refs, cands, {"probs": seq}, TOL, REAL)
    out = j.outputs["probs"]
    assert out["cosine_min"] > 0.99  # whole-tensor cosine would pass any profile's bar
    assert out["sequence_agreement"] == 0.9 and out["step_agreement"] > 0.995 and out["n"] == 40
    assert j.status == "failed" and "sequence_agreement 0.9000 < 0.95 required (n=40 sequences)" in j.reason
    assert judge(refs, refs, {"probs": seq}, TOL, REAL).status == "passed"


def _yolo_head(rng, anchors: int = 2100, classes: int = 18, confident: int = 6) -> np.ndarray:
    head = np.zeros((1, 4 + classes, anchors), np.float32)
    head[0, 0] = rng.uniform(20, 620, anchors)
    head[0, 1] = rng.uniform(20, 620, anchors)
    head[0, 2:4] = rng.uniform(10, 120, (2, anchors))
    head[0, 4:] = rng.uniform(0, 0.05, (classes, anchors))
    for k in range(confident):  # a few well-separated confident objects
        a = k * 300
        head[0, 0:4, a] = (60 + 90 * k, 80 + 70 * k, 50, 60)
        head[0, 4 + k % classes, a] = 0.9
    return head


def _fake_quant_uint8(x: np.ndarray) -> np.ndarray:
    """One asymmetric uint8 scale for the whole tensor, as a QDQ pair on the output Concat gives it."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255
    zero = np.round(-lo / scale)
    return ((np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def test_the_yolo_concat_scale_collapse_passes_cosine_and_fails_the_boxes_metric():
    rng = np.random.default_rng(1)
    refs = [{"output0": _yolo_head(rng)} for _ in range(4)]
    cands = [{"output0": _fake_quant_uint8(r["output0"])} for r in refs]
    assert set(np.unique(cands[0]["output0"][0, 4:]).round(2)) <= {0.0, 2.51}  # scores collapse to 0 / one step
    boxes = OutputKind("boxes", "test", {"layout": "channels-first"})
    j = judge(refs, cands, {"output0": boxes}, TOL, REAL)
    out = j.outputs["output0"]
    assert out["cosine_min"] > 0.998
    assert j.status == "failed" and out["box_agreement"] == 0.0 and out["fp32_confident"] == 24
    assert judge(refs, refs, {"output0": boxes}, TOL, REAL).outputs["output0"]["box_agreement"] == 1.0


def test_a_candidate_that_invents_confident_boxes_fails_too():
    rng = np.random.default_rng(2)
    ref = _yolo_head(rng, confident=2)
    cand = ref.copy()
    cand[0, 4 + 3, 1500] = 0.95  # a new confident detection where fp32 has none
    j = judge([{"o": ref}], [{"o": cand}], {"o": OutputKind("boxes", "t", {"layout": "channels-first"})}, TOL, REAL)
    out = j.outputs["o"]
    assert out["fp32_matched"] == 2 and out["candidate_confident"] == 3 and out["box_agreement"] == 4 / 5


def test_map_metrics_pixel_agreement_and_iou_of_thresholded_masks():
    ref = np.zeros((1, 1, 32, 32), np.float32)
    ref[0, 0, 8:16, 8:24] = 0.9  # 128 text pixels
    cand = ref.copy()
    cand[0, 0, 8:16, 20:24] = 0.1  # a quarter of them lost: 1.6% of the pixels
    j = judge([{"m": ref}], [{"m": cand}], {"m": OutputKind("map", "t")}, TOL, REAL)
    out = j.outputs["m"]
    assert out["threshold"] == 0.5 and out["threshold_from"] == "values in [0, 1]"
    assert out["pixel_agreement"] == pytest.approx(1 - 32 / 1024) and out["mask_iou"] == 0.75
    assert j.status == "failed" and "pixel_agreement 0.9688 < 0.99" in j.reason


def test_degenerate_fp32_outputs_are_not_verifiable_never_passed():
    tiny = np.full((1, 1, 16, 16), 2.5e-5, np.float32) + np.linspace(0, 1e-6, 256, dtype=np.float32).reshape(1, 1, 16, 16)
    generated = Evidence("generated inputs", 8, True)
    j = judge([{"m": tiny}], [{"m": tiny * 3}], {"m": OutputKind("map", "t")}, TOL, generated)
    assert j.status == "not verifiable" and j.passed  # ships, marked unverified
    assert "not verifiable with generated inputs: the fp32 output never exceeds the threshold 0.5" in j.reason
    assert summary(j, generated).startswith("not verifiable with generated inputs, n=8")
    zeros = np.zeros((1, 8), np.float32)
    j = judge([{"e": zeros}], [{"e": zeros + 1}], {"e": OutputKind("embedding", "t")}, TOL, generated)
    assert j.status == "not verifiable" and "all ~0" in j.reason
    const = np.full((1, 8), 3.0, np.float32)
    j = judge([{"e": const}], [{"e": const}], {"e": OutputKind("embedding", "t")}, TOL, generated)
    assert j.status == "not verifiable" and "constant" in j.reason


def test_classes_count_confident_decisions_and_say_when_there_are_none():
    sure = np.array([[4.0, 0.0, 0.0]], np.float32)
    tied = np.array([[1.0, 0.98, 0.0]], np.float32)
    refs = [{"y": sure}] * 30 + [{"y": tied}] * 10
    cands = [{"y": sure}] * 30 + [{"y": tied[:, [1, 0, 2]]}] * 10  # the unsure ones flip
    j = judge(refs, cands, {"y": OutputKind("classes", "t")}, Tolerance(), REAL)
    out = j.outputs["y"]
    assert out["confident_decisions"] == 30 and out["confident_agreement"] == 1.0 and out["top1_agreement"] == 0.75
    assert j.status == "passed"  # the profile set no top1_agreement_min: only confident decisions are held to a bar
    assert judge(refs, cands, {"y": OutputKind("classes", "t")}, TOL, REAL).status == "failed"  # top-1 bar 0.95
    j = judge([{"y": tied}] * 4, [{"y": tied}] * 4, {"y": OutputKind("classes", "t")}, Tolerance(), REAL)
    assert j.status == "not verifiable" and "no confident fp32 decision" in j.reason


def test_nan_in_a_candidate_always_fails():
    ref = np.ones((1, 4), np.float32)
    j = judge([{"e": ref}], [{"e": np.array([[1, np.nan, 1, 1]], np.float32)}], {"e": OutputKind("embedding", "t")},
              TOL, REAL)
    assert j.status == "failed" and "NaN/Inf" in j.reason


def test_bars_come_from_the_profile_else_the_kind_defaults():
    assert bars_for("classes", Tolerance(top1_agreement_min=0.9)) == {"class_agreement_min": 0.95,
                                                                      "top1_agreement_min": 0.9}
    assert bars_for("sequence", Tolerance(sequence_agreement_min=0.99)) == {"sequence_agreement_min": 0.99}
    assert bars_for("embedding", Tolerance(cosine_min=0.9999)) == {"cosine_min": 0.9999}
    assert set(bars_for("map", Tolerance())) == {"pixel_agreement_min", "mask_iou_min"}


def test_weak_evidence_is_said_with_its_count():
    ref = [{"e": np.arange(8, dtype=np.float32)[None]}] * 10
    j = judge(ref, ref, {"e": OutputKind("embedding", "t")}, TOL, Evidence("calibration folder", 10, True))
    assert summary(j, Evidence("calibration folder", 10, True)).startswith("weakly verified, n=10: ")
    assert summary(j, Evidence("calibration folder", 1, False)).startswith(
        "weakly verified, n=1 (the same samples calibrated the model)")
    assert summary(j, Evidence("calibration folder", 32, True)).startswith("verified, n=32: ")
