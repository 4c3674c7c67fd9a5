"""The ``nnunet`` augmentation preset: selected from the config, seeded, masks kept exact, and its
contrast / gamma transforms checked against a direct numpy computation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from medseg.config import load_config
from medseg.data import AugmentConfig, DataConfig
from medseg.data.transforms import TrainTransform, _centred_contrast, _gamma, nnunet_transforms


def _sample(seed=0, h=48, w=64):
    rng = np.random.default_rng(seed)
    image = rng.random((h, w, 3)).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    mask = (((yy - h / 2) ** 2 + (xx - w / 2) ** 2) < 150).astype(np.uint8)
    return image, mask, np.ones_like(mask)


def test_preset_is_selected_from_the_config_and_lists_nnunets_transforms():
    cfg = load_config(None, ["augment.preset=nnunet"])
    assert cfg.augment.preset == "nnunet"
    names = [type(t).__name__ for t in nnunet_transforms()]
    assert names == [
        "Affine",
        "Affine",
        "GaussNoise",
        "GaussianBlur",
        "MultiplicativeNoise",
        "CentredContrast",
        "Downscale",
        "InvertedGamma",
        "RetainedGamma",
        "HorizontalFlip",
        "VerticalFlip",
    ]
    probs = [t.p for t in nnunet_transforms()]
    assert probs == [0.2, 0.2, 0.1, 0.2, 0.15, 0.15, 0.25, 0.1, 0.3, 0.5, 0.5]
    scale = nnunet_transforms()[1]
    assert (scale.scale["x"], scale.scale["y"]) == ((0.7, 1.4), (0.7, 1.4))


def test_preset_is_seeded_keeps_masks_binary_and_images_in_range():
    tt = TrainTransform(DataConfig(format="synthetic", size=(48, 64)), AugmentConfig(preset="nnunet"))
    image, mask, roi = _sample()
    outs = [tt.augment(image, mask, roi, seed) for seed in range(40)]
    again = tt.augment(image, mask, roi, 3)
    assert all(np.array_equal(a, b) for a, b in zip(outs[3], again))
    assert sum(not np.array_equal(o[0], image) for o in outs) > 20  # most samples change
    for img, m, r in outs:
        assert img.shape == image.shape and 0.0 <= img.min() and img.max() <= 1.0
        assert set(np.unique(m)) <= {0, 1} and set(np.unique(r)) <= {0, 1}
    # geometric transforms move mask and roi together: outside the roi the mask is background
    assert all(not (m.astype(bool) & ~r.astype(bool)).any() for _, m, r in outs)


def test_centred_contrast_scales_about_the_mean_within_the_range():
    image, _, _ = _sample(1)
    rng = np.random.default_rng(5)
    factor_rng = np.random.default_rng(5)
    out = _centred_contrast(image, rng)
    for c in range(3):
        ch = image[..., c]
        # the same draw as the transform: which side of 1, then the factor
        side = factor_rng.random() < 0.5
        f = factor_rng.uniform(0.75, 1.0) if side else factor_rng.uniform(1.0, 1.25)
        expected = np.clip((ch - ch.mean()) * f + ch.mean(), ch.min(), ch.max())
        np.testing.assert_allclose(out[..., c], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_keeps_each_channels_mean_and_std(invert):
    image, _, _ = _sample(2)
    out = _gamma(image, np.random.default_rng(0), invert)
    assert not np.allclose(out, image)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), image.reshape(-1, 3).mean(0), atol=1e-5)
    np.testing.assert_allclose(out.reshape(-1, 3).std(0), image.reshape(-1, 3).std(0), rtol=1e-4)
    # a monotone map: the order of the pixel values is kept (reversed never)
    ch, o = image[..., 0].ravel(), out[..., 0].ravel()
    assert np.corrcoef(np.argsort(np.argsort(ch)), np.argsort(np.argsort(o)))[0, 1] > 0.999


def test_custom_preset_is_unchanged():
    assert AugmentConfig().preset == "custom"
    tt = TrainTransform(DataConfig(format="synthetic", size=(48, 64)), AugmentConfig())
    assert [type(t).__name__ for t in tt.aug.transforms] == [
        "HorizontalFlip",
        "Affine",
        "RandomBrightnessContrast",
        "RandomGamma",
    ]
    assert isinstance(tt.aug, A.Compose)
