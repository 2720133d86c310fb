"""Calibration samples from image files and a declared ``preprocess.toml``.

A calibration folder may hold ``*.png``, ``*.jpg``, ``*.jpeg`` and ``*.bmp`` files plus a
``preprocess.toml`` saying how they become the tensor of ONE model input::

    input = "images"        # model input name (required when the model has several inputs)
    size = [320, 320]       # H, W (required unless the input's H and W are fixed in the model)
    resize = "letterbox"    # "stretch" | "letterbox" | "center-crop"   (default "stretch")
    pad_value = 114         # letterbox padding, in 0..255 pixel units  (default 114)
    layout = "NCHW"         # or "NHWC"                                 (default "NCHW")
    color = "RGB"           # or "BGR" or "GRAY"                        (default "RGB")
    scale = 0.00392156862745098  # pixel * scale, then (x - mean) / std per channel (default 1/255)
    mean = [0.0, 0.0, 0.0]  # one value, or one per channel in ``color`` order (default 0)
    std = [1.0, 1.0, 1.0]   # one value, or one per channel in ``color`` order (default 1)

Images are decoded with Pillow (imported only when a folder holds images), in sorted file
name order, with EXIF orientation applied and a single deterministic bilinear resample.
Every other model input still comes from ``.npy``/``.npz`` files.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import _toml_check as tc
from .._toml_check import Field
from ..errors import CalibrationError, ProfileError, first_line
from ..model import TensorSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PREPROCESS_FILE = "preprocess.toml"
PILLOW_MISSING = "image calibration needs Pillow: pip install 'edgepack[images]'"

RESIZES = ("stretch", "letterbox", "center-crop")
LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR", "GRAY")

SCHEMA: dict[str, Any] = {
    "input": Field(str),
    "size": Field(list, item_type=int),
    "resize": Field(str, choices=RESIZES),
    "pad_value": Field(int, minimum=0, maximum=255),
    "layout": Field(str, choices=LAYOUTS),
    "color": Field(str, choices=COLORS),
    "scale": Field(float),
    "mean": Field(list, item_type=float),
    "std": Field(list, item_type=float),
}


@dataclass(frozen=True)
class ImagePlan:
    """Everything needed to turn a folder's images into one input's samples (nothing decoded yet)."""

    folder: Path
    files: tuple[Path, ...]
    spec: TensorSpec
    dtype: np.dtype
    size: tuple[int, int]  # H, W
    resize: str
    pad_value: int
    layout: str
    color: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    @property
    def where(self) -> str:
        return f"images ({len(self.files)} in {self.folder.name}/ per {PREPROCESS_FILE})"

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        h, w = self.size
        return (self.channels, h, w) if self.layout == "NCHW" else (h, w, self.channels)

    def note(self) -> str:
        h, w = self.size
        how = f"{self.resize} {h}x{w}"
        if self.resize == "letterbox":
            how += f" (pad {self.pad_value})"
        parts = [how, self.color, self.layout, f"scale {_fmt_scale(self.scale)}"]
        if any(m != 0.0 for m in self.mean) or any(s != 1.0 for s in self.std):
            parts.append(f"mean {_fmt_list(self.mean)}, std {_fmt_list(self.std)}")
        return (
            f"{len(self.files)} images from {self.folder.name}/ preprocessed per {PREPROCESS_FILE} "
            f"for input '{self.spec.name}' ({self.dtype}): {', '.join(parts)}"
        )


def _fmt_scale(scale: float) -> str:
    inv = 1.0 / scale
    if scale < 1.0 and abs(inv - round(inv)) < 1e-6 * inv:
        return f"1/{round(inv)}"
    return f"{scale:g}"


def _fmt_list(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden ones, e.g. macOS ``._x.jpg``, skipped)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _example(inputs: Sequence[TensorSpec]) -> str:
    """A one-line minimal preprocess.toml for the error message, using the model's own input when it can."""
    spec = next((s for s in inputs if s.shape is not None and len(s.shape) == 4), inputs[0] if inputs else None)
    name, layout, hw = (spec.name if spec else "images"), "NCHW", [640, 640]
    shape = spec.shape if spec is not None and spec.shape is not None and len(spec.shape) == 4 else None
    if shape is not None:
        if shape[3] in (1, 3) and shape[1] not in (1, 3):
            layout = "NHWC"
        h, w = (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])
        if isinstance(h, int) and isinstance(w, int):
            hw = [h, w]
    return (
        f'input = "{name}", size = {hw}, layout = "{layout}", color = "RGB", scale = 0.00392156862745098 '
        f"(one key per line)"
    )


def _fail(label: str, text: str) -> CalibrationError:
    return CalibrationError(f"{label}: {text}")


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _fail(label, "not a UTF-8 text file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise _fail(label, f"invalid TOML: {first_line(exc)}") from exc
    except OSError as exc:
        raise _fail(label, f"cannot read: {exc.strerror}") from exc


def _per_channel(data: dict, key: str, default: float, channels: int, color: str, label: str) -> tuple[float, ...]:
    values = data.get(key, [default])
    if len(values) not in (1, channels):
        raise _fail(label, f"'{key}' has {len(values)} values; color = '{color}' has {channels} channel(s): give 1 or {channels}")
    values = tuple(float(v) for v in values) * (channels if len(values) == 1 else 1)
    if key == "std" and any(not v > 0 for v in values):
        raise _fail(label, f"'std' = {list(values)} must be positive")
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise _fail(label, f"'{key}' = {list(values)} must be finite")
    return values


def _dims(spec: TensorSpec) -> str:
    return "x".join(str(d) if isinstance(d, int) else "?" for d in spec.shape or ())


def plan_images(folder: Path, inputs: Sequence[TensorSpec]) -> ImagePlan | None:
    """The image plan for ``folder``, or None when it holds neither images nor a preprocess.toml.

    Reads and validates preprocess.toml against the model's ``inputs``; decodes nothing.
    """
    files = image_files(folder)
    toml_path = folder / PREPROCESS_FILE
    label = f"{folder.name}/{PREPROCESS_FILE}"
    if not toml_path.is_file():
        if not files:
            return None
        msg = (
            f"calibration folder {folder.name} has {len(files)} image file(s) but no {PREPROCESS_FILE} saying how to "
            f"turn them into a model input; add one, e.g. {_example(inputs)}"
        )
        raise CalibrationError(msg)
    data = _read_toml(toml_path, label)
    try:
        tc.check(data, SCHEMA, label)
    except ProfileError as exc:
        raise CalibrationError(str(exc)) from exc
    if not files:
        msg = f"{label} is present but {folder.name}/ has no image files ({', '.join('*' + s for s in IMAGE_SUFFIXES)})"
        raise CalibrationError(msg)

    names = [s.name for s in inputs]
    if "input" in data:
        name = data["input"]
        if name not in names:
            raise _fail(label, f"'input' = '{name}' names no model input{tc.did_you_mean(name, names)}; inputs: {', '.join(names)}")
    elif len(inputs) == 1:
        name = names[0]
    else:
        raise _fail(label, f"missing key 'input': the model has {len(names)} inputs ({', '.join(names)}); say which one the images feed")
    spec = inputs[names.index(name)]

    layout = data.get("layout", "NCHW")
    color = data.get("color", "RGB")
    channels = 1 if color == "GRAY" else 3
    c_axis, h_axis, w_axis = (1, 2, 3) if layout == "NCHW" else (3, 1, 2)
    shape = spec.shape
    if shape is not None and len(shape) != 4:
        raise _fail(label, f"input '{name}' has rank {len(shape)} ({_dims(spec)}); images make rank-4 {layout} tensors")
    if shape is not None and isinstance(shape[c_axis], int) and shape[c_axis] != channels:
        hint = ""
        other = 3 if layout == "NCHW" else 1
        if isinstance(shape[other], int) and shape[other] == channels:
            hint = f"; is 'layout' = '{'NHWC' if layout == 'NCHW' else 'NCHW'}'?"
        raise _fail(label, f"'color' = '{color}' gives {channels} channel(s) but input '{name}' is {_dims(spec)} in {layout} (channel dim {shape[c_axis]}){hint}")

    fixed_hw = None
    if shape is not None and isinstance(shape[h_axis], int) and isinstance(shape[w_axis], int):
        fixed_hw = (shape[h_axis], shape[w_axis])
    if "size" in data:
        size = data["size"]
        if len(size) != 2 or any(v < 1 for v in size):
            raise _fail(label, f"'size' must be [H, W], two positive integers, got {size!r}")
        size = (int(size[0]), int(size[1]))
        if fixed_hw is not None and size != fixed_hw:
            raise _fail(label, f"'size' = {list(size)} but input '{name}' is {_dims(spec)} ({layout}: H={fixed_hw[0]}, W={fixed_hw[1]})")
    elif fixed_hw is not None:
        size = fixed_hw
    else:
        raise _fail(label, f"missing key 'size' = [H, W]: input '{name}' is {_dims(spec) or 'of unknown shape'}, its height and width are not fixed")

    scale = float(data.get("scale", 1.0 / 255.0))
    if not (scale > 0 and scale != float("inf")):
        raise _fail(label, f"'scale' = {data['scale']!r} must be a positive number")
    mean = _per_channel(data, "mean", 0.0, channels, color, label)
    std = _per_channel(data, "std", 1.0, channels, color, label)

    try:
        dtype = np.dtype(spec.dtype)
    except TypeError as exc:
        raise _fail(label, f"input '{name}' has type '{spec.dtype}', which image calibration cannot feed") from exc
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise _fail(label, f"input '{name}' is {dtype}; image calibration feeds float or integer inputs")

    return ImagePlan(
        folder=folder,
        files=tuple(files),
        spec=spec,
        dtype=dtype,
        size=size,
        resize=data.get("resize", "stretch"),
        pad_value=int(data.get("pad_value", 114)),
        layout=layout,
        color=color,
        scale=scale,
        mean=mean,
        std=std,
    )


def _pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError as exc:
        raise CalibrationError(PILLOW_MISSING) from exc
    return Image, ImageOps


def _open(path: Path, mode: str):
    """Decode ``path`` fully into a Pillow image of ``mode`` ("RGB" or "L"), EXIF orientation applied."""
    Image, ImageOps = _pillow()
    errors: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert(mode)  # alpha, if any, is dropped
    except errors as exc:
        msg = f"calibration image {path.name} cannot be decoded: {first_line(exc)}"
        raise CalibrationError(msg) from exc


def resize_image(img, size: tuple[int, int], how: str, pad_value: int):
    """``img`` resized to ``size`` (H, W) by ``how``, with one bilinear resample."""
    Image, _ = _pillow()
    bilinear = Image.Resampling.BILINEAR
    h, w = size
    src_w, src_h = img.size
    if how == "stretch" or (src_w, src_h) == (w, h):
        return img.resize((w, h), bilinear) if (src_w, src_h) != (w, h) else img
    if how == "center-crop":
        # the largest centred box of the target aspect ratio, resampled straight to (w, h)
        r = min(src_w / w, src_h / h)
        bw, bh = w * r, h * r
        left, top = (src_w - bw) / 2, (src_h - bh) / 2
        return img.resize((w, h), bilinear, box=(left, top, left + bw, top + bh))
    # letterbox: keep aspect, fit inside, centre on a pad_value canvas
    r = min(w / src_w, h / src_h)
    nw, nh = max(1, min(w, round(src_w * r))), max(1, min(h, round(src_h * r)))
    fill = pad_value if img.mode == "L" else (pad_value,) * 3
    canvas = Image.new(img.mode, (w, h), fill)
    canvas.paste(img.resize((nw, nh), bilinear), ((w - nw) // 2, (h - nh) // 2))
    return canvas


def decode_images(plan: ImagePlan) -> np.ndarray:
    """All of ``plan``'s images as one array [N, *sample_shape] in the input's dtype."""
    _pillow()
    mode = "L" if plan.color == "GRAY" else "RGB"
    out = np.empty((len(plan.files), *plan.sample_shape), dtype=plan.dtype)
    mean = np.asarray(plan.mean, np.float32)
    std = np.asarray(plan.std, np.float32)
    integer = np.issubdtype(plan.dtype, np.integer)
    for i, path in enumerate(plan.files):
        img = resize_image(_open(path, mode), plan.size, plan.resize, plan.pad_value)
        x = np.asarray(img, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if plan.color == "BGR":
            x = x[:, :, ::-1]
        x = (x * np.float32(plan.scale) - mean) / std
        if plan.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        if integer:
            x = np.rint(x)
            info = np.iinfo(plan.dtype)
            if x.min() < info.min or x.max() > info.max:
                msg = (
                    f"calibration image {path.name}: preprocessed values span [{x.min():g}, {x.max():g}], "
                    f"outside {plan.dtype} input '{plan.spec.name}'; check 'scale', 'mean' and 'std' in {PREPROCESS_FILE}"
                )
                raise CalibrationError(msg)
        out[i] = x
    return out
