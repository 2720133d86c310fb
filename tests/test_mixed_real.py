"""Mixed precision on a real model with real inputs (tests/real_models.py, tests/real_inputs.py): the
PP-OCRv5 text recognizer, whose full static int8 changes most decoded lines, is brought back within
its judgement by keeping part of the graph float - decided on calibration samples, judged on others,
and checked here on held-out lines neither saw. The plan is made smaller than a build's (MinMax
calibration alone, 8 calibration samples) to keep the test short; benchmarks/bench_mixed.py measures
the real thing."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_inputs import SHAPES, decode, samples  # noqa: E402
from real_models import find_real_model  # noqa: E402

pytestmark = pytest.mark.integration

KEY = "ppocrv5_rec"


def _decoded_same(ref: list[dict], out: list[dict]) -> float:
    names = list(ref[0])
    same = [decode(KEY, [r[n] for n in names]) == decode(KEY, [o[n] for n in names]) for r, o in zip(ref, out)]
    return sum(same) / len(same)


def test_recognizer_whose_full_int8_fails_ships_mixed_within_its_judgement(tmp_path: Path, monkeypatch) -> None:
    from edgepack.backends import backend_for
    from edgepack.backends.base import MAX_REFINE_ATTEMPTS
    from edgepack.backends.onnxruntime import mixed
    from edgepack.judge import judge
    from edgepack.metrics.kinds import kinds_of
    from edgepack.pipeline import Context, Memo, ModelState
    from edgepack.runtime.ort import run_model
    from edgepack.target import load_target
    from edgepack.transforms import prepare_graph

    src = find_real_model(KEY)
    if src is None:
        pytest.skip(f"{KEY} is not installed")
    monkeypatch.setattr(mixed, "CALIBRATIONS", (("MinMax", {}),))
    shapes = {s.split("=")[0]: tuple(int(d) for d in s.split("=")[1].split("x")) for s in SHAPES[KEY]}
    prepared = tmp_path / "prepared.onnx"
    prepare_graph(onnx.load(str(src)), src.parent, prepared, shapes=shapes)
    split = samples(KEY, "calibration")
    calibration, verify = split[0::2][:8], split[1::2][:16]
    reference = run_model(prepared, verify)
    kinds = kinds_of(onnx.load_model(str(prepared), load_external_data=False).graph, reference[0], {})
    profile = load_target("rpi5-cpu")
    recipe = profile.recipes[0]
    m = ModelState(name="model", source=None, current=prepared, reference_outputs=tuple(reference),
                   verify_inputs=tuple(verify), calibration=tuple(calibration), prepared=prepared, kinds=kinds)
    (tmp_path / "memo").mkdir()
    ctx = Context(target=profile, work=tmp_path, models=(m,), memo=Memo(tmp_path / "memo"))
    backend = backend_for(profile)

    def judged(candidate):
        return judge(list(reference), run_model(candidate.path, verify), kinds, recipe.tolerance)

    full = backend.build_candidate(ctx, m, recipe, "conv-heavy", prepared)
    verdict = judged(full)
    assert not verdict.passed and "sequence_agreement" in verdict.reason
    candidate, attempt = full, 0
    while not verdict.passed and attempt < MAX_REFINE_ATTEMPTS:
        attempt += 1
        candidate = backend.refine_candidate(ctx, m, recipe, candidate, verdict, attempt)
        assert candidate is not None, f"no mix offered at attempt {attempt}"
        verdict = judged(candidate)
    assert verdict.passed
    record = candidate.settings["mixed_precision"]
    floated = candidate.settings["nodes_to_exclude"]
    assert floated and record["float_nodes"] == len(floated)
    assert record["probe_db"] >= mixed.MIN_PROBE_DB and record["attempt"] == attempt
    assert candidate.bytes_after <= 0.6 * candidate.bytes_fp32
    held = samples(KEY, "heldout")[:24]  # lines neither calibration nor the judgement saw
    ref_held = run_model(prepared, held)
    full_same = _decoded_same(ref_held, run_model(full.path, held))
    mixed_same = _decoded_same(ref_held, run_model(candidate.path, held))
    assert mixed_same >= 0.9 and mixed_same > full_same, (full_same, mixed_same)
