"""Metrics per region (label in region) on hand-made label maps with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.metrics import evaluate_regions

BRATS = ((1, 2, 3), (2, 3), (3,))


def _maps():
    target = np.zeros((9, 9), np.uint8)
    pred = np.zeros((9, 9), np.uint8)
    target[2, 2], target[2, 6], target[6, 6] = 3, 1, 2
    pred[4, 2], pred[2, 6], pred[6, 6] = 3, 1, 3
    return pred, target


def test_region_dice_and_hd_by_hand():
    pred, target = _maps()
    got = evaluate_regions(pred, target, BRATS)
    assert sorted(got) == [1, 2, 3]
    # whole {1,2,3}: target {(2,2),(2,6),(6,6)}, pred {(4,2),(2,6),(6,6)}: 2 shared of 3 + 3
    assert got[1]["dice"] == pytest.approx(2 * 2 / 6)
    assert got[1]["hd"] == pytest.approx(2.0)
    # core {2,3}: target {(2,2),(6,6)}, pred {(4,2),(6,6)}
    assert got[2]["dice"] == pytest.approx(0.5)
    assert got[2]["hd"] == pytest.approx(2.0)
    # enhancing {3}: target {(2,2)}, pred {(4,2),(6,6)}: no overlap; farthest pred point is
    # (6,6), sqrt(4**2 + 4**2) from (2,2)
    assert got[3]["dice"] == 0.0
    assert got[3]["hd"] == pytest.approx(math.sqrt(32))
    assert (got[3]["tp"], got[3]["fp"], got[3]["fn"]) == (0, 2, 1)


def test_region_hd95_single_voxels_with_spacing():
    target = np.zeros((9, 9), np.uint8)
    pred = np.zeros((9, 9), np.uint8)
    target[2, 2], pred[4, 2] = 3, 3
    got = evaluate_regions(pred, target, BRATS, spacing=(2.0, 1.0))
    for r in (1, 2, 3):
        assert got[r]["hd95"] == pytest.approx(4.0)  # 2 rows of 2 mm
        assert got[r]["dice"] == 0.0


def test_region_metrics_empty_conventions_and_ignore():
    target = np.zeros((6, 6), np.uint8)
    pred = np.zeros((6, 6), np.uint8)
    target[1, 1] = pred[1, 1] = 1  # whole only: core and enhancing empty in both
    target[4, 4] = 255  # ignored: pred there does not count
    pred[4, 4] = 3
    got = evaluate_regions(pred, target, BRATS, ignore_index=255)
    assert got[1]["dice"] == 1.0
    assert got[2]["dice"] == 1.0 and got[2]["hd95"] == 0.0  # both empty
    assert got[3]["empty_target"] and got[3]["empty_pred"]
    without = evaluate_regions(pred, target, BRATS)  # 255 is then no region's label
    assert without[3]["dice"] == 0.0 and math.isnan(without[3]["hd95"])
