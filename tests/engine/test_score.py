"""``score_folders``: existing predictions scored against references, checked by hand and numpy."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.engine.label_files import case_key, file_stem, index_folder, pair_names
from medseg.engine.score import decide_postprocessing_from_folders, score_folders
from medseg.errors import DataError
from medseg.postprocess import PostprocessPlan, Step


def _dice(p: np.ndarray, r: np.ndarray) -> float:
    return 2 * np.logical_and(p, r).sum() / (p.sum() + r.sum())


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _nifti(path: Path, zyx: np.ndarray, spacing_zyx=(3.0, 1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing_zyx[2], spacing_zyx[1], spacing_zyx[0], 1.0])
    nib.save(nib.Nifti1Image(zyx.transpose(2, 1, 0).astype(np.uint8), affine), str(path))


def test_names_pair_exactly_first_then_without_nnunet_and_monai_postfixes(tmp_path):
    assert case_key(file_stem(Path("la_003_0000.nii.gz"))) == "la_003"
    assert case_key(file_stem(Path("la_003/la_003_seg.nii.gz"))) == "la_003"
    assert case_key(file_stem(Path("ISIC_1_segmentation.png"))) == "ISIC_1"
    assert file_stem(Path("img7.npy")) == "img7"
    for name in ("img_0001", "img_0002", "b_0000"):  # frames numbered like channels stay apart
        _png(tmp_path / "gt" / f"{name}.png", np.zeros((4, 4), np.uint8))
    for name in ("img_0001", "img_0002", "b_seg"):
        _png(tmp_path / "pred" / f"{name}.png", np.zeros((4, 4), np.uint8))
    pairs = pair_names(index_folder(tmp_path / "pred"), index_folder(tmp_path / "gt"), tmp_path, tmp_path)
    assert [(c, p.name, r.name) for c, p, r in pairs] == [
        ("b_0000", "b_seg.png", "b_0000.png"),
        ("img_0001", "img_0001.png", "img_0001.png"),
        ("img_0002", "img_0002.png", "img_0002.png"),
    ]


def test_png_scores_equal_a_direct_numpy_dice(tmp_path):
    rng = np.random.default_rng(0)
    expected = {}
    for i in range(4):
        ref = np.zeros((40, 50), np.uint8)
        y, x = rng.integers(5, 20, 2)
        ref[y : y + 12, x : x + 15] = 255
        pred = np.roll(ref, int(rng.integers(-3, 4)), axis=1)
        pred[0:2, 0:2] = 255
        _png(tmp_path / "gt" / "masks" / f"c{i}.png", ref)  # a dataset folder: masks/ is found
        _png(tmp_path / "pred" / f"c{i}_pred.png", pred)
        expected[f"c{i}"] = _dice(pred > 0, ref > 0)
    res = score_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "out", plots=False)
    got = {r["case"]: r["dice"] for r in res["records"]}
    assert got == pytest.approx(expected)
    assert [r["class"] for r in res["records"]] == ["foreground"] * 4
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["meta"]["hd_combine"] == "max" and summary["meta"]["empty_policy"] == "nan"
    assert summary["macro"]["dice"] == pytest.approx(np.mean(list(expected.values())))


def test_nifti_spacing_from_the_header_gives_hd95_in_mm(tmp_path):
    # case a: single voxels one slice apart; slices are 3 mm thick, so every distance is 3 mm
    ref = np.zeros((6, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[3, 5, 5] = 1
    pred[2, 5, 5] = 1
    # case b: overlapping boxes of two classes, for the Dice
    ref_b = np.zeros((6, 10, 10), np.uint8)
    ref_b[1:5, 2:6, 2:6] = 1
    ref_b[1:5, 6:9, 6:9] = 2
    pred_b = np.zeros_like(ref_b)
    pred_b[2:5, 2:7, 2:6] = 1
    pred_b[1:5, 6:9, 7:9] = 2
    for case, r, p in (("la_001", ref, pred), ("la_002", ref_b, pred_b)):
        _nifti(tmp_path / "raw" / "labelsTr" / f"{case}.nii.gz", r)
        _nifti(tmp_path / "monai" / case / f"{case}_seg.nii.gz", p)  # MONAI's folder per case
    (tmp_path / "raw" / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "RV": 1, "LV": 2}})
    )
    res = score_folders(tmp_path / "monai", tmp_path / "raw" / "labelsTr", hd_combine="pooled")
    rec = {(r["case"], r["class"]): r for r in res["records"]}
    assert rec[("la_001", "RV")]["hd95"] == pytest.approx(3.0)  # mm, not 1 voxel
    assert rec[("la_001", "RV")]["hd"] == pytest.approx(3.0) and rec[("la_001", "RV")]["dice"] == 0.0
    assert rec[("la_001", "LV")]["dice"] == 1.0  # both empty
    assert rec[("la_002", "RV")]["dice"] == pytest.approx(_dice(pred_b == 1, ref_b == 1))
    assert rec[("la_002", "LV")]["dice"] == pytest.approx(_dice(pred_b == 2, ref_b == 2))
    assert res["meta"]["hd_combine"] == "pooled"
    # a given spacing overrides the header: 1 mm slices make the distance 1
    res1 = score_folders(tmp_path / "monai", tmp_path / "raw" / "labelsTr", spacing=(1.0, 1.0, 1.0))
    assert res1["records"][0]["hd95"] == pytest.approx(1.0)


def test_unpaired_files_and_shape_mismatch_are_one_line_errors(tmp_path):
    for i in range(3):
        _png(tmp_path / "gt" / f"k{i}.png", np.full((8, 8), 255 * (i % 2), np.uint8))
    for i in range(2):
        _png(tmp_path / "pred" / f"k{i}.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"1 references without prediction: k2\.png"):
        score_folders(tmp_path / "pred", tmp_path / "gt")
    res = score_folders(tmp_path / "pred", tmp_path / "gt", allow_missing=True)
    assert res["meta"]["cases"] == 2 and res["unpaired"]["references_without_prediction"][0].endswith(
        "k2.png"
    )
    _png(tmp_path / "pred" / "k2.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(DataError, match=r"k2\.png: shape \(8, 9\) differs from reference .*k2\.png \(8, 8\)"):
        score_folders(tmp_path / "pred", tmp_path / "gt")
    with pytest.raises(DataError, match="no such folder"):
        score_folders(tmp_path / "nope", tmp_path / "gt")


def test_a_saved_postprocessing_plan_is_applied_and_recorded(tmp_path):
    ref = np.zeros((30, 30), np.uint8)
    ref[5:15, 5:15] = 1
    pred = ref.copy()
    pred[25:28, 25:28] = 1
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    np.savez(tmp_path / "pred" / "a.npz", label=pred)  # HDF5/npz predictions: a 'label' array
    np.save(tmp_path / "gt" / "a.npy", ref)  # what medseg predict writes for arrays
    plan_path = PostprocessPlan([Step("largest_foreground", (1,))]).save(tmp_path / "postprocessing.json")
    raw = score_folders(tmp_path / "pred", tmp_path / "gt", num_classes=2)
    post = score_folders(tmp_path / "pred", tmp_path / "gt", num_classes=2, postprocess=plan_path)
    assert (
        raw["records"][0]["dice"] == pytest.approx(_dice(pred > 0, ref > 0))
        and post["records"][0]["dice"] == 1.0
    )
    assert post["meta"]["postprocessing"].startswith("largest_foreground[1]")


def test_postprocessing_decided_from_prediction_folders(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(4):
        ref = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(2, 14, 2)
        ref[y : y + 12, x : x + 12] = 255
        pred = ref.copy()
        pred[29:31, 29:31] = 255  # a false-positive island
        _png(tmp_path / "gt" / f"c{i}.png", ref)
        _png(tmp_path / "oof" / f"c{i}.png", pred)
    plan = decide_postprocessing_from_folders(
        tmp_path / "oof", tmp_path / "gt", tmp_path / "run" / "postprocessing.json"
    )
    assert plan.steps == [Step("largest_foreground", (1,))]
    assert PostprocessPlan.load(tmp_path / "run" / "postprocessing.json") == plan
    res = score_folders(
        tmp_path / "oof", tmp_path / "gt", postprocess=tmp_path / "run" / "postprocessing.json"
    )
    assert all(r["dice"] == 1.0 for r in res["records"])
