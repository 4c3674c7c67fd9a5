"""Checks of the nnU-Net comparison scripts (not in CI's tests/; run: python -m pytest -q bench/nnunet).

They need neither nnU-Net nor real data: the split rules, the NIfTI axis order, the label reading and
the scoring are checked against hand computations with plain numpy / scipy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pooled  # noqa: E402
import prepare  # noqa: E402
import run  # noqa: E402
import score  # noqa: E402


def test_ph2_split_is_seeded_disjoint_and_complete():
    ids = [f"IMD{i:03d}" for i in range(64)]
    a = prepare.ph2_split(ids, seed=0, test_fraction=0.25, n_val=8)
    b = prepare.ph2_split(list(reversed(ids)), seed=0, test_fraction=0.25, n_val=8)
    assert a == b  # the input order does not matter, the seed does
    assert [len(a[k]) for k in ("train", "val", "test")] == [40, 8, 16]
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert prepare.ph2_split(ids, seed=1, test_fraction=0.25, n_val=8)["test"] != a["test"]


def test_ph2_test_blocks_of_one_seed_partition_the_images():
    ids = [f"IMD{i:03d}" for i in range(64)]
    blocks = [prepare.ph2_split(ids, 0, 0.25, 8, test_block=k) for k in range(4)]
    assert blocks[0] == prepare.ph2_split(ids, 0, 0.25, 8)  # block 0 is the original split
    tests = [set(b["test"]) for b in blocks]
    assert sorted(i for t in tests for i in t) == ids  # disjoint, and together every image once
    for b in blocks:
        assert sorted(b["train"] + b["val"] + b["test"]) == ids and len(b["val"]) == 8


def test_ph2_test_set_is_the_peer_scripts_choice():
    # the peer's prep_ph2.py: shuffle the sorted ids with random.Random(seed), the first 25 % are test
    import random

    ids = [f"IMD{i:03d}" for i in range(64)]
    order = sorted(ids)
    random.Random(0).shuffle(order)
    assert prepare.ph2_split(ids, 0, 0.25, 8)["test"] == sorted(order[:16])


def test_nifti_round_trip_keeps_the_zhw_axes(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, size=(3, 5, 7), dtype=np.uint8)
    path = tmp_path / "case.nii.gz"
    prepare.save_nifti(labels, path)
    assert np.array_equal(score.read_labels(path, 4), labels)


def test_read_labels_binarises_both_tools_pngs(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:6] = 1
    Image.fromarray(mask).save(tmp_path / "nnunet.png")  # nnU-Net: 0/1
    Image.fromarray(mask * 255).save(tmp_path / "medseg.png")  # medseg: 0/255
    for name in ("nnunet.png", "medseg.png"):
        assert np.array_equal(score.read_labels(tmp_path / name, 2), mask)


def _hand_dice(p: np.ndarray, t: np.ndarray) -> float:
    return 2.0 * np.logical_and(p, t).sum() / (p.sum() + t.sum())


def _hand_hd95(p: np.ndarray, t: np.ndarray) -> float:
    """HD95 from boundary pixels and exact Euclidean distance transforms (scipy)."""

    def border(m):
        return m & ~ndimage.binary_erosion(m, border_value=0)

    bp, bt = border(p), border(t)
    d_to_t = ndimage.distance_transform_edt(~bt)[bp]
    d_to_p = ndimage.distance_transform_edt(~bp)[bt]
    return float(max(np.percentile(d_to_t, 95), np.percentile(d_to_p, 95)))


def test_score_case_matches_hand_computation():
    t = np.zeros((40, 50), np.uint8)
    t[10:30, 10:30] = 1
    p = np.zeros_like(t)
    p[14:34, 12:36] = 1
    got = score.score_case(p, t, 2, Path("x"))
    assert got["dice"] == pytest.approx(_hand_dice(p > 0, t > 0))
    assert got["hd95"] == pytest.approx(_hand_hd95(p > 0, t > 0), abs=0.5)


def test_score_case_multiclass_is_the_mean_over_foreground_classes():
    t = np.zeros((2, 20, 20), np.uint8)
    t[:, 2:8, 2:8], t[:, 10:16, 10:16] = 1, 2
    p = t.copy()
    p[:, 10:16, 10:13] = 0  # class 2 half missed
    got = score.score_case(p, t, 3, Path("x"))
    d2 = _hand_dice(p == 2, t == 2)
    assert got["classes"][1]["dice"] == 1.0
    assert got["dice"] == pytest.approx((1.0 + d2) / 2)


def test_missed_structure_scores_zero_and_the_diagonal():
    t = np.zeros((30, 40), np.uint8)
    t[5:10, 5:10] = 1
    got = score.score_case(np.zeros_like(t), t, 2, Path("x"))
    assert got["dice"] == 0.0
    assert got["hd95"] == pytest.approx(50.0)  # sqrt(30^2 + 40^2)


def test_paired_counts_and_matches_scipy():
    a = [0.9, 0.8, 0.85, 0.7, 0.95, 0.6]
    b = [0.8, 0.82, 0.7, 0.6, 0.9, 0.5]
    res = score.paired(a, b, higher_is_better=True)
    assert (res["a_better"], res["a_worse"], res["ties"]) == (5, 1, 0)
    assert res["p_value"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    hd = score.paired([1.0, 2.0], [3.0, 1.0], higher_is_better=False)
    assert (hd["a_better"], hd["a_worse"]) == (1, 1)


def test_score_main_end_to_end(tmp_path, capsys):
    work = tmp_path / "work"
    t = np.zeros((12, 12), np.uint8)
    t[3:9, 3:9] = 1
    meta = {
        "dataset": "ph2",
        "num_classes": 2,
        "class_names": ["background", "lesion"],
        "train": ["a"],
        "val": ["b"],
        "test": ["c1", "c2"],
    }
    (work / "reference").mkdir(parents=True)
    (work / "split.json").write_text(json.dumps(meta))
    for folder in score.TOOLS.values():
        (work / folder).mkdir(parents=True)
    for case in meta["test"]:
        np.save(work / "reference" / f"{case}.npy", t)
        Image.fromarray(t).save(work / score.TOOLS["nnunet"] / f"{case}.png")
        Image.fromarray(np.roll(t, 2, axis=1) * 255).save(work / score.TOOLS["medseg"] / f"{case}.png")
        (work / "pp").mkdir(exist_ok=True)
        Image.fromarray(t * 255).save(work / "pp" / f"{case}.png")  # a variant equal to the reference
    assert score.main([str(work), "--variant", "medseg+pp=pp"]) == 0
    result = json.loads((work / "scores.json").read_text())
    assert result["summaries"]["nnunet"]["dice"]["mean"] == 1.0
    assert result["summaries"]["medseg"]["dice"]["mean"] == pytest.approx(
        _hand_dice(np.roll(t, 2, 1) > 0, t > 0)
    )
    assert result["summaries"]["medseg+pp"]["dice"]["mean"] == 1.0
    assert result["wilcoxon"]["medseg"]["dice"]["a_better"] == 2
    assert result["wilcoxon"]["medseg+pp"]["dice"]["ties"] == 2
    with pytest.raises(SystemExit):
        score.main([str(work), "--variant", "pp=pp"])  # a variant's name must start with medseg+
    assert "| nnunet |" in capsys.readouterr().out


def test_set_plan_batch_size_edits_only_the_2d_batch(tmp_path):
    plans = {
        "configurations": {
            "2d": {"batch_size": 48, "patch_size": [256, 224]},
            "3d_fullres": {"batch_size": 2},
        }
    }
    f = tmp_path / "nnUNetPlans.json"
    f.write_text(json.dumps(plans))
    run.set_plan_batch_size(f, 8)
    run.set_plan_batch_size(f, 4)  # twice: the planned value is the first one
    got = json.loads(f.read_text())["configurations"]
    assert got["2d"] == {"batch_size": 4, "batch_size_planned": 48, "patch_size": [256, 224]}
    assert got["3d_fullres"] == {"batch_size": 2}


def _scores(work, cases):
    work.mkdir()
    nn = {c: {"dice": d, "hd95": h} for c, (d, h, _, _) in cases.items()}
    ms = {c: {"dice": d, "hd95": h} for c, (_, _, d, h) in cases.items()}
    (work / "scores.json").write_text(json.dumps({"cases": {"nnunet": nn, "medseg": ms}}))
    return work


def test_pooled_counts_each_case_once_and_refuses_a_repeat(tmp_path):
    a = _scores(tmp_path / "a", {"x": (0.9, 5.0, 0.8, 7.0), "y": (0.7, 9.0, 0.75, 8.0)})
    b = _scores(tmp_path / "b", {"z": (0.6, 4.0, 0.5, 6.0)})
    rows = pooled.pooled_cases([a, b], "medseg")
    dice = pooled.compare(rows, "dice")
    assert dice["n"] == 3 and (dice["baseline_better"], dice["baseline_worse"]) == (2, 1)
    assert dice["baseline_mean"] == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    hd = pooled.compare(rows, "hd95")  # lower is better: nnU-Net 5 < 7, 9 > 8, 4 < 6
    assert (hd["baseline_better"], hd["baseline_worse"]) == (2, 1)
    with pytest.raises(SystemExit, match="already tested"):
        pooled.pooled_cases([a, a], "medseg")
    swapped = pooled.compare(pooled.pooled_cases([a, b], "nnunet", baseline="medseg"), "dice")
    assert (swapped["baseline_better"], swapped["baseline_worse"]) == (1, 2)
    assert swapped["baseline_mean"] == pytest.approx((0.8 + 0.75 + 0.5) / 3)


def test_side_by_side_children_get_one_tool_and_one_thread_each():
    argv = ["--dataset", "ph2", "--tool", "side-by-side", "--budget", "30", "--threads=4", "WORK"]
    assert run.child_argv(argv, "medseg") == [
        "--dataset", "ph2", "--budget", "30", "WORK", "--tool", "medseg", "--threads", "1",
    ]  # fmt: skip
    env = run.with_threads({"PATH": "x"}, 1)
    assert env["OMP_NUM_THREADS"] == env["NNUNET_TORCH_THREADS"] == "1"
    assert run.with_threads({"PATH": "x"}, None) == {"PATH": "x"}
