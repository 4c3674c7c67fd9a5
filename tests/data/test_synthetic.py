"""Demo phantoms: deterministic, well-formed, and carrying a learnable signal."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medseg.data import DataConfig, build_data, write_synthetic_dataset
from medseg.data.synthetic import generate_dataset, generate_phantom


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_deterministic_by_seed(kind):
    a_img, a_m, _ = generate_dataset(kind, 4, 48, seed=5)
    b_img, b_m, _ = generate_dataset(kind, 6, 48, seed=5)
    for k in range(4):  # image k does not depend on n
        assert np.array_equal(a_img[k], b_img[k]) and np.array_equal(a_m[k], b_m[k])
    c_img, _, _ = generate_dataset(kind, 4, 48, seed=6)
    assert not any(np.array_equal(a_img[k], c_img[k]) for k in range(4))
    assert not np.array_equal(a_img[0], a_img[1])


def test_binary_phantoms_have_darker_lesions():
    imgs, masks, names = generate_dataset("binary", 24, 64, seed=0)
    assert names == ["background", "lesion"]
    for img, m in zip(imgs, masks):
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and set(np.unique(m)) <= {0, 1}
        frac = m.mean()
        assert 0.01 < frac < 0.5
        grey = img.mean(-1)
        assert grey[m == 1].mean() < grey[m == 0].mean() - 30


def test_multiclass_phantoms_have_distinct_organs():
    imgs, masks, names = generate_dataset("multiclass", 24, 64, seed=0)
    assert names == ["background", "organ", "ring", "core"]
    for img, m in zip(imgs, masks):
        assert img.shape == (64, 64, 1)
        assert set(np.unique(m)) == {0, 1, 2, 3}
        mean = [np.median(img[..., 0][m == k]) for k in range(4)]
        assert mean[3] > mean[1] + 20 and mean[1] > mean[2] + 40  # core > organ > ring


def test_a_pixel_classifier_already_beats_chance():
    """A one-feature threshold fitted on training images segments held-out lesions with Dice > 0.6,
    so a network has a strong signal to learn (the U-Net benchmark is in docs/bench/data.md)."""
    imgs, masks, _ = generate_dataset("binary", 30, 64, seed=1)
    grey = [i.mean(-1) for i in imgs]
    feats = np.concatenate([g.ravel() for g in grey[:20]])
    labels = np.concatenate([m.ravel() for m in masks[:20]])
    ts = np.linspace(0, 255, 128)
    best = max(ts, key=lambda t: ((feats < t) == labels).mean())
    dices = []
    for g, m in zip(grey[20:], masks[20:]):
        p = g < best
        dices.append(2 * (p & (m == 1)).sum() / (p.sum() + m.sum()))
    assert np.mean(dices) > 0.6


def test_write_synthetic_dataset_round_trip(tmp_path):
    out = write_synthetic_dataset(tmp_path / "demo", "binary", n=5, size=32, seed=2)
    m = np.asarray(Image.open(out / "masks" / "case_003.png"))
    assert set(np.unique(m)) <= {0, 255}
    img, ref = generate_phantom("binary", 32, 2, 3)
    assert np.array_equal(np.asarray(Image.open(out / "images" / "case_003.png")), img)
    assert np.array_equal(m == 255, ref == 1)
    data = build_data(DataConfig(root=out, size=(32, 32)), seed=0)
    assert data.class_names == ["background", "lesion"] and data.num_classes == 2
    out = write_synthetic_dataset(tmp_path / "mc", "multiclass", n=4, size=32, seed=2)
    data = build_data(DataConfig(root=out, size=(32, 32)), seed=0)
    assert data.num_classes == 4 and data.in_channels == 1 and data.class_names[-1] == "core"
