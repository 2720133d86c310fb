"""Failure semantics (issue #12): a recipe whose shipped artifact fails falls through to the next recipe;
a foreign tool's crash drops its candidate with one clear line; a target that cannot be built does not
stop the others; exit codes 0 / 1 / 2; --json stays well-formed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import SAMPLE_MODEL

CALIB = SAMPLE_MODEL.parent / "calibration"
STRICT = ('extends = "rpi4-cpu"\nname = "strict"\n\n[[quantization]]\nname = "static-int8"\n'
          'activation_type = "uint8"\nweight_type = "int8"\ntolerance = { cosine_min = 1.0 }\n')


def _manifest(out: Path, target: str) -> dict:
    return json.loads((out / target / "manifest.json").read_text())


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("... ")]


def test_a_recipe_whose_converted_artifact_fails_falls_back_to_the_next_recipe(cli, tmp_path, monkeypatch):
    """The int8 candidate itself is fine, but its .ort is not (as when conversion changes numerics): the
    artifact's check is the one that counts, so static-int8 is dropped and the next recipe ships."""
    from edgepack.backends.onnxruntime import OnnxRuntimeBackend
    from edgepack.runtime.ort import run_model

    original = OnnxRuntimeBackend.run_shipped
    seen = {}

    def converted_badly(self, ctx, m):
        outs = original(self, ctx, m)
        seen[m.recipe.name] = run_model(m.current, list(m.verify_inputs), level="disable")  # the candidate ONNX
        if m.recipe.name != "static-int8":
            return outs
        return [{k: v[:, ::-1].copy() for k, v in o.items()} for o in outs]  # classes permuted

    monkeypatch.setattr(OnnxRuntimeBackend, "run_shipped", converted_badly)
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "o", "--calibration", CALIB)
    assert code == 0, err
    q = _manifest(tmp_path / "o", "rpi4-cpu")["models"][0]["quantization"]
    int8 = next(a for a in q["attempts"] if a["recipe"] == "static-int8")
    assert int8["outcome"] == "dropped" and int8["checked"] == "model.ort"
    assert "outside tolerance" in int8["reason"] and "confident_agreement" in int8["reason"]
    assert q["recipe"] == "none"
    cand = seen["static-int8"][0]["logits"].argmax(axis=-1)  # the candidate ONNX kept the fp32 classes
    assert cand.shape == (1,)


def test_a_crash_inside_the_quantizer_drops_int8_with_one_line_naming_tool_step_and_node(cli, tmp_path, monkeypatch):
    """onnxruntime's quantizer failing inside its own code (the numpy 'truth value ... ambiguous' crash)."""
    import onnxruntime.quantization as q

    fake = Path(q.__file__).parent / "qdq_quantizer.py"  # a frame in onnxruntime's quantizer, as the real crash has
    code = compile("def quantize_static(*args, **kwargs):\n"
                   "    import onnx\n"
                   "    node = onnx.helper.make_node('Conv', ['x', 'w'], ['y'], name='conv_17')\n"
                   "    raise ValueError('The truth value of an array with more than one element is ambiguous. '\n"
                   "                     'Use a.any() or a.all()')\n", str(fake), "exec")
    ns: dict = {}
    exec(code, ns)
    monkeypatch.setattr(q, "quantize_static", ns["quantize_static"])
    rc, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "o", "--calibration", CALIB)
    assert rc == 0, err
    attempt = next(a for a in _manifest(tmp_path / "o", "rpi4-cpu")["models"][0]["quantization"]["attempts"]
                   if a["recipe"] == "static-int8")
    assert attempt["outcome"] == "dropped"
    assert attempt["reason"].startswith("onnxruntime quantizer failed in inserting quantize/dequantize nodes at node "
                                        "'conv_17' (Conv): ValueError: The truth value of an array")
    assert "\n" not in attempt["reason"] and "note: static-int8 dropped: onnxruntime quantizer failed" in out


def test_a_crash_inside_nncf_drops_openvino_int8_with_one_line(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    import nncf

    from edgepack.build import build
    from edgepack.target import load_target

    fake = Path(nncf.__file__).parent / "quantization" / "algorithms" / "min_max" / "algorithm.py"
    code = compile("def quantize(*args, **kwargs):\n"
                   "    node_name = 'Conv_3'\n"
                   "    raise IndexError('list index out of range')\n", str(fake), "exec")
    ns: dict = {}
    exec(code, ns)
    monkeypatch.setattr(nncf, "quantize", ns["quantize"])
    [r] = build([SAMPLE_MODEL], [load_target("intel-openvino")], tmp_path / "o", calibration=CALIB)
    q = r.manifest["models"][0]["quantization"]
    attempt = next(a for a in q["attempts"] if a["recipe"] == "static-int8")
    assert attempt["reason"] == ("building the static-int8 candidate: NNCF failed in its min max step at node 'Conv_3': "
                                 "IndexError: list index out of range (a failure inside NNCF, not a check of edgepack's)")
    assert q["recipe"] == "fp16"


def test_a_bug_of_ours_while_building_a_candidate_is_still_a_bug(cli, tmp_path, monkeypatch):
    from edgepack.backends.onnxruntime import OnnxRuntimeBackend

    def broken(self, *a, **k):
        return {}["planted"]

    monkeypatch.setattr(OnnxRuntimeBackend, "build_candidate", broken)
    code, _, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "o")
    assert code == 70 and "internal error in rpi4-cpu: quantize: KeyError" in err


def test_build_keeps_going_reports_each_failure_and_exits_1(cli, tmp_path):
    (tmp_path / "strict.toml").write_text(STRICT)
    code, out, err = cli("build", SAMPLE_MODEL, "--target", tmp_path / "strict.toml", "--target", "rpi5-cpu",
                         "-o", tmp_path / "o", "--calibration", CALIB, "--output-kind", "logits=embedding", "--json")
    assert code == 1
    doc = json.loads(out)  # well-formed JSON with the built and the failed targets
    assert [d["target"] for d in doc] == ["rpi5-cpu", "strict"]
    failed = doc[1]["failed"]
    assert failed["stage"] == "quantize" and failed["reason"].startswith("model: no quantization recipe of strict")
    assert (tmp_path / "o" / "rpi5-cpu" / "manifest.json").is_file() and not (tmp_path / "o" / "strict").exists()
    assert _errors(err) == [f"target not built: strict: quantize: {failed['reason']}"]


def test_compare_always_writes_the_report_naming_the_failed_target_stage_and_reason(cli, tmp_path):
    (tmp_path / "strict.toml").write_text(STRICT)
    code, out, err = cli("compare", SAMPLE_MODEL, "--targets", f"{tmp_path / 'strict.toml'}", "-o", tmp_path / "o",
                         "--calibration", CALIB, "--output-kind", "logits=embedding", "--jobs", "1")
    assert code == 1  # the only target failed in a stage: still a report
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["targets"] == {} and report["failures"][0]["target"] == "strict"
    assert report["failures"][0]["stage"] == "quantize" and "no quantization recipe" in report["failures"][0]["reason"]
    assert report["models"][0]["file"] == "digits_cnn.onnx"
    for name in ("report.md", "report.html"):
        assert "strict" in (tmp_path / "o" / name).read_text() and "not built" in (tmp_path / "o" / name).read_text()
    code, out, err = cli("compare", SAMPLE_MODEL, "--targets", f"rpi4-cpu,{tmp_path / 'strict.toml'}", "-o",
                         tmp_path / "o2", "--calibration", CALIB, "--output-kind", "logits=embedding", "--json")
    assert code == 1
    doc = json.loads(out)
    assert list(doc["targets"]) == ["rpi4-cpu"] and doc["failed_targets"]["strict"].startswith("quantize: ")


def test_bad_input_before_any_work_is_still_exit_2(cli, tmp_path):
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi4-cpu", "-o", tmp_path / "o",
                         "--output-kind", "nosuch=classes", "--json")
    assert code == 2 and out == ""
    assert _errors(err) == ["error: --output-kind 'nosuch=classes' names no output of the model(s); outputs: logits"]
    assert not (tmp_path / "o").exists()


def test_a_model_no_asked_target_can_take_is_bad_input(cli, tmp_path):
    pytest.importorskip("openvino")
    import onnxruntime

    model = Path(onnxruntime.__file__).parent / "datasets" / "logreg_iris.onnx"
    code, _, err = cli("build", model, "--target", "intel-openvino", "-o", tmp_path / "o")
    assert code == 2 and _errors(err)[0].startswith("error: intel-openvino: OpenVINO has no ai.onnx.ml operators")


def _degenerate_model(path: Path) -> Path:
    """A 'detector' whose probability map is ~2.5e-5 on anything generated inputs give it (as a text detector's on noise)."""
    from onnx import TensorProto, helper, numpy_helper

    from conftest import make_model

    nodes = [helper.make_node("Mul", ["x", "k"], ["s"]), helper.make_node("Add", ["s", "b"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["map"])]
    inits = [numpy_helper.from_array(np.array(0.01, np.float32), "k"),
             numpy_helper.from_array(np.array(-10.6, np.float32), "b")]
    onnx.save(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])],
                         [helper.make_tensor_value_info("map", TensorProto.FLOAT, [1, 1, 16, 16])], inits), str(path))
    return path


def test_generated_inputs_that_cannot_exercise_an_output_ship_marked_not_verifiable(cli, tmp_path):
    model = _degenerate_model(tmp_path / "det.onnx")
    code, out, err = cli("build", model, "--target", "rpi5-cpu", "--target", "android-nnapi", "-o", tmp_path / "o")
    assert code == 0, err  # it ships ...
    for target in ("rpi5-cpu", "android-nnapi"):
        ver = _manifest(tmp_path / "o", target)["models"][0]["verification"]
        assert ver["status"] == "not verifiable" and ver["passed"] is True  # ... marked unverified, never "passed" as such
        assert ver["outputs"]["map"]["status"] == "not verifiable"
        assert ver["evidence"] == {"source": "generated inputs", "samples": 8, "disjoint_from_calibration": True}
    assert "not verifiable with generated inputs, n=8: output 'map' (map) is not verifiable with generated inputs: " \
           "the fp32 output never exceeds the threshold 0.5" in out
    assert "UNVERIFIED: pass --calibration DIR with real inputs" in out


def test_fewer_than_32_verification_samples_is_weakly_verified(cli, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "input.npy", np.load(CALIB / "input.npy")[:20])  # 20 samples: 10 calibrate, 10 verify
    code, out, err = cli("build", SAMPLE_MODEL, "--target", "rpi5-cpu", "--target", "ios-coreml", "-o", tmp_path / "o",
                         "--calibration", calib)
    assert code == 0, err
    ver = _manifest(tmp_path / "o", "rpi5-cpu")["models"][0]["verification"]
    assert ver["status"] == "weakly verified" and ver["summary"].startswith("weakly verified, n=10: ")
    assert ver["evidence"]["split"]["calibration"] == 10 and ver["evidence"]["split"]["verification"] == 10
    assert set(ver["evidence"]["split"]["held_out"]).isdisjoint(set(range(20)) - set(ver["evidence"]["split"]["held_out"]))
    assert "weakly verified, n=10" in out
    # a target none of whose recipes calibrates verifies on all 20
    coreml = _manifest(tmp_path / "o", "ios-coreml")["models"][0]["verification"]
    assert coreml["evidence"]["samples"] == 20 and coreml["evidence"]["split"]["calibration"] == 0


@pytest.mark.parametrize("n,verify", [(1, 0), (2, 1), (20, 10), (32, 16), (40, 24), (48, 32), (64, 32), (200, 50)])
def test_the_split_rule(n, verify):
    from edgepack.data.inputs import held_out, split_rule

    assert split_rule(n) == verify and len(held_out(n)) == verify
    if verify >= 2:
        assert held_out(n)[0] == 0 and held_out(n)[-1] == n - 1  # evenly spread over the folder


def test_a_later_sample_the_fp32_model_fails_on_stops_the_build_as_bad_input(cli, tmp_path):
    """The reference outputs after the first run on the background lane while the build goes on; a sample
    the fp32 model cannot run still stops the whole build as bad input (exit 2, one error line, no bundle),
    as when the first sample fails."""
    import numpy as np
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Gather", ["table", "idx"], ["g"], axis=0),
                           helper.make_node("Mul", ["g", "x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                           helper.make_tensor_value_info("idx", TensorProto.INT64, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor("table", TensorProto.FLOAT, [4, 4], np.arange(16, dtype=np.float32))])
    model = tmp_path / "late.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "x.npy", np.random.default_rng(0).standard_normal((24, 1, 4)).astype(np.float32))
    idx = np.zeros((24, 1), np.int64)
    idx[23] = 9  # the last sample verifies (held out) and indexes past the table
    np.save(calib / "idx.npy", idx)
    code, _, err = cli("build", model, "--target", "rpi4-cpu", "--calibration", calib, "-o", tmp_path / "OUT")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith("error: the fp32 model late.onnx does not run on the calibration data")
    assert not (tmp_path / "OUT" / "rpi4-cpu").exists()
