"""Random patches with nnU-Net foreground oversampling: shapes, padding, forced foreground,
seeding."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.patches import PatchSampler, class_locations, crop_padded, forced_count


def _volume(shape=(20, 30, 25), channels=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(channels, *shape)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[3:5, 20:22, 2:4] = 1  # two small structures in a large background
    mask[shape[0] * 3 // 4, 5, shape[2] * 4 // 5] = 2
    return image, mask


@pytest.mark.parametrize(
    "batch,expected", [(1, [False]), (2, [False, True]), (3, [False, False, True]), (4, [False] * 3 + [True])]
)
def test_the_last_third_of_each_batch_is_forced(batch, expected):
    sampler = PatchSampler((8, 8, 8), batch)
    assert [sampler.is_forced(i) for i in range(batch)] == expected
    assert [sampler.is_forced(batch * 5 + i) for i in range(batch)] == expected  # every batch alike
    assert forced_count(batch) == sum(expected)
    assert forced_count(6) == 2 and forced_count(12) == 4 and forced_count(12, 0.0) == 0


def test_shapes_2d_and_3d_and_patch_inside_a_large_image():
    image, mask = _volume()
    sampler = PatchSampler((8, 12, 10), 2, seed=3)
    for i in range(10):
        p = sampler.sample(image, mask, i)
        assert p.image.shape == (2, 8, 12, 10) and p.image.dtype == np.float32
        assert p.mask.shape == p.roi.shape == (8, 12, 10) and p.mask.dtype == np.int64
        assert p.roi.all()  # the volume is larger than the patch: never padded
        box = tuple(slice(c, c + s) for c, s in zip(p.corner, (8, 12, 10)))
        assert np.array_equal(p.image, image[(slice(None), *box)])
        assert np.array_equal(p.mask, mask[box])
    image2d = image[:, 0]
    p2 = PatchSampler((16, 16), 4).sample(image2d, mask[0], 3)
    assert p2.image.shape == (2, 16, 16) and p2.mask.shape == (16, 16)


def test_a_volume_smaller_than_the_patch_is_padded_around_the_image():
    image, mask = _volume(shape=(5, 30, 7))
    sampler = PatchSampler((9, 8, 12), 3, pad_value=-7.0)
    for i in range(12):
        p = sampler.sample(image, mask, i)
        # axis 0: shortfall 4 -> corner exactly -2; axis 2: shortfall 5 -> corner -2
        assert p.corner[0] == -2 and p.corner[2] == -2 and 0 <= p.corner[1] <= 22
        assert p.roi.sum() == 5 * 8 * 7  # the whole image extent along the short axes
        inside = (slice(2, 7), slice(None), slice(2, 9))
        assert p.roi[inside].all()
        window = image[:, :, p.corner[1] : p.corner[1] + 8, :]
        assert np.array_equal(p.image[(slice(None), *inside)], window)
        assert np.all(p.image[:, ~p.roi] == -7.0) and np.all(p.mask[~p.roi] == 0)


def test_crop_padded_matches_numpy_pad():
    a = np.arange(2 * 4 * 5).reshape(2, 4, 5)
    padded = np.pad(a, ((0, 0), (6, 6), (6, 6)), constant_values=-1)
    for corner in [(-3, -2), (2, 3), (-1, 4), (0, 0), (-6, -5)]:
        ref = padded[:, corner[0] + 6 : corner[0] + 6 + 6, corner[1] + 6 : corner[1] + 6 + 5]
        assert np.array_equal(crop_padded(a, corner, (6, 5), fill=-1), ref)
    assert np.all(crop_padded(a, (10, 0), (2, 2), fill=9) == 9)


def test_forced_samples_contain_foreground_and_random_ones_rarely_do():
    image, mask = _volume(shape=(40, 48, 44))
    sampler = PatchSampler((8, 8, 8), 3, seed=1)
    forced, random = [], []
    for epoch in range(3):
        for i in range(60):
            p = sampler.sample(image, mask, i, epoch=epoch)
            (forced if sampler.is_forced(i) else random).append(p)
    assert all(p.forced and (p.mask > 0).any() for p in forced)
    assert not any(p.forced for p in random)
    assert np.mean([(p.mask > 0).any() for p in random]) < 0.2
    classes = {int(c) for p in forced for c in np.unique(p.mask) if c > 0}
    assert classes == {1, 2}  # a random present class, not only the largest one
    hits = [p for p in forced if 2 in p.mask]
    assert len(hits) > 10  # the single voxel of class 2 is found about half the time
    centre = [p for p in hits if p.mask[4, 4, 4] == 2]
    assert len(centre) == len(hits)  # centred on the voxel (away from the borders)


def test_foreground_near_the_border_stays_inside_the_patch():
    image = np.zeros((1, 10, 10, 10), np.float32)
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[0, 9, 0] = 1
    sampler = PatchSampler((4, 4, 4), 1, oversample=1.0)
    for i in range(5):
        p = sampler.sample(image, mask, i)
        assert p.corner == (0, 6, 0) and p.mask[0, 3, 0] == 1


def test_roi_and_unlabelled_cases():
    image, mask = _volume()
    roi = np.ones(mask.shape, bool)
    roi[:10] = False  # class 1 lies outside the ROI
    assert sorted(class_locations(mask, roi)) == [2]
    sampler = PatchSampler((6, 6, 6), 1, seed=2, oversample=1.0)
    for i in range(5):
        p = sampler.sample(image, mask, i, roi=roi)
        assert p.forced and p.mask[3, 3, 3] == 2
    empty = sampler.sample(image, None, 0)
    assert not empty.forced and not empty.mask.any()
    background = sampler.sample(image, np.zeros_like(mask), 0)
    assert not background.forced


def test_seeded_by_seed_epoch_and_index():
    image, mask = _volume()
    a = PatchSampler((8, 8, 8), 2, seed=5)
    b = PatchSampler((8, 8, 8), 2, seed=5)
    for i in range(6):
        pa, pb = a.sample(image, mask, i, epoch=2), b.sample(image, mask, i, epoch=2)
        assert pa.corner == pb.corner and np.array_equal(pa.image, pb.image)
    corners = {a.sample(image, mask, 0, epoch=e).corner for e in range(8)}
    assert len(corners) > 4  # the epoch changes the draw
    other = PatchSampler((8, 8, 8), 2, seed=6)
    assert [other.sample(image, mask, i).corner for i in range(6)] != [
        a.sample(image, mask, i).corner for i in range(6)
    ]


def test_batch_stacks_and_forces_the_last_third():
    image, mask = _volume()
    sampler = PatchSampler((8, 8, 8), 6, seed=0)
    out = sampler.batch([(image, mask)] * 6, batch_index=3, epoch=1)
    assert out["image"].shape == (6, 2, 8, 8, 8) and out["mask"].shape == (6, 8, 8, 8)
    assert out["forced"].tolist() == [False] * 4 + [True] * 2
    assert all((out["mask"][k] > 0).any() for k in (4, 5))
    again = sampler.sample(image, mask, 3 * 6 + 4, epoch=1)
    assert np.array_equal(again.image, out["image"][4])
    with pytest.raises(ValueError, match="takes 6 cases"):
        sampler.batch([(image, mask)] * 5, 0)


def test_bad_arguments():
    image, mask = _volume()
    with pytest.raises(ValueError, match="positive"):
        PatchSampler((8, 0, 8), 2)
    with pytest.raises(ValueError, match="3-D patch"):
        PatchSampler((8, 8, 8), 2).sample(image[0], mask, 0)
    with pytest.raises(ValueError, match="mask shape"):
        PatchSampler((8, 8, 8), 2).sample(image, mask[:5], 0)
