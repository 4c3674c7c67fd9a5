"""The far-voxel paths of the surface-distance engine (KD-tree and feature transform) against an
independent brute force (every pair of voxels, numpy norms), in 2D and 3D, with anisotropic
spacing, single voxels, masks touching the array border and far-apart ("dissimilar") masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg import metrics as M
from medseg.metrics.surface_distance import _candidate_sites, _mark_boxes, boundary, far_distances


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


def test_mark_boxes_matches_a_loop():
    rng = np.random.default_rng(5)
    for shape in [(7,), (5, 9), (4, 6, 5)]:
        lo = np.stack([rng.integers(0, n, size=20) for n in shape], axis=1)
        hi = np.minimum(lo + rng.integers(0, 4, size=lo.shape), np.array(shape) - 1)
        want = np.zeros(shape, dtype=bool)
        for a, z in zip(lo, hi):
            want[tuple(slice(int(x), int(y) + 1) for x, y in zip(a, z))] = True
        np.testing.assert_array_equal(_mark_boxes(lo, hi, shape), want)


@pytest.mark.parametrize(
    "shape, sp",
    [((140, 140), (0.7, 1.9)), ((30, 40, 40), (2.5, 0.8, 0.8)), ((24, 30, 36), (1.0, 1.0, 1.0))],
)
def test_few_queries_many_sites_pruned_tree_matches_brute_force(shape, sp):
    # more than 4096 sites and 8x fewer queries: the KD-tree is built over the candidate sites only;
    # queries scattered (some on the array border, some far from every site) and one beside a site
    rng = np.random.default_rng(len(shape))
    b = rng.random(shape) < 0.35
    b[tuple(slice(0, n // 3) for n in shape)] = False  # an empty corner: far queries
    assert np.count_nonzero(b) > 4096
    q = rng.choice(b.size, size=40, replace=False)
    q[:3] = [0, b.size - 1, np.flatnonzero(~b.ravel())[0]]
    s = np.asarray(sp)
    sites = np.argwhere(b)
    queries = np.stack(np.unravel_index(q, shape), axis=1)
    keep = _candidate_sites(sites, queries, s, shape)
    assert 0 < keep.size < sites.shape[0]  # something was pruned
    ref = brute_nearest(b, q, sp)
    np.testing.assert_allclose(
        np.sqrt((((sites[keep][None] - queries[:, None]) * s) ** 2).sum(-1)).min(1), ref, rtol=1e-12
    )
    for how in ("kdtree", "auto"):
        np.testing.assert_allclose(far_distances(b, q, s, how), ref, rtol=1e-12, atol=0)


def test_pruned_tree_isolated_site_and_far_wall():
    # a wall of 4160 sites on one side and one isolated site: queries near the isolated site keep it
    # and drop most of the wall; a query halfway keeps both
    b = np.zeros((20, 64, 64), bool)
    b[0] = True
    b[1, :, 0] = True
    b[19, 63, 63] = True
    q = np.ravel_multi_index(([18, 19, 17], [60, 63, 55], [61, 62, 63]), b.shape)
    sp = np.array([2.5, 0.8, 0.8])
    sites = np.argwhere(b)
    keep = _candidate_sites(sites, np.stack(np.unravel_index(q, b.shape), axis=1), sp, b.shape)
    assert 4160 in keep and keep.size < 1000
    np.testing.assert_allclose(far_distances(b, q, sp, "kdtree"), brute_nearest(b, q, sp), rtol=1e-12)
    q = np.append(q, np.ravel_multi_index((10, 32, 32), b.shape))
    np.testing.assert_allclose(far_distances(b, q, sp, "kdtree"), brute_nearest(b, q, sp), rtol=1e-12)
