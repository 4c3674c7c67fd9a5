"""Fuzzing the readers: image and mask files (PNG, BMP, TIFF, JPEG), HDF5/npz arrays and NIfTI
volumes, valid and damaged (truncated, bytes changed, wrong magic, huge declared sizes, odd
dtypes, NaN). Every input either reads into a sound array or raises medseg's DataError naming
the file; nothing else (see fuzz_outcome.py). Profiles and counts: conftest.py."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fuzz_outcome import outcome
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from medseg.data.nifti import read_nifti_image, read_nifti_label
from medseg.data.readers import read_array_case, read_image_2d, read_mask_2d
from medseg.errors import DataError

FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".jpg": "JPEG"}
MODES = ("L", "RGB", "RGBA", "I;16", "1", "P", "F")
HUGE = st.sampled_from([0, 1, 2**15, 2**16 - 1, 60_000, 2**24, 2**31 - 1, 2**32 - 1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` unchanged, truncated, with bytes replaced, with a wrong magic, or with garbage appended."""
    kind = draw(st.sampled_from(["none", "truncate", "flip", "magic", "append"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "flip" and data:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if kind == "magic":
        return draw(st.binary(min_size=8, max_size=8)) + data[8:]
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    return data


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _declare_png_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR to declare ``width`` x ``height`` (with a valid CRC)."""
    body = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + _png_chunk(b"IHDR", body) + data[33:]


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(FORMATS)))
    modes = {".png": MODES[:-1], ".tif": MODES}.get(suffix, ("L", "RGB"))  # float images: TIFF only
    mode = draw(st.sampled_from(modes))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=FORMATS[suffix])
    data = buf.getvalue()
    if suffix == ".png" and draw(st.booleans()):
        data = _declare_png_size(data, draw(HUGE), draw(HUGE))
    return suffix, draw(mutated(data))


def _sound_image(arr) -> None:
    assert isinstance(arr, np.ndarray) and arr.ndim == 3 and min(arr.shape[:2]) >= 2, getattr(
        arr, "shape", arr
    )
    assert arr.dtype.kind in "biuf" and (arr.dtype.kind != "f" or np.isfinite(arr).all())


def _sound_mask(arr) -> None:
    assert isinstance(arr, np.ndarray) and arr.ndim == 2, getattr(arr, "shape", arr)
    assert arr.dtype.kind in "biuf" and (arr.dtype.kind != "f" or np.isfinite(arr).all())


@given(case=image_files())
def test_image_and_mask_files(folder, case):
    suffix, data = case
    path = folder / f"fuzzed_image{suffix}"
    path.write_bytes(data)
    outcome("image files: read_image_2d", path, lambda: read_image_2d(path), _sound_image)
    outcome("image files: read_mask_2d", path, lambda: read_mask_2d(path), _sound_mask)


DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "int64",
    "bool",
    "complex64",
    "U3",
)
SHAPES = st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple)


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(SHAPES)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arr = (rng.random(shape) * 4).astype(dtype) if dtype.kind != "U" else np.full(shape, "ab", dtype)
    if dtype.kind == "f" and arr.size and draw(st.booleans()):
        arr.flat[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return arr


@st.composite
def array_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".npz", ".h5"]))
    content = {"image": draw(arrays())}
    if draw(st.booleans()):
        content["label"] = draw(arrays())
    if draw(st.booleans()):
        content["spacing"] = np.asarray(draw(st.lists(st.floats(allow_nan=True), max_size=4)))
    if draw(st.booleans()):  # other names than image/label
        content = {draw(st.sampled_from(["img", "data", "x"])): v for v in content.values()}
    buf = io.BytesIO()
    if suffix == ".npz":
        np.savez(buf, **content)
    else:
        import h5py

        with h5py.File(buf, "w") as f:
            for k, v in content.items():
                f.create_dataset(k, data=v.astype("S3") if v.dtype.kind == "U" else v)
    return suffix, draw(mutated(buf.getvalue()))


def _sound_case(result) -> None:
    image, label, spacing = result
    assert image.ndim in (3, 4) and min(image.shape[-3:-1]) >= 2, image.shape
    assert image.dtype.kind in "biuf" and (image.dtype.kind != "f" or np.isfinite(image).all())
    if label is not None:
        assert label.shape == image.shape[:-1] and label.dtype.kind in "biuf", (label.shape, image.shape)
        assert label.dtype.kind != "f" or np.isfinite(label).all()
    if spacing is not None:
        assert len(spacing) == image.ndim - 1 and all(np.isfinite(spacing)) and min(spacing) > 0


@given(case=array_files())
def test_array_files(folder, case):
    suffix, data = case
    path = folder / f"fuzzed_case{suffix}"
    path.write_bytes(data)
    outcome("HDF5/npz: read_array_case", path, lambda: read_array_case(path), _sound_case)


NIFTI_DTYPES = ("uint8", "int16", "int32", "float32", "float64", "complex64", "uint16")


@st.composite
def nifti_files(draw) -> bytes:
    import nibabel as nib

    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=2, max_size=5)))
    dtype = np.dtype(draw(st.sampled_from(NIFTI_DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arr = (rng.random(shape) * 4).astype(dtype)
    if dtype.kind == "f" and draw(st.booleans()):
        arr.flat[0] = np.nan
    zooms = draw(st.lists(st.floats(0.1, 3) | st.floats(-3, -0.1), min_size=3, max_size=3))
    img = nib.Nifti1Image(arr, np.diag([*zooms, 1.0]))  # damaged headers come from `mutated`
    data = bytearray(img.to_bytes())
    if draw(st.booleans()):  # declare other dimensions (dim[0..7] at byte 40) without the data
        dims = [draw(st.integers(0, 7))] + [draw(HUGE.map(lambda v: v % 32768)) for _ in range(7)]
        data[40:56] = struct.pack("<8h", *dims)
    return draw(mutated(bytes(data)))


def _sound_volume(result) -> None:
    image, spacing, _geometry = result
    assert image.ndim == 4 and image.dtype.kind in "biuf", (image.shape, image.dtype)
    assert image.dtype.kind != "f" or np.isfinite(image).all()
    assert len(spacing) == 3


def _sound_label(arr) -> None:
    assert arr.ndim == 3 and (arr.dtype.kind != "f" or np.isfinite(arr).all())


@given(data=nifti_files())
def test_nifti_files(folder, data):
    path = folder / "fuzzed_volume.nii"
    path.write_bytes(data)
    outcome("NIfTI: read_nifti_image", path, lambda: read_nifti_image([path]), _sound_volume)
    outcome("NIfTI: read_nifti_label", path, lambda: read_nifti_label(path), _sound_label)


def test_complex_nifti_is_refused(folder):
    """Found by test_nifti_files: a complex-valued NIfTI volume was read as complex numbers."""
    import nibabel as nib

    path = folder / "complex_volume.nii"
    nib.save(nib.Nifti1Image(np.ones((2, 3, 4), np.complex64), np.eye(4)), str(path))
    with pytest.raises(DataError, match="complex_volume.nii: NIfTI image has voxels of type complex64"):
        read_nifti_image([path])
