"""Readers return the voxel geometry: NIfTI pixdim (the ACDC affine trap) and HDF5 / npz ``spacing``."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from medseg.data import open_cases
from medseg.data.geometry import (
    GeometryWarning,
    affine_spacing,
    case_slice_axis,
    restore_prediction,
    to_model_grid,
)
from medseg.data.geometry.affine import reset_warning
from medseg.data.nifti import read_nifti_image
from medseg.data.readers import read_array_case
from medseg.errors import DataError

nib = pytest.importorskip("nibabel")


@pytest.fixture(autouse=True)
def _fresh_warning():
    reset_warning()
    yield
    reset_warning()


ACDC_CASE = "testing/patient101/patient101_frame01"
CROP = (slice(100, 132), slice(100, 124), slice(2, 5))  # x, y, z: part of the heart, 3 slices


def _acdc_crop(tmp_path, real_data):
    """A small crop of an ACDC test volume and its label, written with the file's own header and
    affine (unshifted: a changed affine would make nibabel rewrite pixdim and hide the trap)."""
    src = real_data("acdc-nifti") / f"{ACDC_CASE}.nii.gz"
    img, lab = nib.load(src), nib.load(str(src).replace(".nii.gz", "_gt.nii.gz"))
    for folder, im in (("imagesTr", img), ("labelsTr", lab)):
        (tmp_path / folder).mkdir()
        out = nib.Nifti1Image(np.asarray(im.dataobj)[CROP], im.affine, header=im.header)
        nib.save(out, str(tmp_path / folder / "p101.nii.gz"))
    path = tmp_path / "imagesTr" / "p101.nii.gz"
    kept = nib.load(str(path))
    assert affine_spacing(kept.affine) == pytest.approx((1, 1, 1))  # the trap survived the crop
    return path


@pytest.mark.data
def test_acdc_spacing_comes_from_pixdim(tmp_path, real_data):
    path = _acdc_crop(tmp_path, real_data)
    with pytest.warns(GeometryWarning, match="p101.nii.gz: affine voxel size"):
        image, spacing, geometry = read_nifti_image([path])
    # SimpleITK's reading of this file (shared/data/acdc-nifti/SOURCE.md): 1.6406, 1.6406, 10.0
    assert spacing == pytest.approx((10.0, 1.6406, 1.6406), rel=1e-4)  # (z, y, x)
    voxel = np.asarray(geometry["voxel_affine"])
    assert affine_spacing(voxel) == pytest.approx((1.6406, 1.6406, 10.0), rel=1e-4)
    assert np.sign(np.diag(voxel)[:3]).tolist() == [-1, -1, 1]  # the sform's direction is kept
    assert np.asarray(geometry["affine"]).tolist() == nib.load(str(path)).affine.tolist()  # file's own
    assert image.shape == (3, 24, 32, 1)
    assert case_slice_axis(voxel) == 2  # 10 mm through-plane: slices along S
    case = open_cases(tmp_path)[0]
    assert case["spacing"] == pytest.approx((10.0, 1.6406, 1.6406), rel=1e-4)


@pytest.mark.data
def test_acdc_crop_round_trips_through_the_model_grid(tmp_path, real_data):
    path = _acdc_crop(tmp_path, real_data)
    label = np.asarray(nib.load(str(path).replace("imagesTr", "labelsTr")).dataobj)
    with pytest.warns(GeometryWarning):
        _, _, geometry = read_nifti_image([path])
    data = np.asarray(nib.load(str(path)).dataobj)[..., None]  # x, y, z storage order
    _, lab, _, rec = to_model_grid(data, np.asarray(geometry["voxel_affine"]), (1.0, 1.0, 5.0), label)
    assert rec.model_shape == (52, 39, 6)  # round(32*1.6406), round(24*1.6406), 3*10/5
    back, affine = restore_prediction(lab, rec)
    assert back.shape == label.shape and back.dtype == label.dtype
    assert (back == label).mean() > 0.95


def _volume_case():
    rng = np.random.default_rng(0)
    return rng.random((4, 10, 12)).astype(np.float32), rng.integers(0, 3, (4, 10, 12)).astype(np.uint8)


@pytest.mark.parametrize("where", ["file", "image", "dataset"])
def test_hdf5_spacing(tmp_path, where):
    image, label = _volume_case()
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["image"], f["label"] = image, label
        if where == "file":
            f.attrs["spacing"] = (5.0, 1.5, 1.25)
        elif where == "image":
            f["image"].attrs["spacing"] = (5.0, 1.5, 1.25)
        else:
            f["spacing"] = np.array([5.0, 1.5, 1.25])
    img, lab, spacing = read_array_case(path)
    assert spacing == (5.0, 1.5, 1.25) and img.shape == (4, 10, 12, 1) and lab.shape == (4, 10, 12)
    assert open_cases(path)[0]["spacing"] == (5.0, 1.5, 1.25)


def test_npz_spacing_and_none(tmp_path):
    image, label = _volume_case()
    np.savez(tmp_path / "a.npz", image=image, label=label, spacing=np.array([3.0, 0.8, 0.8]))
    np.savez(tmp_path / "b.npz", image=image, label=label)
    assert read_array_case(tmp_path / "a.npz")[2] == (3.0, 0.8, 0.8)
    assert read_array_case(tmp_path / "b.npz")[2] is None


@pytest.mark.parametrize("bad", [(1.0, 1.0), (1.0, -1.0, 1.0), (1.0, float("nan"), 1.0)])
def test_bad_spacing_names_the_file(tmp_path, bad):
    image, label = _volume_case()
    np.savez(tmp_path / "bad.npz", image=image, label=label, spacing=np.array(bad))
    with pytest.raises(DataError, match=r"bad\.npz: 'spacing' must hold 3 positive numbers"):
        read_array_case(tmp_path / "bad.npz")
