"""Calibration from image files + preprocess.toml (edgepack.data.images via load_calibration)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")
Image = pytest.importorskip("PIL.Image")

from edgepack.errors import CalibrationError  # noqa: E402
from edgepack.model import TensorSpec  # noqa: E402
from edgepack.data.calibration import load_calibration  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC = TensorSpec("images", "float32", (1, 3, 64, 64))
NHWC = TensorSpec("images", "float32", (1, 64, 64, 3))
# four RGB photographs that ship inside the scikit-image wheel, with different aspect ratios
PHOTOS = {"a_astronaut": "astronaut", "b_chelsea": "chelsea", "c_coffee": "coffee", "d_rocket": "rocket"}
CHELSEA = 1  # index of the 451x300 (landscape) photo in sorted order
NO_TOML = object()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for stem, name in PHOTOS.items():
        Image.fromarray(getattr(skimage_data, name)()).save(folder / f"{stem}.png", compress_level=1)
    return folder


def _toml(**keys) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())


@pytest.fixture()
def calib(photo_dir: Path, tmp_path: Path):
    """calib(**preprocess_keys) -> a fresh folder with the four photos and that preprocess.toml."""

    def make(text: str | object | None = None, **keys) -> Path:
        folder = tmp_path / f"calib{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        for src in sorted(photo_dir.iterdir()):
            (folder / src.name).write_bytes(src.read_bytes())
        if text is not NO_TOML:
            (folder / "preprocess.toml").write_text(text if isinstance(text, str) else _toml(**keys))
        return folder

    return make


def _stack(samples: list[dict], name: str = "images") -> np.ndarray:
    return np.concatenate([s[name] for s in samples])


# ------------------------------------------------------------------------------ tensors


def test_nchw_shapes_dtype_range_and_note(calib) -> None:
    notes: list[str] = []
    samples = load_calibration(calib(input="images", scale=1 / 255), [SPEC], notes=notes)
    assert len(samples) == 4 and all(set(s) == {"images"} for s in samples)
    assert all(s["images"].shape == (1, 3, 64, 64) and s["images"].dtype == np.float32 for s in samples)
    x = _stack(samples)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.std() > 0.1
    assert notes == [
        "4 images from calib0/ preprocessed per preprocess.toml for input 'images' (float32): stretch 64x64, RGB, NCHW, scale 1/255"
    ]


def test_nhwc_is_the_nchw_tensor_transposed(calib) -> None:
    nchw = _stack(load_calibration(calib(layout="NCHW"), [SPEC]))
    nhwc = _stack(load_calibration(calib(layout="NHWC"), [NHWC]))
    assert nhwc.shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))


def test_letterbox_pads_with_pad_value_times_scale(calib) -> None:
    x = _stack(load_calibration(calib(resize="letterbox", pad_value=114, scale=1 / 255), [SPEC]))
    pad = np.float32(114 * np.float32(1 / 255))
    # chelsea is 451x300: scaled to 64x43, centred, so 10 rows above and 11 below are padding
    cat = x[CHELSEA]
    assert np.all(cat[:, :10, :] == pad) and np.all(cat[:, -11:, :] == pad)
    assert not np.all(cat[:, 10, :] == pad) and not np.all(cat[:, -12, :] == pad)
    # the square astronaut needs no padding and equals plain stretch
    np.testing.assert_array_equal(x[0], _stack(load_calibration(calib(resize="stretch"), [SPEC]))[0])


def test_center_crop_keeps_aspect_and_fills_the_frame(calib) -> None:
    crop = _stack(load_calibration(calib(resize="center-crop"), [SPEC]))
    stretch = _stack(load_calibration(calib(resize="stretch"), [SPEC]))
    assert crop.shape == (4, 3, 64, 64)
    np.testing.assert_allclose(crop[0], stretch[0], atol=1e-6)  # square photo: crop == stretch
    assert not np.allclose(crop[CHELSEA], stretch[CHELSEA])


def test_gray_gives_one_channel_and_bgr_reverses_channels(calib) -> None:
    gray = _stack(load_calibration(calib(color="GRAY"), [TensorSpec("images", "float32", (1, 1, 64, 64))]))
    assert gray.shape == (4, 1, 64, 64) and 0.0 <= gray.min() and gray.max() <= 1.0
    rgb = _stack(load_calibration(calib(color="RGB"), [SPEC]))
    bgr = _stack(load_calibration(calib(color="BGR"), [SPEC]))
    np.testing.assert_array_equal(bgr, rgb[:, ::-1])
    assert not np.array_equal(bgr, rgb)


def test_mean_std_normalise_per_channel(calib) -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    plain = _stack(load_calibration(calib(), [SPEC]))
    norm = _stack(load_calibration(calib(mean=mean, std=std), [SPEC]))
    want = (plain - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    np.testing.assert_allclose(norm, want, rtol=1e-5, atol=1e-5)


def test_size_defaults_to_the_models_fixed_hw_and_is_needed_when_dynamic(calib) -> None:
    folder = calib(resize="letterbox")
    assert load_calibration(folder, [SPEC])[0]["images"].shape == (1, 3, 64, 64)
    dynamic = TensorSpec("images", "float32", ("batch", 3, "h", "w"))
    with pytest.raises(CalibrationError, match=r"preprocess.toml: missing key 'size' = \[H, W\]: input 'images' is \?x3x\?x\?"):
        load_calibration(folder, [dynamic])
    sized = calib(size=[48, 80])
    assert load_calibration(sized, [dynamic])[0]["images"].shape == (1, 3, 48, 80)
    with pytest.raises(CalibrationError, match=r"'size' = \[48, 80\] but input 'images' is 1x3x64x64"):
        load_calibration(sized, [SPEC])


def test_uint8_input_gets_whole_pixels(calib) -> None:
    spec = TensorSpec("images", "uint8", (1, 64, 64, 3))
    x = _stack(load_calibration(calib(layout="NHWC", scale=1), [spec]))
    assert x.dtype == np.uint8 and x.max() > 200
    with pytest.raises(CalibrationError, match=r"outside uint8 input 'images'"):
        load_calibration(calib(layout="NHWC", scale=1, mean=[128.0]), [spec])


def test_other_inputs_still_come_from_npy(calib) -> None:
    specs = [SPEC, TensorSpec("scale_factor", "float32", (1, 2))]
    folder = calib(input="images")
    np.save(folder / "scale_factor.npy", np.ones((4, 2), np.float32))
    samples = load_calibration(folder, specs)
    assert len(samples) == 4 and set(samples[0]) == {"images", "scale_factor"}
    np.save(folder / "scale_factor.npy", np.ones((3, 2), np.float32))
    with pytest.raises(CalibrationError, match=r"different sample counts \('images' 4, 'scale_factor' 3\)"):
        load_calibration(folder, specs)
    with pytest.raises(CalibrationError, match=r"missing key 'input': the model has 2 inputs \(images, scale_factor\)"):
        load_calibration(calib(size=[64, 64]), specs)


def test_loading_is_deterministic(calib) -> None:
    folder = calib(resize="letterbox", size=[64, 64], color="BGR", mean=[0.5], std=[0.25])
    a, b = load_calibration(folder, [SPEC]), load_calibration(folder, [SPEC])
    assert len(a) == len(b) == 4
    assert all(np.array_equal(x["images"], y["images"]) for x, y in zip(a, b))


# ------------------------------------------------------------------------------ errors


def _corrupt(folder: Path) -> None:
    good = (folder / "c_coffee.png").read_bytes()
    (folder / "c_coffee.png").write_bytes(good[: len(good) // 3])


def _broken_header(folder: Path) -> None:
    (folder / "e_notes.jpg").write_bytes(b"this is not a jpeg")


def _npy_too(folder: Path) -> None:
    np.save(folder / "images.npy", np.zeros((4, 3, 64, 64), np.float32))


@pytest.mark.parametrize(
    ("text", "change", "match"),
    [
        (NO_TOML, None, r"calibration folder calib0 has 4 image file\(s\) but no preprocess.toml .* add one, e.g. input = \"images\", size = \[64, 64\], layout = \"NCHW\""),
        ('sizee = [64, 64]\n', None, r"calib0/preprocess.toml: unknown key 'sizee' \(did you mean 'size'\?\)"),
        ('layout = "NCWH"\n', None, r"calib0/preprocess.toml: 'layout' = 'NCWH' is not one of 'NCHW', 'NHWC' \(did you mean 'NCHW'\?\)"),
        ('resize = "crop"\n', None, r"'resize' = 'crop' is not one of 'stretch', 'letterbox', 'center-crop'"),
        ('scale = "1/255"\n', None, r"calib0/preprocess.toml: 'scale' must be a number, got str '1/255'"),
        ('size = [64.0, 64]\n', None, r"every item of 'size' must be an integer, got 64.0"),
        ('pad_value = 300\n', None, r"'pad_value' = 300 must be at most 255"),
        ('size = [64]\n', None, r"'size' must be \[H, W\], two positive integers, got \[64\]"),
        ('mean = [0.1, 0.2]\n', None, r"'mean' has 2 values; color = 'RGB' has 3 channel\(s\): give 1 or 3"),
        ('std = [0.0]\n', None, r"'std' = \[0.0, 0.0, 0.0\] must be positive"),
        ('input = "image"\n', None, r"'input' = 'image' names no model input \(did you mean 'images'\?\); inputs: images"),
        ('color = "GRAY"\n', None, r"'color' = 'GRAY' gives 1 channel\(s\) but input 'images' is 1x3x64x64"),
        ('layout = "NHWC"\n', None, r"input 'images' is 1x3x64x64 in NHWC \(channel dim 64\); is 'layout' = 'NCHW'\?"),
        ("size = [64, 64\n", None, r"calib0/preprocess.toml: invalid TOML"),
        ("", _corrupt, r"calibration image c_coffee.png cannot be decoded"),
        ("", _broken_header, r"calibration image e_notes.jpg cannot be decoded: cannot identify image file"),
        ("", _npy_too, r"calibration input 'images' is given twice \(images \(4 in calib0/ per preprocess.toml\) and images.npy\)"),
    ],
    ids=["no-toml", "unknown-key", "bad-layout", "bad-resize", "scale-type", "size-float", "pad-range", "size-len",
         "mean-len", "std-zero", "wrong-input", "gray-vs-3ch", "layout-mismatch", "bad-toml", "corrupt-png",
         "not-an-image", "images-and-npy"],
)
def test_errors(calib, text, change, match) -> None:
    folder = calib(text)
    if change is not None:
        change(folder)
    with pytest.raises(CalibrationError, match=match) as err:
        load_calibration(folder, [SPEC])
    assert "\n" not in str(err.value)


def test_preprocess_toml_without_images(tmp_path: Path) -> None:
    (tmp_path / "preprocess.toml").write_text(_toml(size=[64, 64]))
    with pytest.raises(CalibrationError, match=r"preprocess.toml is present but .* has no image files"):
        load_calibration(tmp_path, [SPEC])


def test_missing_pillow_is_named(calib, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = calib()
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(CalibrationError, match=r"^image calibration needs Pillow: pip install 'edgepack\[images\]'$"):
        load_calibration(folder, [SPEC])


# ------------------------------------------------------------------------------ benchmarks/make_calibration.py


def test_make_calibration_writes_a_loadable_deterministic_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("make_calibration", ROOT / "benchmarks" / "make_calibration.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    args = ["--size", "32", "--input", "images", "--layout", "NCHW", "--scale", "1/255", "--resize", "letterbox",
            "--count", "8", "--photos", "astronaut,chelsea,coffee"]
    digests = []
    for run in ("a", "b"):
        assert mod.main(["--out", str(tmp_path / run), *args]) == 0
        files = sorted((tmp_path / run).iterdir())
        assert len(files) == 9 and files[-1].name == "preprocess.toml"
        digests.append([hashlib.sha256(f.read_bytes()).hexdigest() for f in files])
    assert digests[0] == digests[1]
    out = capsys.readouterr().out
    assert "check: 8 images from a/ preprocessed per preprocess.toml" in out and "letterbox 32x32" in out
    samples = load_calibration(tmp_path / "a", [TensorSpec("images", "float32", (1, 3, 32, 32))])
    assert len(samples) == 8
