"""Surface metrics: hand-worked 2D/3D cases with anisotropic spacing, a brute-force pairwise
reference on random masks, and every empty-mask combination under every policy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from medseg import metrics as M
from medseg.metrics.surface import surface_distances

METHODS = ("auto", "grid", "kdtree", "edt")


# ------------------------------------------------------------ independent reference (brute force)


def ref_boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a face neighbour that is background or outside the array (loops)."""
    out = np.zeros(mask.shape, dtype=bool)
    for idx in np.ndindex(*mask.shape):
        if not mask[idx]:
            continue
        for ax in range(mask.ndim):
            for step in (-1, 1):
                j = list(idx)
                j[ax] += step
                if not 0 <= j[ax] < mask.shape[ax] or not mask[tuple(j)]:
                    out[idx] = True
    return out


def ref_directed(p: np.ndarray, t: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(spacing, dtype=np.float64)
    a = np.argwhere(ref_boundary(p)) * s
    b = np.argwhere(ref_boundary(t)) * s
    pair = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # every pair of boundary voxels
    return pair.min(axis=1), pair.min(axis=0)


def ref_percentile(d: np.ndarray, q: float) -> float:
    """Linear-interpolation percentile written out (numpy's default definition)."""
    x = np.sort(d)
    pos = q / 100 * (x.size - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, x.size - 1)
    return float(x[lo] + (pos - lo) * (x[hi] - x[lo]))


def ref_metrics(p, t, spacing, tol):
    a, b = ref_directed(p, t, spacing)
    both = np.concatenate([a, b])
    return {
        "hd": float(both.max()),
        "hd95_max": max(ref_percentile(a, 95), ref_percentile(b, 95)),
        "hd95_pooled": ref_percentile(both, 95),
        "hd50_max": max(ref_percentile(a, 50), ref_percentile(b, 50)),
        "assd_pooled": float(both.sum() / both.size),
        "assd_mean": 0.5 * (a.mean() + b.mean()),
        "nsd": float(((a <= tol).sum() + (b <= tol).sum()) / both.size),
    }


# ------------------------------------------------------------ hand-worked cases


def test_pixel_vs_line_2d():
    # target: a 5-pixel horizontal line, prediction: its left end.
    # pred->target: [0]; target->pred: [0, 1, 2, 3, 4]
    t = np.zeros((5, 5), bool)
    t[2, :] = True
    p = np.zeros((5, 5), bool)
    p[2, 0] = True
    assert M.hausdorff(p, t) == 4.0
    assert M.hausdorff(p, t, percentile=50) == 2.0  # max(median[0], median[0..4])
    assert M.hausdorff(p, t, percentile=50, combine="pooled") == 1.5  # median of [0,0,1,2,3,4]
    assert M.assd(p, t) == pytest.approx(10 / 6)  # pooled mean
    assert M.assd(p, t, combine="mean") == pytest.approx(1.0)  # (0 + 2) / 2
    assert M.nsd(p, t, tolerance=1) == pytest.approx(3 / 6)  # 1 of 1, 2 of 5 within 1
    assert M.hd95(p, t) == pytest.approx(max(0.0, 3 + 0.8 * 1))  # 95th pct of [0..4]: pos 3.8
    assert M.hd95(p, t, spacing=(1.0, 2.0)) == pytest.approx(7.6)  # columns 2 mm apart


def test_shifted_squares_anisotropic_2d():
    # 3x3 squares, prediction shifted one column right; rows 1 mm, columns 3 mm apart.
    # Both directions: four shared boundary pixels (0), one at 1 mm (row step), three at 3 mm.
    t = np.zeros((5, 6), bool)
    t[1:4, 1:4] = True
    p = np.zeros((5, 6), bool)
    p[1:4, 2:5] = True
    sp = (1.0, 3.0)
    sd = surface_distances(p, t, sp)
    assert sorted(sd.pred_to_target) == [0, 0, 0, 0, 1, 3, 3, 3]
    assert sorted(sd.target_to_pred) == [0, 0, 0, 0, 1, 3, 3, 3]
    assert M.hausdorff(p, t, sp) == 3.0
    assert M.hd95(p, t, sp) == 3.0
    assert M.hausdorff(p, t, sp, percentile=50) == 0.5
    assert M.assd(p, t, sp) == pytest.approx(2 * (1 + 3 * 3) / 16)
    assert M.nsd(p, t, 1.0, sp) == pytest.approx(10 / 16)
    assert M.nsd(p, t, 0.99, sp) == pytest.approx(8 / 16)
    assert M.dice(p, t) == pytest.approx(12 / 18)


def test_single_voxels_3d_anisotropic():
    t = np.zeros((3, 3, 3), bool)
    t[0, 0, 0] = True
    p = np.zeros((3, 3, 3), bool)
    p[2, 1, 0] = True
    sp = (2.5, 0.8, 0.8)
    d = math.sqrt((2 * 2.5) ** 2 + 0.8**2)
    for f in (M.hausdorff, M.hd95, M.assd):
        assert f(p, t, spacing=sp) == pytest.approx(d)
    assert M.nsd(p, t, 5.0, sp) == 0.0
    assert M.nsd(p, t, 5.1, sp) == 1.0


def test_slabs_3d_anisotropic():
    # slabs filling y and x: every voxel is on the boundary (the array edge counts as background).
    # target z in {1,2}, prediction z in {2,3}: half the boundary distances 0, half one z-step.
    t = np.zeros((5, 3, 4), bool)
    t[1:3] = True
    p = np.zeros((5, 3, 4), bool)
    p[2:4] = True
    sp = (2.5, 0.8, 0.7)
    assert M.hausdorff(p, t, sp) == pytest.approx(2.5)
    assert M.hd95(p, t, sp) == pytest.approx(2.5)
    assert M.assd(p, t, sp) == pytest.approx(1.25)
    assert M.nsd(p, t, 1.0, sp) == pytest.approx(0.5)
    # isotropic spacing by default
    assert M.hausdorff(p, t) == pytest.approx(1.0)


def test_identical_masks_are_zero():
    rng = np.random.default_rng(3)
    m = rng.random((6, 7, 8)) < 0.3
    assert M.surface_metrics(m, m, (1.0, 2.0, 3.0)) == {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}


# ------------------------------------------------------------ brute-force reference, random masks


def _random_cases():
    rng = np.random.default_rng(1234)
    shapes = [(11, 13), (16, 9), (5, 7, 6), (4, 9, 8)]
    for i in range(24):
        shape = shapes[i % len(shapes)]
        density = rng.uniform(0.05, 0.6)
        p = rng.random(shape) < density
        t = rng.random(shape) < rng.uniform(0.05, 0.6)
        if i % 3 == 0:  # smoother, blob-like masks
            from scipy import ndimage

            p = ndimage.binary_opening(p) | (rng.random(shape) < 0.02)
            t = ndimage.binary_closing(t)
        if not p.any():
            p.flat[0] = True
        if not t.any():
            t.flat[-1] = True
        spacing = tuple(rng.uniform(0.3, 3.0, size=len(shape)))
        yield p, t, spacing, float(rng.uniform(0.5, 3.0))


@pytest.mark.parametrize("method", METHODS)
def test_against_brute_force(method):
    for p, t, sp, tol in _random_cases():
        ref = ref_metrics(p, t, sp, tol)
        kw = {"tolerance": tol, "method": method}
        got = M.surface_metrics(p, t, sp, **kw)
        assert got["hd"] == pytest.approx(ref["hd"], rel=1e-12)
        assert got["hd95"] == pytest.approx(ref["hd95_max"], rel=1e-12)
        assert got["assd"] == pytest.approx(ref["assd_pooled"], rel=1e-12)
        assert got["nsd"] == pytest.approx(ref["nsd"], rel=1e-12)
        alt = M.surface_metrics(p, t, sp, hd_combine="pooled", assd_combine="mean", percentile=95, **kw)
        assert alt["hd95"] == pytest.approx(ref["hd95_pooled"], rel=1e-12)
        assert alt["assd"] == pytest.approx(ref["assd_mean"], rel=1e-12)
        assert M.surface_metrics(p, t, sp, percentile=50, **kw)["hd95"] == pytest.approx(
            ref["hd50_max"], rel=1e-12
        )


def test_far_apart_masks_use_the_exact_fallback():
    # partners farther than the neighbour-search radius are found by the KD-tree fallback
    p = np.zeros((30, 40), bool)
    t = np.zeros((30, 40), bool)
    p[1:4, 1:5] = True
    t[20:27, 30:38] = True
    t[2, 8] = True  # one near partner, most far away
    sp = (0.9, 1.7)
    ref = ref_metrics(p, t, sp, 2.0)
    for method in METHODS:
        got = M.surface_metrics(p, t, sp, tolerance=2.0, method=method)
        assert got["hd"] == pytest.approx(ref["hd"])
        assert got["assd"] == pytest.approx(ref["assd_pooled"])
        assert got["nsd"] == pytest.approx(ref["nsd"])


def test_directed_distances_match_reference_order_free():
    p, t, sp, _ = next(iter(_random_cases()))
    a, b = ref_directed(p, t, sp)
    sd = surface_distances(p, t, sp)
    np.testing.assert_allclose(np.sort(sd.pred_to_target), np.sort(a), rtol=1e-12)
    np.testing.assert_allclose(np.sort(sd.target_to_pred), np.sort(b), rtol=1e-12)


def test_torch_and_int_inputs():
    rng = np.random.default_rng(5)
    p, t = rng.random((8, 9)) < 0.4, rng.random((8, 9)) < 0.4
    ref = M.hd95(p, t, (1.0, 0.5))
    assert M.hd95(torch.from_numpy(p), torch.from_numpy(t), (1.0, 0.5)) == pytest.approx(ref)
    assert M.hd95(p.astype(np.int64), t.astype(np.uint8), torch.tensor([1.0, 0.5])) == pytest.approx(ref)
    assert isinstance(M.hd95(p, t), float)


def test_bad_spacing_and_arguments():
    m = np.ones((3, 3), bool)
    with pytest.raises(ValueError, match="spacing has 3 values"):
        M.hd95(m, m, (1, 1, 1))
    with pytest.raises(ValueError, match="positive"):
        M.hd95(m, m, (1, 0))
    with pytest.raises(ValueError, match="percentile"):
        M.hausdorff(m, m, percentile=120)
    with pytest.raises(ValueError, match="hd_combine"):
        M.hd95(m, m, combine="mean")
    with pytest.raises(ValueError, match="method"):
        M.surface_metrics(m, ~m | m, method="brute")


def test_only_computes_the_asked_metrics_with_the_same_values():
    rng = np.random.default_rng(3)
    p, t = rng.random((20, 24)) > 0.6, rng.random((20, 24)) > 0.5
    full = M.surface_metrics(p, t, (0.7, 1.3), tolerance=1.5)
    for keys in (("hd",), ("hd95",), ("assd",), ("nsd",), ("hd95", "nsd")):
        part = M.surface_metrics(p, t, (0.7, 1.3), tolerance=1.5, only=keys)
        assert list(part) == list(keys)
        assert part == {k: full[k] for k in keys}
    assert M.hd95(p, t, (0.7, 1.3)) == full["hd95"] and M.assd(p, t, (0.7, 1.3)) == full["assd"]
    for empty_pred in (np.zeros_like(p), p):
        only = M.surface_metrics(empty_pred, np.zeros_like(t), only=("assd",), empty="max")
        assert list(only) == ["assd"]
    with pytest.raises(ValueError, match="unknown surface metric"):
        M.surface_metrics(p, t, only=("dice",))


# ------------------------------------------------------------ empty masks, every combination


def _mask(kind: str) -> np.ndarray:
    m = np.zeros((6, 8), bool)
    if kind == "full":
        m[2:4, 3:6] = True
    return m


SP = (0.5, 2.0)
DIAG = math.sqrt((6 * 0.5) ** 2 + (8 * 2.0) ** 2)


@pytest.mark.parametrize(
    "pred_kind, target_kind, policy, dice, dist, nsd_v",
    [
        ("empty", "empty", "nan", 1.0, 0.0, 1.0),
        ("empty", "empty", "max", 1.0, 0.0, 1.0),
        ("empty", "empty", "legacy", 0.0, 0.0, 0.0),
        ("empty", "full", "nan", 0.0, math.nan, 0.0),
        ("empty", "full", "max", 0.0, DIAG, 0.0),
        ("empty", "full", "max:7.5", 0.0, 7.5, 0.0),
        ("empty", "full", "legacy", 0.0, 0.0, 0.0),
        ("full", "empty", "nan", 0.0, math.nan, 0.0),
        ("full", "empty", "max", 0.0, DIAG, 0.0),
        ("full", "empty", 7.5, 0.0, 7.5, 0.0),
        ("full", "empty", "legacy", 1.0, 0.0, 1.0),
    ],
)
def test_empty_combinations(pred_kind, target_kind, policy, dice, dist, nsd_v):
    p, t = _mask(pred_kind), _mask(target_kind)
    assert M.dice(p, t, empty=policy) == dice
    vals = M.surface_metrics(p, t, SP, empty=policy)
    for key in ("hd", "hd95", "assd"):
        v = vals[key]
        assert not math.isinf(v)
        if math.isnan(dist):
            assert math.isnan(v)
        else:
            assert v == pytest.approx(dist)
    assert vals["nsd"] == nsd_v
    assert M.nsd(p, t, 1.0, SP, empty=policy) == nsd_v
    assert M.hausdorff(p, t, SP, empty=policy) == pytest.approx(vals["hd"], nan_ok=True)
    # every method agrees on empty handling
    for method in METHODS:
        again = M.surface_metrics(p, t, SP, empty=policy, method=method)
        assert again == pytest.approx(vals, nan_ok=True)


def test_empty_never_inf_or_crash_3d():
    for a, b in itertools.product([False, True], repeat=2):
        p = np.zeros((3, 4, 5), bool)
        t = np.zeros((3, 4, 5), bool)
        p[1, 1, 1] = a
        t[1, 2, 3] = b
        for policy in ("nan", "max", "legacy"):
            vals = M.surface_metrics(p, t, (3.0, 1.0, 1.0), empty=policy)
            assert not any(math.isinf(v) for v in vals.values())


# ------------------------------------------------------------ peers (only where installed)


def test_matches_medpy_when_installed():
    binary = pytest.importorskip("medpy.metric.binary")
    for p, t, sp, _ in itertools.islice(_random_cases(), 8):
        assert M.hd95(p, t, sp, combine="pooled") == pytest.approx(
            binary.hd95(p, t, voxelspacing=sp), rel=1e-9
        )
        assert M.assd(p, t, sp) == pytest.approx(binary.assd(p, t, voxelspacing=sp), rel=1e-9)


def test_large_surface_with_far_outliers_matches_edt():
    # > 4096 boundary voxels and a few far outliers: exercises the restricted KD-tree fallback
    zz, yy, xx = np.mgrid[:58, :60, :62]
    t = (zz - 29) ** 2 + (yy - 30) ** 2 + (xx - 31) ** 2 < 26**2
    p = (zz - 29) ** 2 + (yy - 31) ** 2 + (xx - 30) ** 2 < 25**2
    p[1:3, 1:3, 1:4] = True  # a false-positive blob in a corner
    t[56, 58:60, 59:62] = True  # and a stray target voxel group far from the prediction
    sp = (2.0, 0.9, 0.8)
    ref = M.surface_distances(p, t, sp, method="edt")
    got = M.surface_distances(p, t, sp)
    assert got.pred_to_target.size > 4096
    np.testing.assert_allclose(got.pred_to_target, ref.pred_to_target, rtol=1e-12)
    np.testing.assert_allclose(got.target_to_pred, ref.target_to_pred, rtol=1e-12)
