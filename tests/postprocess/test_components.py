"""Connected-component operations against a plain breadth-first flood fill and hand-made cases."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest

from medseg.postprocess import (
    component_sizes,
    drop_small_components,
    keep_largest_foreground,
    keep_largest_per_class,
    largest_component,
    remove_small_per_class,
)


def _flood_fill_components(mask: np.ndarray, connectivity: int) -> list[set[tuple[int, ...]]]:
    """Reference: components by BFS; neighbours differ by at most 1 on at most ``connectivity`` axes."""
    offsets = [
        d
        for d in itertools.product((-1, 0, 1), repeat=mask.ndim)
        if any(d) and sum(abs(x) for x in d) <= connectivity
    ]
    seen: set[tuple[int, ...]] = set()
    comps = []
    for start in zip(*np.nonzero(mask)):
        start = tuple(int(v) for v in start)
        if start in seen:
            continue
        comp, queue = {start}, deque([start])
        seen.add(start)
        while queue:
            v = queue.popleft()
            for d in offsets:
                w = tuple(a + b for a, b in zip(v, d))
                if all(0 <= w[i] < mask.shape[i] for i in range(mask.ndim)) and mask[w] and w not in seen:
                    seen.add(w)
                    comp.add(w)
                    queue.append(w)
        comps.append(comp)
    return comps


@pytest.mark.parametrize("shape", [(17, 19), (7, 9, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_match_a_flood_fill(shape, seed):
    mask = np.random.default_rng(seed).random(shape) < 0.3
    for conn in range(1, len(shape) + 1):
        comps = _flood_fill_components(mask, conn)
        _, sizes = component_sizes(mask, conn)
        assert sorted(sizes.tolist()) == sorted(len(c) for c in comps)
        big = max(len(c) for c in comps)
        kept = largest_component(mask, conn)
        assert kept.sum() == big and any(set(zip(*np.nonzero(kept))) == c for c in comps)
        dropped = drop_small_components(mask, 3, conn)
        assert dropped.sum() == sum(len(c) for c in comps if len(c) >= 3)


def test_connectivity_decides_whether_diagonal_voxels_touch():
    m = np.zeros((5, 5), bool)
    m[1, 1] = m[2, 2] = m[3, 3] = True
    m[0, 4] = True
    assert largest_component(m).sum() == 3  # full (8-) connectivity: the diagonal is one object
    assert largest_component(m, connectivity=1).sum() == 1  # faces only: four single pixels
    with pytest.raises(ValueError, match="connectivity must be in 1..2"):
        largest_component(m, connectivity=3)
    assert not largest_component(np.zeros((4, 4), bool)).any()


def test_keep_largest_foreground_treats_touching_classes_as_one():
    lab = np.zeros((8, 10), np.uint8)
    lab[1:4, 1:4] = 1
    lab[1:4, 4:6] = 2  # touches class 1: one foreground object of 15 pixels
    lab[6, 8] = 2  # an isolated speck
    lab[6:8, 0:2] = 1  # an isolated 4-pixel piece
    out = keep_largest_foreground(lab)
    expected = lab.copy()
    expected[6, 8] = 0
    expected[6:8, 0:2] = 0
    np.testing.assert_array_equal(out, expected)
    assert lab[6, 8] == 2  # input untouched


def test_keep_largest_per_class_and_remove_small_in_3d():
    lab = np.zeros((6, 8, 8), np.uint8)
    lab[1:4, 1:4, 1:4] = 1  # 27 voxels
    lab[5, 7, 7] = 1  # 1 voxel
    lab[0:2, 5:8, 5:8] = 2  # 18 voxels
    lab[4:6, 0:2, 6:8] = 2  # 8 voxels
    per_class = keep_largest_per_class(lab, [1, 2])
    assert (per_class == 1).sum() == 27 and (per_class == 2).sum() == 18
    only_one = keep_largest_per_class(lab, [2])
    assert (only_one == 1).sum() == 28  # class 1 untouched
    small = remove_small_per_class(lab, {1: 2, 2: 9})
    assert (small == 1).sum() == 27 and (small == 2).sum() == 18
    assert (remove_small_per_class(lab, {2: 8}) == 2).sum() == 26  # size 8 is kept at min_size 8
