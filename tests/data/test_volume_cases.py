"""Volumes through the data path: each case loads in the case layout (RAS, slice axis first) with
its :class:`Geometry`, and a case-layout label map written back lands in the input's own grid,
affine, header and format. nibabel and SimpleITK, reading the files themselves, are the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data import DataConfig, open_cases
from medseg.data.geometry import Geometry, restore_labels
from medseg.data.geometry.affine import reset_warning
from medseg.engine.mask_files import write_mask

nib = pytest.importorskip("nibabel")


@pytest.fixture(autouse=True)
def _fresh_warning():
    reset_warning()
    yield
    reset_warning()


def _rotation(deg: float, axis: int) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    r = np.eye(3)
    i, j = [a for a in range(3) if a != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _world_volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A RAS-ordered label volume (blocks of classes 0..3) and its RAS affine (thick S axis)."""
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.repeat(rng.integers(0, 4, (4, 3, 5)), 3, axis=0), 4, axis=1).astype(np.uint8)
    affine = np.diag([1.5, 1.2, 6.0, 1.0])
    affine[:3, 3] = [-20.0, 15.0, 7.0]
    return lab, affine  # shape (12, 12, 5)


def _stored(lab: np.ndarray, affine: np.ndarray, perm, flips, oblique: float = 0.0):
    """The same world volume stored with axes permuted / flipped (and the world rotated a little)."""
    arr, aff = lab, affine.copy()
    for ax, flip in enumerate(flips):
        if flip:
            arr = np.flip(arr, ax)
            shift = np.eye(4)
            shift[ax, ax], shift[ax, 3] = -1, arr.shape[ax] - 1
            aff = aff @ shift
    arr = np.ascontiguousarray(arr.transpose(perm))
    swap = np.eye(4)
    swap[:3, :3] = np.eye(3)[:, perm]
    aff = aff @ swap
    if oblique:
        rot = np.eye(4)
        rot[:3, :3] = _rotation(oblique, 0) @ _rotation(oblique / 2, 2)
        aff = rot @ aff
    return arr, aff


VARIANTS = {
    "ras": ((0, 1, 2), (False, False, False), 0.0),
    "flipped": ((0, 1, 2), (True, False, True), 0.0),
    "permuted": ((2, 0, 1), (False, True, False), 0.0),
    "oblique": ((1, 2, 0), (True, True, False), 17.0),
}


def _write_case(root, cid, arr, aff, zooms=None):
    for folder, data in (("imagesTr", arr.astype(np.float32)), ("labelsTr", arr)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(data, aff)
        if zooms is not None:
            img.header.set_zooms(zooms)
        nib.save(img, str(root / folder / f"{cid}.nii.gz"))
    return root / "imagesTr" / f"{cid}.nii.gz"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_case_layout_is_the_same_whatever_the_storage_and_comes_back_exactly(variant, tmp_path):
    lab, affine = _world_volume()
    perm, flips, oblique = VARIANTS[variant]
    arr, aff = _stored(lab, affine, perm, flips, oblique)
    _write_case(tmp_path, "v", arr, aff)
    case = open_cases(tmp_path, cfg=DataConfig(root=tmp_path, normalize="none"))[0]
    geometry = case["geometry"]
    assert isinstance(geometry, Geometry) and geometry.slice_axis == "S"
    # the case layout is [S, A, R] of the world volume, whatever the storage order
    np.testing.assert_array_equal(case["mask"].numpy(), lab.transpose(2, 1, 0))
    assert case["spacing"] == pytest.approx((6.0, 1.2, 1.5))
    # back to the stored grid: equal voxel for voxel to what nibabel reads from the file
    stored = restore_labels(case["mask"].numpy().astype(np.uint8), geometry)
    np.testing.assert_array_equal(
        stored.transpose(2, 1, 0), np.asarray(nib.load(tmp_path / "labelsTr" / "v.nii.gz").dataobj)
    )
    out = write_mask(case["mask"].numpy(), case, tmp_path / "pred", binary=False)
    assert out.name == "v.nii.gz"
    back, src = nib.load(str(out)), nib.load(str(tmp_path / "labelsTr" / "v.nii.gz"))
    np.testing.assert_array_equal(np.asarray(back.dataobj), arr)
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)
    assert back.shape == arr.shape and back.header.get_zooms() == pytest.approx(src.header.get_zooms())


def test_case_affine_maps_case_voxels_to_the_same_world_points(tmp_path):
    lab, affine = _world_volume()
    arr, aff = _stored(lab, affine, (2, 0, 1), (True, False, True), 11.0)
    _write_case(tmp_path, "v", arr, aff)
    case = open_cases(tmp_path)[0]
    geometry, mask = case["geometry"], case["mask"].numpy()
    # the case voxel at a stored voxel's world point holds that stored voxel's value
    rng = np.random.default_rng(3)
    for ijk in np.stack([rng.integers(0, n, 30) for n in arr.shape], axis=1):
        world = aff @ np.append(ijk, 1.0)
        case_ijk = np.linalg.solve(geometry.affine, world)[:3]
        assert np.allclose(case_ijk, np.round(case_ijk), atol=1e-6)
        assert mask[tuple(np.round(case_ijk).astype(int))] == arr[tuple(ijk)]


@pytest.mark.parametrize(
    "plane,shape", [("axial", (5, 12, 12)), ("coronal", (12, 5, 12)), ("sagittal", (12, 5, 12))]
)
def test_configured_plane_sets_the_first_axis(plane, shape, tmp_path):
    lab, affine = _world_volume()
    _write_case(tmp_path, "v", lab, affine)
    case = open_cases(tmp_path, cfg=DataConfig(root=tmp_path, slice_axis=plane))[0]
    assert tuple(case["mask"].shape) == shape
    assert case["geometry"].slice_axis == {"axial": "S", "coronal": "A", "sagittal": "R"}[plane]
    stored = restore_labels(case["mask"].numpy().astype(np.uint8), case["geometry"])
    np.testing.assert_array_equal(stored, lab.transpose(2, 1, 0))


def test_records_count_slices_along_the_slice_axis(tmp_path):
    """Storage with the thick axis first still trains slice-wise along it (issue 12: the 200
    stretched slices of 256x10 pixels)."""
    from medseg.data import build_data
    from medseg.data.config import AugmentConfig

    lab, affine = _world_volume()
    for k in range(3):
        arr, aff = _stored(lab, affine, (2, 0, 1), (False, False, False))
        _write_case(tmp_path, f"c{k}", arr, aff)
    data = build_data(
        DataConfig(root=tmp_path, size=(16, 16), split={"val_fraction": 0.34}), AugmentConfig(enabled=False)
    )
    assert len(data.train) == 2 * 5  # 5 thick slices per volume, not 12
    assert data.train[0]["image"].shape[-2:] == (16, 16)


def test_target_spacing_resamples_and_restores_the_input_grid(tmp_path):
    lab, affine = _world_volume()
    arr, aff = _stored(lab, affine, (1, 2, 0), (True, False, False))
    _write_case(tmp_path, "v", arr, aff)
    case = open_cases(tmp_path, cfg=DataConfig(root=tmp_path, target_spacing=(3.0, 0.6, 0.75)))[0]
    assert tuple(case["mask"].shape) == (10, 24, 24)  # 5*6/3, 12*1.2/0.6, 12*1.5/0.75
    assert case["spacing"] == pytest.approx((3.0, 0.6, 0.75))
    out = write_mask(case["mask"].numpy(), case, tmp_path / "pred", binary=False)
    back = nib.load(str(out))
    assert back.shape == arr.shape
    np.testing.assert_allclose(back.affine, aff, atol=1e-6)
    # integer up-sampling and nearest down-sampling: each stored voxel is seen again, up to the
    # interpolation at class borders
    assert (np.asarray(back.dataobj) == arr).mean() > 0.9


def test_acdc_style_pixdim_trap_round_trips_with_the_input_header(tmp_path):
    """Affine scale 1, true spacing in pixdim (ACDC): the case uses pixdim, and the written label
    keeps the file's own affine and pixdim (what SimpleITK reads back)."""
    sitk = pytest.importorskip("SimpleITK")
    lab, _ = _world_volume()
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])
    path = _write_case(tmp_path, "p", lab, aff, zooms=(1.6, 1.6, 10.0))
    with pytest.warns(UserWarning, match="pixdim"):
        case = open_cases(tmp_path)[0]
    assert case["spacing"] == pytest.approx((10.0, 1.6, 1.6))
    out = write_mask(case["mask"].numpy(), case, tmp_path / "pred", binary=False)
    back, src = nib.load(str(out)), nib.load(str(path))
    np.testing.assert_array_equal(np.asarray(back.dataobj), lab)
    assert back.affine.tolist() == src.affine.tolist()
    assert back.header.get_zooms() == src.header.get_zooms()
    assert sitk.ReadImage(str(out)).GetSpacing() == pytest.approx(sitk.ReadImage(str(path)).GetSpacing())


def test_label_on_another_grid_is_one_error_naming_both_files(tmp_path):
    from medseg.errors import DataError

    lab, affine = _world_volume()
    _write_case(tmp_path, "v", lab, affine)
    shifted = affine.copy()
    shifted[0, 3] += 3.0
    nib.save(nib.Nifti1Image(lab, shifted), str(tmp_path / "labelsTr" / "v.nii.gz"))
    with pytest.raises(DataError, match=r"labelsTr/v\.nii\.gz: affine differs from .*imagesTr/v\.nii\.gz"):
        open_cases(tmp_path)[0]
