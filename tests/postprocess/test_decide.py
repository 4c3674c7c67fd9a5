"""The post-processing rule: a step is kept only when it raises the mean Dice on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import DataError
from medseg.postprocess import PostprocessPlan, Step, class_dice, decide_postprocessing


def _dice(p: np.ndarray, r: np.ndarray) -> float:
    tp = np.logical_and(p, r).sum()
    den = p.sum() + r.sum()
    return 1.0 if den == 0 else 2 * tp / den


def test_class_dice_equals_a_direct_computation():
    rng = np.random.default_rng(0)
    p, r = rng.integers(0, 3, (20, 20)), rng.integers(0, 3, (20, 20))
    r[0, :5] = 255
    keep = r != 255
    got = class_dice(p, r, 3)
    assert got == pytest.approx([_dice((p == c) & keep, (r == c) & keep) for c in (1, 2)])
    assert class_dice(np.zeros((3, 3)), np.zeros((3, 3)), 2).tolist() == [1.0]


def _blob_case(rng, shape=(32, 32), speck=True):
    ref = np.zeros(shape, np.uint8)
    y, x = rng.integers(4, 12, 2)
    ref[y : y + 10, x : x + 10] = 1
    pred = ref.copy()
    pred[y : y + 10, x + 9] = 0  # a slightly wrong border
    if speck:
        pred[28:31, 28:31] = 1  # a false-positive island far away
    return pred, ref


def test_largest_component_is_applied_when_it_helps():
    rng = np.random.default_rng(1)
    pairs = [_blob_case(rng) for _ in range(6)]
    plan = decide_postprocessing(pairs, 2)
    assert plan.steps == [Step("largest_foreground", (1,))]
    before = np.mean([_dice(p == 1, r == 1) for p, r in pairs])
    after = np.mean([_dice(plan.apply(p) == 1, r == 1) for p, r in pairs])
    assert after > before
    assert plan.decision[0]["mean_before"] == pytest.approx(before)
    assert plan.decision[0]["mean_after"] == pytest.approx(after) and plan.decision[0]["kept"]


def test_largest_component_is_not_applied_when_it_hurts():
    # two real lesions per case, both predicted: keeping one component would lose the other
    pairs = []
    for shift in range(5):
        ref = np.zeros((30, 30), np.uint8)
        ref[2:10, 2 + shift : 10 + shift] = 1
        ref[20:25, 20:25] = 1
        pred = ref.copy()
        pred[2, 2 + shift : 10 + shift] = 0
        pairs.append((pred, ref))
    plan = decide_postprocessing(pairs, 2)
    assert plan.steps == []
    assert plan.decision[0]["step"] == "largest_foreground" and not plan.decision[0]["kept"]
    assert plan.decision[0]["mean_after"] < plan.decision[0]["mean_before"]
    # small-component removal was tried (sizes up to the smallest real lesion) and changed nothing
    assert any(d["step"] == "remove_small" for d in plan.decision)
    for p, _ in pairs:
        np.testing.assert_array_equal(plan.apply(p), p)


def test_small_components_are_removed_when_largest_component_would_hurt():
    pairs = []
    for shift in range(4):
        ref = np.zeros((40, 40), np.uint8)
        ref[2:12, 2 + shift : 12 + shift] = 1  # 100 pixels
        ref[25:31, 25:31] = 1  # 36 pixels: the smallest real lesion
        pred = ref.copy()
        pred[35, 2 + shift] = pred[38, 10] = 1  # single-pixel false positives
        pred[15:17, 30:32] = 1  # a 4-pixel false positive
        pairs.append((pred, ref))
    plan = decide_postprocessing(pairs, 2)
    assert [s.kind for s in plan.steps] == ["remove_small"]
    assert 4 < plan.steps[0].min_size <= 36
    for p, r in pairs:
        np.testing.assert_array_equal(plan.apply(p), r)


def test_foreground_step_is_refused_when_one_class_gets_worse_and_per_class_steps_follow():
    pairs = []
    for shift in range(4):
        ref = np.zeros((6, 30, 30), np.uint8)  # 3D
        ref[1:5, 2:12, 2 + shift : 12 + shift] = 1
        ref[1:4, 20:26, 20:26] = 2  # class 2 lies apart from class 1: all-foreground LCC would delete it
        pred = ref.copy()
        pred[1:5, 2, 2 + shift : 12 + shift] = 0
        pred[5, 28:30, 0:2] = 1  # a false-positive island of class 1
        pairs.append((pred, ref))
    plan = decide_postprocessing(pairs, 3, remove_small=False)
    tried = {(d["step"], tuple(d["classes"])): d for d in plan.decision}
    fg = tried[("largest_foreground", (1, 2))]
    assert not fg["kept"] and fg["dice_after"][1] < fg["dice_before"][1]
    assert tried[("largest_class", (1,))]["kept"]
    assert not tried[("largest_class", (2,))]["kept"]  # no change is not an improvement
    assert plan.steps == [Step("largest_class", (1,))]
    assert plan.describe() == "largest_class[1] (connectivity full)"


def test_plan_json_round_trip_and_errors(tmp_path):
    plan = PostprocessPlan(
        [Step("largest_foreground", (1, 2)), Step("remove_small", (2,), 12)],
        connectivity=1,
        decision=[{"step": "largest_foreground", "kept": True}],
    )
    back = PostprocessPlan.load(plan.save(tmp_path / "postprocessing.json"))
    assert back == plan
    lab = np.random.default_rng(3).integers(0, 3, (12, 12)).astype(np.uint8)
    np.testing.assert_array_equal(back.apply(lab), plan.steps[1].apply(plan.steps[0].apply(lab, 1), 1))
    (tmp_path / "bad.json").write_text('{"format": "x"}')
    with pytest.raises(DataError, match="bad.json: not a medseg post-processing plan"):
        PostprocessPlan.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="missing.json: post-processing plan not found"):
        PostprocessPlan.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="min_size"):
        Step("largest_class", (1,), 5)
