"""Write an image calibration folder (PNG photos + preprocess.toml) for ``edgepack build --calibration DIR``.

The photos are the real photographs that ship inside the scikit-image wheel (``skimage/data/*``);
they are read straight from the installed package folder, so nothing is ever downloaded (the
``skimage.data`` images fetched on demand through pooch are not used). When ``--count`` asks for
more images than there are photos, deterministic variants are added: seeded random crops (55-95%
of each side), every other one mirrored. Same arguments, same bytes.

Example (a YOLO-style detector with input ``images`` of shape 1x3x320x320, pixels / 255)::

    python benchmarks/make_calibration.py --out calib/yolo --size 320 --input images \\
        --layout NCHW --scale 1/255 --resize letterbox --count 32
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

# name -> file in skimage/data; RGB photographs that ship in the wheel (no network needed)
SCENES = {
    "astronaut": "astronaut.png",  # 512x512, portrait with background
    "chelsea": "chelsea.png",  # 451x300, a cat (skimage.data.cat is the same file)
    "coffee": "coffee.png",  # 600x400, cup on a table
    "rocket": "rocket.jpg",  # 640x427, launch pad
    "motorcycle_left": "motorcycle_left.png",  # 741x500, stereo pair, left view
    "motorcycle_right": "motorcycle_right.png",  # 741x500, stereo pair, right view
}
SCIENCE = {
    "hubble_deep_field": "hubble_deep_field.jpg",  # 1000x872, telescope image
    "immunohistochemistry": "ihc.png",  # 512x512, microscopy
    "retina": "retina.jpg",  # 1411x1411, fundus photograph
}
PHOTOS = {**SCENES, **SCIENCE}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
PREPROCESS_FILE = "preprocess.toml"


def _fail(msg: str) -> "NoReturn":  # noqa: F821
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        dims = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or H,W (or HxW), not {text!r}") from None
    if len(dims) == 1:
        dims *= 2
    if len(dims) != 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or H,W (or HxW), not {text!r}")
    return dims[0], dims[1]


def _number(text: str) -> float:
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None
    return value


def _numbers(text: str) -> list[float]:
    return [_number(p) for p in text.split(",")]


def _photo_names(text: str) -> list[str]:
    if text == "all":
        return list(PHOTOS)
    if text == "scenes":
        return list(SCENES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in PHOTOS:
            raise argparse.ArgumentTypeError(f"unknown photo {n!r}; choose from: {', '.join(PHOTOS)}, or 'scenes' / 'all'")
    return names


def load_photos(names: list[str]):
    """{name: PIL RGB image} read from the installed skimage/data folder (never downloaded)."""
    try:
        import skimage.data
        from PIL import Image
    except ImportError as exc:
        _fail(f"{exc.name} is missing: pip install scikit-image pillow")
    data_dir = Path(skimage.data.__file__).parent
    photos = {}
    for name in names:
        path = data_dir / PHOTOS[name]
        if not path.is_file():
            print(f"skip {name}: {path.name} is not in this scikit-image wheel", file=sys.stderr)
            continue
        with Image.open(path) as img:
            photos[name] = img.convert("RGB")
    if not photos:
        _fail(f"none of the photos {', '.join(names)} ship in scikit-image at {data_dir}")
    return photos


def variants(photos: dict, count: int, seed: int):
    """``count`` (file stem, PIL image, description): the photos first, then seeded crops/mirrors."""
    from PIL import ImageOps

    rng = np.random.default_rng(seed)
    names = list(photos)
    out = []
    for i in range(count):
        name = names[i % len(names)]
        img = photos[name]
        rnd = i // len(names)
        if rnd == 0:
            out.append((f"{i:03d}_{name}", img, "original"))
            continue
        w, h = img.size
        fw, fh = rng.uniform(0.55, 0.95, size=2)
        cw, ch = max(16, round(w * fw)), max(16, round(h * fh))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        var = img.crop((left, top, left + cw, top + ch))
        flip = rnd % 2 == 1
        if flip:
            var = ImageOps.mirror(var)
        desc = f"crop {cw}x{ch}+{left}+{top}" + (" mirrored" if flip else "")
        out.append((f"{i:03d}_{name}_v{rnd}", var, desc))
    return out


def toml_text(args: argparse.Namespace) -> str:
    h, w = args.size
    lines = [
        "# written by benchmarks/make_calibration.py",
        f'input = "{args.input}"',
        f"size = [{h}, {w}]",
        f'resize = "{args.resize}"',
        f"pad_value = {args.pad_value}",
        f'layout = "{args.layout}"',
        f'color = "{args.color}"',
        f"scale = {args.scale!r}",
    ]
    if args.mean is not None:
        lines.append(f"mean = [{', '.join(repr(float(v)) for v in args.mean)}]")
    if args.std is not None:
        lines.append(f"std = [{', '.join(repr(float(v)) for v in args.std)}]")
    return "\n".join(lines) + "\n"


def self_check(out: Path, args: argparse.Namespace) -> str | None:
    """Load the folder back through edgepack; returns its calibration note (None if edgepack is not importable)."""
    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:  # run from a source checkout without installing edgepack
        sys.path.append(repo)
    try:
        from edgepack.model import TensorSpec
        from edgepack.data.calibration import load_calibration
    except ImportError:
        return None
    h, w = args.size
    c = 1 if args.color == "GRAY" else 3
    shape = (1, c, h, w) if args.layout == "NCHW" else (1, h, w, c)
    notes: list[str] = []
    samples = load_calibration(out, [TensorSpec(args.input, "float32", shape)], notes=notes)
    x = np.concatenate([s[args.input] for s in samples])
    return f"{notes[-1]}; tensor {list(x.shape)} {x.dtype}, values in [{x.min():.4g}, {x.max():.4g}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder to write (created; must be empty unless --force)")
    p.add_argument("--size", type=_size, required=True, help="N, or H,W / HxW: the model input's height and width")
    p.add_argument("--input", default="images", help="model input name the images feed (default: images)")
    p.add_argument("--layout", choices=("NCHW", "NHWC"), default="NCHW")
    p.add_argument("--color", choices=("RGB", "BGR", "GRAY"), default="RGB")
    p.add_argument("--resize", choices=("stretch", "letterbox", "center-crop"), default="letterbox")
    p.add_argument("--pad-value", type=int, default=114, help="letterbox padding, 0..255 (default 114)")
    p.add_argument("--scale", type=_number, default=1 / 255, help="pixel multiplier, e.g. 1/255 (default) or 1")
    p.add_argument("--mean", type=_numbers, help="comma list, per channel after scale, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_numbers, help="comma list, per channel after scale, e.g. 0.229,0.224,0.225")
    p.add_argument("--count", type=int, help="number of images (default: one per photo); extra ones are crops/mirrors")
    p.add_argument("--photos", type=_photo_names, default=list(SCENES),
                   help=f"'scenes' (default: {', '.join(SCENES)}), 'all' (adds {', '.join(SCIENCE)}), or a comma list")
    p.add_argument("--seed", type=int, default=0, help="seed of the crop positions (default 0)")
    p.add_argument("--force", action="store_true", help="replace images and preprocess.toml already in --out")
    args = p.parse_args(argv)
    if not 0 <= args.pad_value <= 255:
        p.error("--pad-value must be in 0..255")
    if args.scale <= 0:
        p.error("--scale must be positive")
    if args.count is not None and args.count < 1:
        p.error("--count must be at least 1")

    out: Path = args.out
    if out.exists() and not out.is_dir():
        _fail(f"{out} exists and is not a folder")
    existing = sorted(out.iterdir()) if out.is_dir() else []
    if existing and not args.force:
        _fail(f"{out} is not empty ({len(existing)} entries); pass --force to replace its images and {PREPROCESS_FILE}")
    for old in existing:
        if old.is_file() and (old.suffix.lower() in IMAGE_SUFFIXES or old.name == PREPROCESS_FILE):
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)

    photos = load_photos(args.photos)
    count = args.count or len(photos)
    total = 0
    for stem, img, desc in variants(photos, count, args.seed):
        path = out / f"{stem}.png"
        img.save(path, format="PNG", optimize=False, compress_level=6)
        size = path.stat().st_size
        total += size
        print(f"wrote {path}  {img.size[0]}x{img.size[1]}  {desc}  ({size / 1024:.0f} KiB)")
    text = toml_text(args)
    (out / PREPROCESS_FILE).write_text(text, encoding="utf-8")
    print(f"wrote {out / PREPROCESS_FILE}:")
    print("  " + text.rstrip("\n").replace("\n", "\n  "))
    print(f"{count} images from {len(photos)} scikit-image photos ({', '.join(photos)}), {total / 1e6:.1f} MB")
    note = self_check(out, args)
    if note:
        print(f"check: {note}")
    print(f"use: edgepack build MODEL --calibration {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
