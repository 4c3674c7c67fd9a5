"""3-D patch training data: the patch dataset (shapes, foreground oversampling per batch,
seeding) and the 3-D augmentation, checked against scipy's affine resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from medseg.data import build_data
from medseg.data.config import AugmentConfig, DataConfig
from medseg.data.patch_dataset import PatchDataset
from medseg.data.patches import forced_count
from medseg.data.synthetic import write_box_volumes
from medseg.data.transforms3d import Augment3D, _rotation, mirror_and_rot90, spatial_patch


def _bundle(tmp_path, patch=(8, 16, 16), aug=None, **data):
    write_box_volumes(tmp_path / "tr", n=3)
    write_box_volumes(tmp_path / "va", n=1, seed=1, prefix="val")
    cfg = DataConfig(root=tmp_path / "tr", val_root=tmp_path / "va", format="h5", patch_size=patch, **data)
    return build_data(cfg, aug or AugmentConfig(enabled=False), seed=5)


def test_patches_have_the_patch_shape_and_the_last_third_of_each_batch_is_on_foreground(tmp_path):
    data = _bundle(tmp_path, train_repeats=4)
    train = data.train
    assert isinstance(train, PatchDataset)
    assert len(train) == 12 and len(data.val) == 1 and data.splits["val"] == ["val0_frame01"]
    batch = 3
    train.set_batch_size(batch)
    forced = []
    for i in range(len(train)):
        item = train[i]
        assert item["image"].shape == (1, 8, 16, 16) and item["mask"].shape == (8, 16, 16)
        assert item["roi"].all()  # the volumes are larger than the patch
        if train.sampler.is_forced(i):
            forced.append(i)
            assert bool(item["forced"]) and int((item["mask"] > 0).sum()) > 0
    assert len(forced) == forced_count(batch) * len(train) // batch == 4
    # every volume is cut from once per pass over the volumes
    assert sorted(train.volume_of(i, 0) for i in range(3)) == [0, 1, 2]


def test_patches_are_a_function_of_seed_epoch_and_index(tmp_path):
    data = _bundle(tmp_path, aug=AugmentConfig(preset="nnunet"), train_repeats=2)
    a, b = data.train[4], data.train[4]
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    data.train.set_epoch(1)
    c = data.train[4]
    assert not np.array_equal(a["image"], c["image"])


def test_patches_are_normalised_per_volume(tmp_path):
    data = _bundle(tmp_path, patch=(10, 40, 36))  # the whole volume: the z-score holds exactly
    x = data.train[0]["image"].numpy()
    assert abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3


def _scipy_reference(volume, order, corner, size, matrix):
    """scipy.ndimage.affine_transform of the whole volume: output o reads
    ``centre + matrix @ (o - out_centre)``."""
    half = (np.asarray(size, float) - 1) / 2
    centre = np.asarray(corner, float) + half
    offset = centre - matrix @ half
    return ndimage.affine_transform(
        volume, matrix, offset=offset, output_shape=size, order=order, mode="nearest"
    )


@pytest.mark.parametrize("inplane", [True, False])
def test_rotation_and_scaling_match_scipy_and_keep_image_and_label_aligned(inplane):
    rng = np.random.default_rng(0)
    shape, size, corner = (40, 56, 52), (10, 20, 18), (15, 18, 17)  # the rotated patch stays inside
    image = ndimage.gaussian_filter(rng.normal(size=shape), 2).astype(np.float32)
    mask = (image > 0.02).astype(np.uint8) + (image > 0.12).astype(np.uint8)
    roi = np.ones(shape, bool)
    aug = Augment3D(affine=1.0, rotate_limit=25, scale=(0.8, 1.2), inplane_only=inplane)
    for draw in range(3):
        matrix = aug.draw_matrix(np.random.default_rng(draw))
        assert matrix is not None
        img, lab, inside = spatial_patch(image[None], mask, roi, corner, size, matrix, 0.0)
        assert img.shape == (1, *size) and lab.shape == size and inside.all()
        ref_img = _scipy_reference(image, 1, corner, size, matrix)
        ref_lab = _scipy_reference(mask, 0, corner, size, matrix)
        assert np.abs(img[0] - ref_img).max() < 1e-4
        assert (lab == ref_lab).mean() > 0.995  # nearest-neighbour ties may round apart
        if inplane:
            assert np.allclose(matrix[0], [1, 0, 0])  # thick slices: no resampling across them


def test_an_exact_quarter_turn_equals_numpy_rot90():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 6, 16, 16)).astype(np.float32)
    mask = rng.integers(0, 3, size=(6, 16, 16)).astype(np.uint8)
    roi = np.ones(mask.shape, bool)
    matrix = _rotation(math.pi / 2, 1, 2)
    img, lab, _ = spatial_patch(image, mask, roi, (0, 0, 0), (6, 16, 16), matrix, 0.0)
    k = 1 if np.allclose(np.rot90(mask, 1, axes=(1, 2)), lab) else 3
    assert np.array_equal(lab, np.rot90(mask, k, axes=(1, 2)))
    assert np.allclose(img[0], np.rot90(image[0], k, axes=(1, 2)), atol=1e-5)


def test_mirroring_and_rot90_move_image_and_label_together():
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 4, size=(6, 12, 12))
    image = mask[None].astype(np.float32) * 10  # the image *is* the label: alignment is visible
    aug = Augment3D(flip=(1.0, 1.0, 1.0), rot90=1.0)
    img, lab = mirror_and_rot90([image, mask], aug, rng)
    assert not np.array_equal(lab, mask)
    assert np.array_equal(img[0], lab * 10.0)


def test_a_patch_beyond_the_volume_is_padded_with_ignored_voxels():
    image = np.ones((1, 4, 10, 10), np.float32)
    mask = np.ones((4, 10, 10), np.uint8)
    img, lab, inside = spatial_patch(
        image, mask, np.ones(mask.shape, bool), (-2, 0, 0), (8, 10, 10), None, -3.0
    )
    assert inside.sum() == 4 * 100 and (img[0][~inside] == -3.0).all() and (lab[~inside] == 0).all()
