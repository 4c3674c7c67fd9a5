"""Augmentation: determinism under a seed, image/mask/roi alignment, size policies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation
from torch.utils.data import DataLoader

from medseg.data import AugmentConfig, DataConfig, build_data
from medseg.data.transforms import model_input_size, sample_seed, to_model_space

ALL_SPATIAL = AugmentConfig(
    hflip=0.5,
    vflip=0.5,
    rot90=0.5,
    affine=1.0,
    rotate_limit=30,
    scale=(0.7, 1.3),
    elastic=1.0,
    elastic_alpha=20,
    elastic_sigma=4,
    brightness_contrast=0.0,
    gamma=0.0,
)


def _shapes_dataset(root, n=4, h=48, w=40, seed=0):
    """Images whose grey value is 255 exactly on the mask (and 0 elsewhere); roi = same shape."""
    rng = np.random.default_rng(seed)
    for d in ("images", "masks", "roi"):
        (root / d).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:h, :w]
    for k in range(n):
        cy, cx, r = rng.uniform(12, h - 12), rng.uniform(12, w - 12), rng.uniform(5, 10)
        m = (((yy - cy) ** 2 + ((xx - cx) * 1.5) ** 2) < r * r) | ((yy < 6) & (xx < 10))
        m = m.astype(np.uint8) * 255
        Image.fromarray(m).save(root / "images" / f"s{k}.png")
        Image.fromarray(m).save(root / "masks" / f"s{k}.png")
        Image.fromarray(m).save(root / "roi" / f"s{k}.png")


def _cfg(root, **kw):
    base = {
        "root": root,
        "size": (32, 32),
        "normalize": "none",
        "roi_dir": None,
        "split": {"val_fraction": 0.0},
    }
    base.update(kw)
    return DataConfig(**base)


def test_same_seed_same_samples_and_epochs_differ(tmp_path):
    _shapes_dataset(tmp_path)
    aug = AugmentConfig(vflip=0.5, rot90=0.5, affine=1.0, elastic=0.5, gamma=0.5, noise=0.5)
    a = build_data(_cfg(tmp_path), aug, seed=7).train
    b = build_data(_cfg(tmp_path), aug, seed=7).train
    for i in (2, 0, 3):  # access order does not matter
        sa, sb = a[i], b[i]
        assert torch.equal(sa["image"], sb["image"]) and torch.equal(sa["mask"], sb["mask"])
        assert torch.equal(sa["roi"], sb["roi"])
    first = [a[i]["image"] for i in range(4)]
    a.set_epoch(1)
    assert any(not torch.equal(first[i], a[i]["image"]) for i in range(4))
    a.set_epoch(0)
    assert all(torch.equal(first[i], a[i]["image"]) for i in range(4))  # resuming at epoch 0 replays it
    c = build_data(_cfg(tmp_path), aug, seed=8).train
    assert any(not torch.equal(first[i], c[i]["image"]) for i in range(4))


def test_independent_of_worker_count_and_persistent_workers_follow_the_epoch(tmp_path):
    _shapes_dataset(tmp_path)
    ds = build_data(_cfg(tmp_path), AugmentConfig(affine=1.0, elastic=0.5), seed=3).train
    ref = {}
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        ref[epoch] = [b["image"] for b in DataLoader(ds, batch_size=2, num_workers=0)]
    assert not torch.equal(ref[1][0], ref[2][0])
    loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        got = [b["image"] for b in loader]
        assert len(got) == len(ref[epoch]) and all(torch.equal(x, y) for x, y in zip(got, ref[epoch]))


@pytest.mark.parametrize("policy", ["resize", "pad", "crop"])
def test_image_mask_roi_stay_aligned(tmp_path, policy):
    _shapes_dataset(tmp_path)
    cfg = _cfg(tmp_path, resize_policy=policy, roi_dir="roi", size=(32, 24))
    ds = build_data(cfg, ALL_SPATIAL, seed=0).train
    changed = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            x, m, roi = s["image"][0].numpy(), s["mask"].numpy(), s["roi"].numpy()
            assert x.shape == m.shape == roi.shape == (32, 24)
            # chained interpolations (resize, affine, elastic) may move an edge by up to one pixel
            # between the linear image and the nearest-neighbour mask; anything more is a misalignment
            fg, bg = binary_dilation(m == 1), binary_dilation(m == 0)
            assert fg[x > 0.8].all() and bg[x < 0.2].all()
            inter, union = ((x > 0.5) & (m == 1)).sum(), ((x > 0.5) | (m == 1)).sum()
            assert union < 50 or inter / union > 0.6
            # roi was the same shape: inside roi the mask is foreground; outside it is background
            np.testing.assert_array_equal(m[roi], 1)
            changed += int(m.sum() > 0)
    assert changed > 0


@pytest.mark.parametrize(
    "aug",
    [
        # intensity jitter off: it moves interpolated edge values across the margin tested here
        AugmentConfig(affine=1.0, rotate_limit=40, scale=(0.7, 1.3), brightness_contrast=0.0, gamma=0.0),
        AugmentConfig(
            affine=0.0, elastic=1.0, elastic_alpha=20, elastic_sigma=4, brightness_contrast=0.0, gamma=0.0
        ),
    ],
)
def test_single_warp_is_exact_away_from_edges(tmp_path, aug):
    _shapes_dataset(tmp_path)
    ds = build_data(_cfg(tmp_path, resize_policy="crop", roi_dir="roi"), aug, seed=0).train
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            x, m = s["image"][0].numpy(), s["mask"].numpy()
            sure = np.abs(x - 0.5) > 0.3
            np.testing.assert_array_equal((x > 0.5)[sure], m[sure] == 1)
            np.testing.assert_array_equal(s["roi"].numpy(), m == 1)


def test_intensity_augmentation_changes_only_the_image(tmp_path):
    _shapes_dataset(tmp_path)
    cfg = _cfg(tmp_path)
    plain = build_data(cfg, AugmentConfig(enabled=False), seed=0).train
    jit = build_data(
        cfg,
        AugmentConfig(
            hflip=0, affine=0, brightness_contrast=1.0, brightness=0.3, contrast=0.3, gamma=1.0, noise=1.0
        ),
        seed=0,
    ).train
    for i in range(len(plain)):
        a, b = plain[i], jit[i]
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["roi"], b["roi"])
        assert not torch.equal(a["image"], b["image"])


def test_resize_pad_crop_geometry(tmp_path):
    rng = np.random.default_rng(0)
    for d in ("images", "masks"):
        (tmp_path / d).mkdir()
    img = rng.integers(0, 256, (30, 60), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((30, 60), np.uint8)).save(tmp_path / "masks" / "a.png")
    noaug = AugmentConfig(enabled=False)
    # pad (letterbox): 30x60 -> 16x32 image centred in 32x32, padding rows are outside the roi
    s = build_data(_cfg(tmp_path, resize_policy="pad"), noaug, seed=0).train[0]
    assert s["roi"][8:24].all() and not s["roi"][:8].any() and not s["roi"][24:].any()
    # crop: an exact window of the native image
    s = build_data(_cfg(tmp_path, resize_policy="crop", size=(16, 20)), noaug, seed=0).train[0]
    x = np.rint(s["image"][0].numpy() * 255).astype(np.uint8)
    hits = [
        (y, xx) for y in range(15) for xx in range(41) if np.array_equal(img[y : y + 16, xx : xx + 20], x)
    ]
    assert len(hits) == 1
    # crop of a smaller image pads it and marks the padding outside the roi
    s = build_data(_cfg(tmp_path, resize_policy="crop", size=(40, 60)), noaug, seed=0).train[0]
    assert s["roi"].sum() == 30 * 60
    # resize
    s = build_data(_cfg(tmp_path, resize_policy="resize", size=(15, 30)), noaug, seed=0).train[0]
    ref = np.asarray(Image.fromarray(img).resize((30, 15), Image.BOX)) / 255
    assert np.abs(s["image"][0].numpy() - ref).mean() < 0.02


def test_to_model_space_matches_training_scale():
    x = torch.rand(2, 3, 60, 90)
    cfg = DataConfig(root="x", size=(30, 30), resize_policy="resize")
    y, undo = to_model_space(x, cfg)
    assert y.shape == (2, 3, 30, 30) and undo(torch.rand(2, 4, 30, 30)).shape == (2, 4, 60, 90)
    cfg = cfg.model_copy(update={"resize_policy": "pad"})
    assert model_input_size(60, 90, cfg) == (20, 30)
    assert to_model_space(x, cfg)[0].shape == (2, 3, 20, 30)
    cfg = cfg.model_copy(update={"resize_policy": "crop"})
    y, undo = to_model_space(x, cfg)
    assert y is x and undo(x) is x


def test_sample_seed_spreads():
    seeds = {sample_seed(0, e, i) for e in range(20) for i in range(50)}
    assert len(seeds) == 1000
    assert sample_seed(1, 0, 0) != sample_seed(0, 0, 0)
