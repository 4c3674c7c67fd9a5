"""Readers refuse what would crash or silently go wrong: decompression bombs (pixel cap checked
from the header), PNGs with damaged image data (CRC), empty or one-pixel arrays, complex arrays,
4-D volumes with many frames."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data.readers import max_pixels, read_array_case, read_image_2d, read_mask_2d
from medseg.errors import DataError


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A few hundred bytes that declare a huge grey image (the image data is not there)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("width, height", [(10_000, 10_000), (20_000, 10_000)])  # 100 and 200 Mpx
def test_decompression_bombs_are_refused_from_the_header(width, height, tmp_path):
    path = _png_declaring(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 2000
    with pytest.raises(DataError, match="bomb.png: image declares .* Mpx, more than the limit"):
        read_image_2d(path)
    with pytest.raises(DataError, match="bomb.png"):
        read_mask_2d(path)


def test_pixel_cap_is_configurable(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "a.tif")
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "1000")
    assert max_pixels() == 1000
    for name in ("a.png", "a.tif"):
        with pytest.raises(DataError, match=f"{name}: image declares 40 x 40"):
            read_image_2d(tmp_path / name)
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "1600")
    assert read_image_2d(tmp_path / "a.png").shape == (40, 40, 1)
    monkeypatch.setenv("MEDSEG_MAX_PIXELS", "lots")
    with pytest.raises(DataError, match="MEDSEG_MAX_PIXELS"):
        read_image_2d(tmp_path / "a.png")


def test_bomb_in_a_dataset_is_one_line_in_train_and_a_problem_in_info(tmp_path, capsys):
    from medseg.cli import main

    data = tmp_path / "ds"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(data / "images" / f"c{i}.png")
        Image.fromarray(np.zeros((20, 20), np.uint8)).save(data / "masks" / f"c{i}.png")
    _png_declaring(data / "images" / "c1.png", 20_000, 10_000)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c1.png" in err[0] and "Mpx" in err[0]
    assert main(["info", str(data)]) == 1
    assert "c1.png" in capsys.readouterr().out


def test_png_with_damaged_image_data_is_refused(tmp_path):
    # a smooth image: zlib can still inflate it after its last 8 IDAT bytes are zeroed, so without
    # the CRC check the damaged file is accepted silently (Pillow does not check IDAT CRCs)
    image = (np.add.outer(np.arange(128), np.arange(128)) % 256).astype(np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    raw = bytearray(path.read_bytes())
    idat_crc = raw.rfind(b"IEND") - 8  # the IEND chunk's length field is 4 bytes before its name
    raw[idat_crc - 8 : idat_crc] = bytes(8)  # zero the last 8 bytes of the image data
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"img.png: cannot read image .*checksum"):
        read_image_2d(path)
    with pytest.raises(DataError, match="img.png"):
        read_mask_2d(path)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("shape", [(0, 32), (1, 32), (32, 1), (3, 0, 32)])
def test_empty_or_one_pixel_arrays_are_refused(shape, tmp_path):
    path = _npz(tmp_path / "c.npz", image=np.zeros(shape, np.float32), label=np.zeros(shape, np.uint8))
    with pytest.raises(DataError, match=r"c.npz: .*at least 2"):
        read_array_case(path)
    path = _npz(tmp_path / "u.npz", image=np.zeros(shape, np.float32))
    with pytest.raises(DataError, match=r"u.npz: .*at least 2"):
        read_array_case(path)


def test_complex_images_are_refused(tmp_path):
    image = (np.ones((8, 8)) + 1j * np.ones((8, 8))).astype(np.complex64)
    path = _npz(tmp_path / "c.npz", image=image, label=np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="c.npz: image holds complex values"):
        read_array_case(path)


def test_ordinary_arrays_still_read(tmp_path):
    path = _npz(tmp_path / "ok.npz", image=np.ones((2, 32), np.float32), label=np.zeros((2, 32), np.uint8))
    image, label, _ = read_array_case(path)
    assert image.shape == (2, 32, 1) and label.shape == (2, 32)


def test_info_handles_a_folder_mixing_grey_and_rgb_images(tmp_path):
    from medseg.data.fingerprint import fingerprint

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i, shape in enumerate([(16, 16), (16, 16, 3), (16, 16, 3)]):
        Image.fromarray(np.full(shape, 10 * (i + 1), np.uint8)).save(tmp_path / "images" / f"c{i}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / f"c{i}.png")
    fp = fingerprint(tmp_path)
    assert fp["channels"] == {"1": 1, "3": 2}
    assert fp["intensity"]["channel_means"] == {"1": [10.0], "3": [25.0, 25.0, 25.0]}


def test_4d_nifti_with_many_frames_warns(tmp_path):
    nib = pytest.importorskip("nibabel")
    from medseg.data.nifti import read_nifti_image

    path = tmp_path / "cine.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 40), np.float32), np.eye(4)), str(path))
    with pytest.warns(UserWarning, match="cine.nii.gz: 40 channels"):
        image, _, _ = read_nifti_image([path])
    assert image.shape == (4, 8, 8, 40)
    modalities = tmp_path / "mri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 4), np.float32), np.eye(4)), str(modalities))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_nifti_image([modalities])[0].shape == (4, 8, 8, 4)
