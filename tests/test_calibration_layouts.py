"""Every calibration layout users try gives the same samples; dtypes and byte orders are cast where the
values survive (with a note); a refused layout says which layouts work; header checks on every path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.data.calibration import load_calibration
from edgepack.errors import CalibrationError
from edgepack.model import TensorSpec

SPECS = [TensorSpec("x", "float32", ("N", 3, 4, 5)), TensorSpec("mask", "int64", ("N", 6))]
RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 1, 3, 4, 5)).astype(np.float32)  # 6 samples, each a batch-1 feed
MASK = RNG.integers(0, 2, (6, 1, 6)).astype(np.int64)


def _stacks(d: Path) -> None:  # <input>.npy, samples on the batch axis
    np.save(d / "x.npy", X[:, 0])
    np.save(d / "mask.npy", MASK[:, 0])


def _leading_axis(d: Path) -> None:  # <input>.npy, samples on an extra leading axis
    np.save(d / "x.npy", X)
    np.save(d / "mask.npy", MASK)


def _one_npz(d: Path) -> None:
    np.savez(d / "calib.npz", x=X[:, 0], mask=MASK[:, 0])


def _npz_per_sample(d: Path) -> None:
    for i in range(6):
        np.savez(d / f"s{i:02d}.npz", x=X[i], mask=MASK[i])


def _npz_per_sample_without_batch_axis(d: Path) -> None:
    for i in range(6):
        np.savez_compressed(d / f"s{i:02d}.npz", x=X[i, 0], mask=MASK[i, 0])


def _input_folders(d: Path) -> None:  # <input>/ with one .npy per sample
    for name, data in (("x", X), ("mask", MASK)):
        (d / name).mkdir()
        for i in range(6):
            np.save(d / name / f"{i:04d}.npy", data[i] if i % 2 else data[i, 0])  # with and without the batch axis


def _mixed(d: Path) -> None:  # one input as a stack, the other as a folder
    np.save(d / "x.npy", X)
    (d / "mask").mkdir()
    for i in range(6):
        np.save(d / "mask" / f"{i}.npy", MASK[i])


LAYOUTS = [_stacks, _leading_axis, _one_npz, _npz_per_sample, _npz_per_sample_without_batch_axis, _input_folders, _mixed]


@pytest.mark.parametrize("make", LAYOUTS, ids=[f.__name__.strip("_") for f in LAYOUTS])
def test_every_layout_gives_the_same_samples(tmp_path, make):
    make(tmp_path)
    samples = load_calibration(tmp_path, SPECS)
    assert len(samples) == 6
    for i, s in enumerate(samples):
        assert s["x"].shape == (1, 3, 4, 5) and s["x"].dtype == np.float32
        np.testing.assert_array_equal(s["x"], X[i])
        np.testing.assert_array_equal(s["mask"], MASK[i])


@pytest.mark.parametrize(
    ("data", "want", "note"),
    [
        (X.astype(">f4"), np.float32, "byte order converted to this machine's"),
        (X.astype(np.float16), np.float32, "float16 widened to float32"),
        (X.astype(np.float64), np.float32, "float64 cast to float32"),
        (np.rint(X * 10).astype(np.int16), np.float32, "int16 widened to float32 for input 'x' (values kept, not rescaled)"),
    ],
    ids=["big-endian", "float16", "float64", "int16"],
)
def test_value_keeping_casts_are_noted(tmp_path, data, want, note):
    np.save(tmp_path / "x.npy", data)
    np.save(tmp_path / "mask.npy", MASK)
    notes: list[str] = []
    samples = load_calibration(tmp_path, SPECS, notes=notes)
    assert samples[0]["x"].dtype == want and samples[0]["x"].dtype.isnative
    np.testing.assert_allclose(samples[3]["x"], data[3].astype(np.float64), rtol=1e-3)
    assert any(note in n for n in notes), notes


def test_integer_casts_keep_values_or_refuse(tmp_path):
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "mask.npy", MASK.astype(">i4"))  # big-endian int32: widened, byte order noted
    notes: list[str] = []
    samples = load_calibration(tmp_path, SPECS, notes=notes)
    assert samples[0]["mask"].dtype == np.int64 and any("int32 widened to int64" in n for n in notes)
    int32_spec = [SPECS[0], TensorSpec("mask", "int32", ("N", 6))]
    np.save(tmp_path / "mask.npy", MASK)  # int64 whose values fit int32
    samples = load_calibration(tmp_path, int32_spec, notes=notes)
    assert samples[0]["mask"].dtype == np.int32 and any("int64 narrowed to int32" in n for n in notes)
    np.save(tmp_path / "mask.npy", MASK + 2**40)
    with pytest.raises(CalibrationError, match="mask.npy is int64 but model input 'mask' is int32"):
        load_calibration(tmp_path, int32_spec)
    np.save(tmp_path / "mask.npy", MASK.astype(np.float32) + 0.5)
    with pytest.raises(CalibrationError, match="mask.npy is float32 but model input 'mask' is int64"):
        load_calibration(tmp_path, SPECS)


def test_a_cast_note_is_written_once_per_input_folder(tmp_path):
    _input_folders(tmp_path)
    for f in (tmp_path / "x").iterdir():
        np.save(f, np.load(f).astype(np.float64))
    notes: list[str] = []
    load_calibration(tmp_path, SPECS, notes=notes)
    assert [n for n in notes if "float64" in n] == ["calibration x/ (6 .npy files): float64 cast to float32 for input 'x'"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [np.save(d / f"s{i}.npy", X[i]) for i in range(3)],
         r"calibration s0.npy names no model input 's0'; inputs: x, mask; calibration layouts edgepack reads: "
         r"<input>.npy with the samples stacked on axis 0; .npz files keyed by input name"),
        (lambda d: (np.savez(d / "a.npz", x=X[0], mask=MASK[0]), np.savez(d / "b.npz", x=X[1])),
         r"calibration .npz files hold different inputs: b.npz has x but not mask; with one .npz per sample every "
         r"file holds every input \(mask, x\)"),
        (lambda d: (np.save(d / "x.npy", X), (d / "mask").mkdir(), (d / "mask" / "m.txt").write_text("1")),
         r"calibration folder .*/mask/ for input 'mask' has no .npy files \(it holds .txt\); calibration layouts"),
        (lambda d: np.save(d / "x.npy", X),
         r"has no data for input 'mask' \(add mask.npy, or a mask/ folder of one .npy per sample\); calibration layouts"),
        (lambda d: (d / "notes.txt").write_text("hi"),
         r"has no .npy or .npz files, <input>/ folders or images for the model's inputs \(x, mask\); calibration layouts"),
        (lambda d: (np.save(d / "x.npy", X), np.save(d / "mask.npy", MASK), (d / "x").mkdir(),
                    np.save(d / "x" / "0.npy", X[0])),
         r"calibration input 'x' is given twice \(x.npy and x/ \(1 .npy files\)\)"),
    ],
    ids=["per-sample-npy-at-top", "npz-key-sets-differ", "input-folder-without-npy", "missing-input", "nothing",
         "twice"],
)
def test_refused_layouts_say_which_layouts_work(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(CalibrationError, match=message):
        load_calibration(tmp_path, SPECS)


def test_samples_of_different_sizes_stay_separate_for_dynamic_inputs(tmp_path):
    spec = [TensorSpec("x", "float32", ("N", 3, 48, "W"))]
    (tmp_path / "x").mkdir()
    for i, w in enumerate((80, 160, 320)):
        np.save(tmp_path / "x" / f"{i}.npy", np.ones((3, 48, w), np.float32))
    assert [s["x"].shape for s in load_calibration(tmp_path, spec)] == [(1, 3, 48, 80), (1, 3, 48, 160), (1, 3, 48, 320)]


def test_hidden_files_are_skipped(tmp_path):
    _stacks(tmp_path)
    (tmp_path / "._x.npy").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert len(load_calibration(tmp_path, SPECS)) == 6


# ---------------------------------------------------------------- the security checks hold on the new paths


def _npy_header_claiming(path: Path, shape: tuple[int, ...]) -> None:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    path.write_bytes(b"\x93NUMPY\x01\x00" + buf.getvalue()[8:] + b"\0" * 64)


def test_headers_are_checked_in_input_folders_and_per_sample_npz(tmp_path, monkeypatch):
    (tmp_path / "a" / "x").mkdir(parents=True)
    np.save(tmp_path / "a" / "mask.npy", MASK)
    np.save(tmp_path / "a" / "x" / "0.npy", X[0])
    _npy_header_claiming(tmp_path / "a" / "x" / "1.npy", (1, 3, 4, 2**40))
    with pytest.raises(CalibrationError, match=r"x/1.npy: the header claims shape .* but only 64 bytes follow it"):
        load_calibration(tmp_path / "a", SPECS)
    monkeypatch.setenv("EDGEPACK_MAX_CALIBRATION_MB", "1")
    (tmp_path / "b").mkdir()
    for i in range(3):
        np.savez_compressed(tmp_path / "b" / f"s{i}.npz", x=np.zeros((2500, 3, 4, 5), np.float32), mask=MASK[0])
    with pytest.raises(CalibrationError, match=r"s1.npz\['x.npy'\]: .* over the 1 MB cap"):
        load_calibration(tmp_path / "b", SPECS)


def test_the_number_of_files_is_capped(tmp_path, monkeypatch):
    from edgepack.data import layouts

    monkeypatch.setattr(layouts, "MAX_CALIBRATION_FILES", 4)
    _input_folders(tmp_path)
    with pytest.raises(CalibrationError, match=r"holds 6 data files; at most 4 are read"):
        load_calibration(tmp_path, SPECS)


def test_images_in_an_input_folder(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    specs = [TensorSpec("images", "float32", (1, 3, 8, 8)), TensorSpec("scale", "float32", ("N", 2))]
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "images" / f"{i}.png")
    (tmp_path / "images" / "preprocess.toml").write_text("scale = 1.0\n")
    np.save(tmp_path / "scale.npy", np.ones((3, 2), np.float32))
    notes: list[str] = []
    samples = load_calibration(tmp_path, specs, notes=notes)
    assert [float(s["images"][0, 0, 0, 0]) for s in samples] == [0.0, 40.0, 80.0]
    assert any("3 images from images/ preprocessed per preprocess.toml for input 'images'" in n for n in notes)
