"""Dense CRF: the permutohedral filter and mean field against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.inference.crf import PermutohedralLattice, dense_crf


def _image(h=20, w=24, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (40, 60, 80)
    img[:, w // 2 :] = (200, 170, 120)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), int)
    truth[:, w // 2 :] = 1
    return img, truth


def _features(img, sxy, srgb):
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    pos = np.stack([xx.ravel(), yy.ravel()], 1) / sxy
    if srgb is None:
        return pos
    return np.concatenate([pos, img.reshape(h * w, -1) / srgb], 1)


def _normalised_exact(f, v):
    k = np.exp(-0.5 * ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
    n = 1 / np.sqrt(k.sum(1, keepdims=True))
    return n * (k @ (n * v))


@pytest.mark.parametrize("sxy,srgb", [(3.0, None), (8.0, 13.0)])
def test_lattice_filter_approximates_the_gaussian(sxy, srgb):
    img, _ = _image()
    f = _features(img, sxy, srgb)
    v = np.random.default_rng(1).uniform(size=(len(f), 2))
    lat = PermutohedralLattice(f)
    n = 1 / np.sqrt(lat.filter(np.ones((len(f), 1))))
    approx = n * lat.filter(n * v)
    exact = _normalised_exact(f, v)
    assert np.abs(approx - exact).max() / np.abs(exact).max() < 0.15  # the lattice is an approximation
    assert np.corrcoef(approx.ravel(), exact.ravel())[0, 1] > 0.98


def _mean_field_exact(img, p, iters, sxy_g, w_g, sxy_b, srgb, w_b):
    """Krähenbühl & Koltun 2011, Algorithm 1, with exact (N x N) normalised Gaussian kernels."""
    k, h, w = p.shape
    unary = -np.log(np.clip(p, 1e-5, 1)).reshape(k, -1).T
    kernels = [(w_g, _features(img, sxy_g, None)), (w_b, _features(img, sxy_b, srgb))]
    mats = []
    for weight, f in kernels:
        km = np.exp(-0.5 * ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
        n = 1 / np.sqrt(km.sum(1))
        mats.append(weight * n[:, None] * km * n[None, :])
    q = np.exp(-unary)
    q /= q.sum(1, keepdims=True)
    for _ in range(iters):
        e = -unary + sum(m @ q for m in mats)
        q = np.exp(e - e.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
    return q.T.reshape(k, h, w)


def test_mean_field_matches_exact_reference():
    img, truth = _image()
    rng = np.random.default_rng(2)
    p1 = np.clip(0.5 + 0.25 * (2 * truth - 1) + rng.normal(0, 0.3, truth.shape), 0.02, 0.98)
    p = np.stack([1 - p1, p1])
    params = dict(
        sxy_gaussian=3.0, compat_gaussian=3.0, sxy_bilateral=8.0, srgb_bilateral=13.0, compat_bilateral=5.0
    )
    ours = dense_crf(img, p, 5, **params)
    ref = _mean_field_exact(img, p, 5, 3.0, 3.0, 8.0, 13.0, 5.0)
    assert np.abs(ours - ref).mean() < 0.02
    assert ((ours[1] > 0.5) == (ref[1] > 0.5)).mean() > 0.98


def test_crf_cleans_noisy_predictions_along_image_edges():
    img, truth = _image(32, 40)
    rng = np.random.default_rng(3)
    p1 = np.clip(0.5 + 0.15 * (2 * truth - 1) + rng.normal(0, 0.25, truth.shape), 0.01, 0.99)
    p = np.stack([1 - p1, p1]).astype(np.float32)
    before = ((p1 > 0.5) == truth).mean()
    q = dense_crf(img, p, 5, sxy_bilateral=10.0)
    after = ((q[1] > 0.5) == truth).mean()
    assert before < 0.95 and after > 0.99
    assert np.allclose(q.sum(0), 1, atol=1e-5) and q.dtype == np.float32


def test_without_pairwise_terms_the_input_comes_back():
    img, truth = _image()
    p = np.random.default_rng(4).dirichlet([1, 1, 1], size=truth.shape).transpose(2, 0, 1)
    q = dense_crf(img, p, 3, compat_gaussian=0, compat_bilateral=0)
    assert np.allclose(q, p, atol=1e-5)


def test_binary_and_torch_inputs():
    img, truth = _image()
    p1 = np.where(truth == 1, 0.7, 0.3)[None].astype(np.float32)
    q_bin = dense_crf(torch.from_numpy(img), torch.from_numpy(p1), 2)
    q_two = dense_crf(img, np.concatenate([1 - p1, p1]), 2)
    assert isinstance(q_bin, torch.Tensor) and q_bin.shape == (1, 20, 24)
    assert np.allclose(q_bin.numpy()[0], q_two[1], atol=1e-5)
    gray = dense_crf(img[..., 0], p1, 1)  # grey image [H, W]
    assert gray.shape == (1, 20, 24)


def test_bad_shapes_are_named():
    img, truth = _image()
    with pytest.raises(ValueError, match="differs"):
        dense_crf(img, np.ones((2, 10, 10)) / 2)
    with pytest.raises(ValueError, match=r"\[K, H, W\]"):
        dense_crf(img, np.ones((20, 24)))
