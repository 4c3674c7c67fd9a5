"""The far-voxel paths of the surface-distance engine (KD-tree and feature transform) against an
independent brute force (every pair of voxels, numpy norms), in 2D and 3D, with anisotropic
spacing, single voxels, masks touching the array border and far-apart ("dissimilar") masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg import metrics as M
from medseg.metrics.surface_distance import boundary, far_distances


def brute_nearest(b: np.ndarray, q: np.ndarray, spacing) -> np.ndarray:
    """min over every True voxel of b of the physical distance to each query voxel (flat indices)."""
    s = np.asarray(spacing, dtype=np.float64)
    sites = np.argwhere(b).astype(np.float64) * s
    pts = np.stack(np.unravel_index(q, b.shape), axis=1).astype(np.float64) * s
    return np.array([np.linalg.norm(sites - p, axis=1).min() for p in pts])


def _cases():
    rng = np.random.default_rng(99)
    for i in range(12):
        shape = [(17, 23), (31, 12), (7, 9, 11), (12, 6, 10)][i % 4]
        b = rng.random(shape) < rng.uniform(0.002, 0.2)
        if i % 3 == 0:
            b = ndimage.binary_opening(rng.random(shape) < 0.5)
        b.flat[rng.integers(b.size)] = True
        if i % 4 == 1:
            b[(0,) * b.ndim] = True  # touches the array border
        q = rng.choice(b.size, size=int(rng.integers(1, 40)), replace=False)
        yield b, q, tuple(rng.uniform(0.3, 3.0, size=b.ndim))


@pytest.mark.parametrize("how", ["kdtree", "ft", "auto"])
def test_far_paths_match_brute_force(how):
    for b, q, sp in _cases():
        got = far_distances(b, q, np.asarray(sp), how)
        np.testing.assert_allclose(got, brute_nearest(b, q, sp), rtol=1e-12, atol=0)


def test_far_paths_agree_with_each_other():
    for b, q, sp in _cases():
        s = np.asarray(sp)
        np.testing.assert_allclose(far_distances(b, q, s, "ft"), far_distances(b, q, s, "kdtree"), rtol=1e-14)


def test_single_site_and_single_query_3d():
    b = np.zeros((4, 5, 6), bool)
    b[3, 4, 5] = True  # a corner voxel
    q = np.array([0])  # the opposite corner
    sp = np.array([2.5, 0.8, 0.7])
    want = np.sqrt((3 * 2.5) ** 2 + (4 * 0.8) ** 2 + (5 * 0.7) ** 2)
    for how in ("kdtree", "ft", "auto"):
        assert far_distances(b, q, sp, how)[0] == pytest.approx(want, rel=1e-15)
    with pytest.raises(ValueError, match="far-voxel"):
        far_distances(b, q, sp, "brute")  # type: ignore[arg-type]


def _blob(shape, centre, radius):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) < radius**2


@pytest.mark.parametrize(
    "shape, sp",
    [((80, 90), (0.7, 1.3)), ((20, 40, 44), (2.5, 0.8, 0.8))],
)
def test_dissimilar_masks_every_method_matches_brute_force(shape, sp):
    # two lobes each, one pair overlapping and one far apart, touching the border: many boundary
    # voxels go down the far-voxel path
    n = len(shape)
    p = _blob(shape, [s * 0.3 for s in shape], min(shape) * 0.25) | _blob(shape, [0] * n, min(shape) * 0.2)
    t = _blob(shape, [s * 0.35 for s in shape], min(shape) * 0.22) | _blob(
        shape, [s - 1 for s in shape], min(shape) * 0.3
    )
    e_p, e_t = boundary(p), boundary(t)
    ref_pt = brute_nearest(e_t, np.flatnonzero(e_p), sp)
    ref_tp = brute_nearest(e_p, np.flatnonzero(e_t), sp)
    assert M.dice(p, t) < 0.6
    for method in ("auto", "grid", "kdtree", "edt"):
        sd = M.surface_distances(p, t, sp, method=method)
        np.testing.assert_allclose(sd.pred_to_target, ref_pt, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sd.target_to_pred, ref_tp, rtol=1e-12, atol=1e-12)
