"""NRRD / MHA / MHD / DICOM through SimpleITK: arrays in the NIfTI reader's layout, geometry checked
by hand and against ITK's own index-to-world map and nibabel, predictions written back alike."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.data.itk_io import (
    INSTALL_HINT,
    is_itk_path,
    prediction_path,
    read_itk_image,
    read_itk_label,
    save_like,
)
from medseg.errors import DataError

sitk = pytest.importorskip("SimpleITK")

SPACING_XYZ = (0.5, 0.8, 2.0)
ORIGIN_LPS = (10.0, -20.0, 30.0)
# columns: x index runs along +y (LPS), y index along -x, z index along +z (a 90-degree rotation)
DIRECTION = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _volume() -> np.ndarray:
    return np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # [z, y, x]


def _itk_image(arr: np.ndarray):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN_LPS)
    img.SetDirection(DIRECTION.ravel().tolist())
    return img


def _ras_by_hand(index_xyz) -> np.ndarray:
    lps = np.asarray(ORIGIN_LPS) + DIRECTION @ (np.asarray(SPACING_XYZ) * np.asarray(index_xyz, float))
    return lps * np.array([-1.0, -1.0, 1.0])


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".mhd"])
def test_read_geometry_round_trip(ext, tmp_path):
    path = tmp_path / f"ct{ext}"
    sitk.WriteImage(_itk_image(_volume()), str(path))
    assert is_itk_path(path)
    image, spacing, geometry = read_itk_image(path)
    assert image.shape == (4, 5, 6, 1) and image.dtype == np.float32
    np.testing.assert_array_equal(image[..., 0], _volume())
    assert spacing == (2.0, 0.8, 0.5)  # (sz, sy, sx) as the NIfTI reader returns
    assert geometry["shape_xyz"] == [6, 5, 4] and geometry["layout"] == "zyx"
    affine = np.asarray(geometry["affine"])
    img = sitk.ReadImage(str(path))
    for idx in [(0, 0, 0), (5, 0, 0), (0, 4, 0), (0, 0, 3), (5, 4, 3), (2, 1, 3)]:
        world = affine @ np.array([*idx, 1.0])
        np.testing.assert_allclose(world[:3], _ras_by_hand(idx), atol=1e-9)
        itk_lps = np.array(img.TransformIndexToPhysicalPoint([int(v) for v in idx]))
        np.testing.assert_allclose(world[:3], itk_lps * [-1, -1, 1], atol=1e-9)


def test_affine_matches_nibabel_on_the_same_image(tmp_path):
    pytest.importorskip("nibabel")
    from medseg.data.nifti import read_nifti_image

    img = _itk_image(_volume())
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(img, str(tmp_path / "a.nrrd"))
    nii, nii_spacing, nii_geom = read_nifti_image([tmp_path / "a.nii.gz"])
    itk, itk_spacing, itk_geom = read_itk_image(tmp_path / "a.nrrd")
    np.testing.assert_array_equal(nii, itk)
    np.testing.assert_allclose(nii_spacing, itk_spacing, rtol=1e-6)
    np.testing.assert_allclose(nii_geom["affine"], itk_geom["affine"], atol=1e-5)
    assert nii_geom["shape_xyz"] == itk_geom["shape_xyz"]


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".mhd", ".nii.gz"])
def test_save_like_writes_the_input_geometry(ext, tmp_path):
    sitk.WriteImage(_itk_image(_volume()), str(tmp_path / "in.nrrd"))
    _, _, geometry = read_itk_image(tmp_path / "in.nrrd")
    labels = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3).astype(np.uint8)
    out = save_like(labels, geometry, tmp_path / "pred" / f"case{ext}")
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    np.testing.assert_allclose(back.GetSpacing(), SPACING_XYZ, rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), ORIGIN_LPS, atol=1e-5)
    np.testing.assert_allclose(np.reshape(back.GetDirection(), (3, 3)), DIRECTION, atol=1e-6)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left
    np.testing.assert_array_equal(read_itk_label(out) if ext != ".nii.gz" else labels, labels)
    with pytest.raises(ValueError, match="does not match the source image"):
        save_like(labels[:2], geometry, tmp_path / "bad.nrrd")


def _dicom_series(
    folder: Path, arr: np.ndarray, spacing_xyz=(0.7, 0.7, 2.5), origin=(-50.0, 20.0, 100.0)
) -> None:
    """One CT series, a file per slice, written in shuffled order (the reader sorts by position)."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.424242"
    for k in [2, 0, 3, 1]:
        sl = sitk.GetImageFromArray(arr[k : k + 1].astype(np.int16))
        sl.SetSpacing(spacing_xyz)
        position = (origin[0], origin[1], origin[2] + k * spacing_xyz[2])
        sl.SetOrigin(position)
        for tag, value in [
            ("0008|0060", "CT"),
            ("0020|000e", series),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.1.1"),
            ("0020|0032", "\\".join(f"{v:g}" for v in position)),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0013", str(k + 1)),
            ("0028|0030", f"{spacing_xyz[1]:g}\\{spacing_xyz[0]:g}"),
            ("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.2.{k + 1}"),
        ]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k}.dcm"))
        writer.Execute(sl)


def test_dicom_series_is_read_in_position_order_with_its_geometry(tmp_path):
    arr = (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 7 - 100).astype(np.int16)
    _dicom_series(tmp_path / "series", arr)
    assert is_itk_path(tmp_path / "series")
    image, spacing, geometry = read_itk_image(tmp_path / "series")
    np.testing.assert_array_equal(image[..., 0], arr)
    np.testing.assert_allclose(spacing, (2.5, 0.7, 0.7), rtol=1e-6)
    # by hand: identity direction, LPS origin (-50, 20, 100) -> RAS (50, -20, 100)
    world = np.asarray(geometry["affine"]) @ np.array([5, 4, 3, 1.0])
    np.testing.assert_allclose(world[:3], [50 - 5 * 0.7, -20 - 4 * 0.7, 100 + 3 * 2.5], atol=1e-4)
    path, note = prediction_path(tmp_path / "series", tmp_path / "out", "series")
    assert path.name == "series.nii.gz" and "written as NIfTI" in note
    assert prediction_path(tmp_path / "a.mha", tmp_path, "a") == (tmp_path / "a.mha", None)


def test_two_series_in_one_folder_are_refused(tmp_path):
    arr = np.zeros((4, 4, 4), np.int16)
    _dicom_series(tmp_path / "s", arr)
    other = sitk.GetImageFromArray(arr[:1])
    other.SetMetaData("0020|000e", "1.2.3.999")
    other.SetMetaData("0020|0032", "0\\0\\0")
    other.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
    sitk.WriteImage(other, str(tmp_path / "s" / "other.dcm"))
    with pytest.raises(DataError, match="2 DICOM series"):
        read_itk_image(tmp_path / "s")


def test_corrupt_and_missing_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 6 5 4\nencoding: raw\n\n\0\0")
    with pytest.raises(DataError, match="bad.nrrd: cannot read image"):
        read_itk_image(bad)
    with pytest.raises(DataError, match="missing.mha: image file not found"):
        read_itk_image(tmp_path / "missing.mha")


def test_missing_simpleitk_gives_the_install_hint(tmp_path, monkeypatch):
    sitk.WriteImage(_itk_image(_volume()), str(tmp_path / "a.nrrd"))
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(DataError) as err:
        read_itk_image(tmp_path / "a.nrrd")
    assert (
        str(err.value)
        == f"{tmp_path / 'a.nrrd'}: reading NRRD, MHA/MHD and DICOM needs SimpleITK: {INSTALL_HINT}"
    )
    assert INSTALL_HINT == 'pip install "medseg[itk]"'
