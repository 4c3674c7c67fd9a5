"""Overlap metrics: hand-worked cases, zero denominators, input checking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medseg import metrics as M

# 4x4 hand-worked case: target has 4 pixels, prediction 5, overlap 3.
#   TP=3, FP=2, FN=1, TN=10, N=16
TARGET = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 0]], dtype=np.uint8)


def test_counts_hand_worked():
    assert M.binary_confusion(PRED, TARGET) == (3, 2, 1, 10)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("dice", 2 * 3 / (2 * 3 + 2 + 1)),  # 6/9
        ("iou", 3 / 6),
        ("sensitivity", 3 / 4),
        ("specificity", 10 / 12),
        ("precision", 3 / 5),
        ("accuracy", 13 / 16),
    ],
)
def test_overlap_hand_worked(name, expected):
    assert getattr(M, name)(PRED, TARGET) == pytest.approx(expected, abs=1e-12)


def test_dice_iou_relation_and_symmetry():
    rng = np.random.default_rng(1)
    for _ in range(20):
        p, t = rng.random((9, 7)) < 0.4, rng.random((9, 7)) < 0.4
        d, j = M.dice(p, t), M.iou(p, t)
        assert d == pytest.approx(2 * j / (1 + j))
        assert d == pytest.approx(M.dice(t, p))
        assert M.sensitivity(p, t) == pytest.approx(M.precision(t, p))


def test_3d_and_torch_inputs_agree():
    rng = np.random.default_rng(2)
    p, t = rng.random((4, 5, 6)) < 0.5, rng.random((4, 5, 6)) < 0.5
    for name in M.OVERLAP_METRICS:
        f = getattr(M, name)
        assert f(torch.from_numpy(p), torch.from_numpy(t)) == pytest.approx(f(p, t))
        assert isinstance(f(p, t), float)


def test_roi_excludes_pixels():
    roi = np.ones_like(TARGET, dtype=bool)
    roi[1, 3] = False  # drop one false positive
    assert M.binary_confusion(PRED, TARGET, roi=roi) == (3, 1, 1, 10)
    assert M.dice(PRED, TARGET, roi=roi) == pytest.approx(6 / 8)


def test_both_empty_is_perfect():
    z = np.zeros((5, 5), bool)
    for name in M.OVERLAP_METRICS:
        assert getattr(M, name)(z, z) == 1.0


def test_target_empty_prediction_not():
    z, p = np.zeros((5, 5), bool), np.zeros((5, 5), bool)
    p[2, 2] = True
    assert M.dice(p, z) == 0.0 and M.iou(p, z) == 0.0
    assert math.isnan(M.sensitivity(p, z))  # 0/0 with an error: undefined
    assert M.precision(p, z) == 0.0
    assert M.specificity(p, z) == pytest.approx(24 / 25)


def test_prediction_empty_target_not():
    z, t = np.zeros((5, 5), bool), np.zeros((5, 5), bool)
    t[2, 2] = True
    assert M.dice(z, t) == 0.0
    assert M.sensitivity(z, t) == 0.0
    assert math.isnan(M.precision(z, t))


def test_legacy_rule_for_dice():
    z, p = np.zeros((5, 5), bool), np.zeros((5, 5), bool)
    p[1, 1] = True
    assert M.dice(p, z, empty="legacy") == 1.0  # FP-only case scores perfect: the inflation
    assert M.dice(z, p, empty="legacy") == 0.0
    assert M.dice(z, z, empty="legacy") == 0.0  # TransUNet's "else" branch
    assert M.dice(p, p, empty="legacy") == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        M.dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="binary mask"):
        M.dice(np.full((3, 3), 0.7), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="empty policy"):
        M.dice(PRED, TARGET, empty="zero")


def test_empty_policy_parsing():
    assert M.resolve_empty("max:12.5") == M.EmptyPolicy("max", 12.5)
    assert M.resolve_empty(30) == M.EmptyPolicy("max", 30.0)
    assert M.resolve_empty(None).mode == "nan"
    with pytest.raises(ValueError):
        M.resolve_empty("legacy:3")
    with pytest.raises(ValueError):
        M.EmptyPolicy("nan", 3.0)
