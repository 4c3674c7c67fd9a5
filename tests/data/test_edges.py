"""Edge targets and U-Net weight maps against brute-force references on tiny masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medseg.data.edges import class_balance_weights, edge_target, unet_weight_map
from medseg.errors import DataError


def three_objects() -> tuple[np.ndarray, list[np.ndarray]]:
    m = np.zeros((14, 15), dtype=np.int64)
    m[1:4, 1:5] = 1  # object A
    m[1:4, 7:10] = 1  # object B (same class, separate component)
    m[8:12, 3:7] = 2  # object C (class 2)
    objects = [np.zeros_like(m, bool) for _ in range(3)]
    objects[0][1:4, 1:5] = True
    objects[1][1:4, 7:10] = True
    objects[2][8:12, 3:7] = True
    return m, objects


def brute_weight_map(mask, objects, w0, sigma):
    """Eq. 2 of Ronneberger et al. 2015 by brute force: pixel-to-pixel distances to each object."""
    h, w = mask.shape
    n = mask.size
    classes, counts = np.unique(mask, return_counts=True)
    wc = {c: n / (len(classes) * k) for c, k in zip(classes, counts)}
    out = np.zeros(mask.shape)
    coords = [np.argwhere(o) for o in objects]
    for y, x in itertools.product(range(h), range(w)):
        out[y, x] = wc[mask[y, x]]
        if mask[y, x] != 0 or len(objects) < 2:
            continue
        d = sorted(np.sqrt(((c - [y, x]) ** 2).sum(1)).min() for c in coords)
        out[y, x] += w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2))
    return out


@pytest.mark.parametrize("w0,sigma", [(10.0, 5.0), (5.0, 2.0)])
def test_weight_map_matches_brute_force(w0, sigma):
    mask, objects = three_objects()
    got = unet_weight_map(mask, w0=w0, sigma=sigma)
    assert got.dtype == np.float32 and got.shape == mask.shape
    np.testing.assert_allclose(got, brute_weight_map(mask, objects, w0, sigma), rtol=1e-5, atol=w0 * 2e-6)


def test_weight_map_with_instances_separates_touching_objects():
    mask = np.zeros((9, 12), dtype=np.int64)
    mask[2:7, 1:11] = 1  # one connected foreground blob ...
    mask[2:7, 6] = 0  # ... split by a one-pixel gap of background
    inst = np.zeros_like(mask)
    inst[2:7, 1:6] = 1
    inst[2:7, 7:11] = 2
    got = unet_weight_map(mask, instances=inst)
    ref = brute_weight_map(mask, [inst == 1, inst == 2], 10.0, 5.0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
    # the gap between the two cells gets the largest border weight
    assert got[4, 6] == pytest.approx(got.max())
    assert got[4, 6] > class_balance_weights(mask)[4, 6] + 9.0


def test_weight_map_without_two_objects_is_class_balance():
    mask = np.zeros((6, 6), dtype=np.int64)
    mask[1:3, 1:3] = 1
    got = unet_weight_map(mask)
    np.testing.assert_allclose(got, class_balance_weights(mask))
    # balance: every class has the same total weight, mean weight 1
    assert got[mask == 1].sum() == pytest.approx(got[mask == 0].sum())
    assert got.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(unet_weight_map(np.zeros((4, 4), int)), 1.0)


def brute_edges(mask, width):
    h, w = mask.shape
    out = np.zeros(mask.shape, np.float32)
    for y, x in itertools.product(range(h), range(w)):
        ys = slice(max(y - width, 0), min(y + width + 1, h))
        xs = slice(max(x - width, 0), min(x + width + 1, w))
        out[y, x] = float(len(np.unique(mask[ys, xs])) > 1)
    return out


@pytest.mark.parametrize("width", [1, 2])
def test_edge_target_matches_brute_force(width):
    mask, _ = three_objects()
    got = edge_target(mask, width=width)
    assert got.dtype == np.float32 and set(np.unique(got)) <= {0.0, 1.0}
    np.testing.assert_array_equal(got, brute_edges(mask, width))
    assert edge_target(np.ones((5, 5), int)).sum() == 0  # no label change, no edge (border excluded)


def test_bad_masks_raise_clear_errors():
    with pytest.raises(DataError, match="integer labels"):
        edge_target(np.full((4, 4), 0.5))
    with pytest.raises(DataError, match="2D"):
        unet_weight_map(np.zeros(5, int))
    with pytest.raises(DataError, match="instances shape"):
        unet_weight_map(np.zeros((4, 4), int), instances=np.zeros((3, 4), int))
