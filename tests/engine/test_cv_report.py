"""The cross-validation report against hand computations: per-fold means, mean ± sd over folds,
pooled per-case statistics (every case once), undefined HD95 left out and counted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.cli import main
from medseg.engine.cv_report import cv_report, fold_dirs
from medseg.errors import DataError
from medseg.metrics import report as rep
from medseg.postprocess import PLAN_FILE, PostprocessPlan, Step

NAN = float("nan")
FOLDS = {  # fold -> [(case, dice, hd95)]
    0: [("a", 0.8, 2.0), ("b", 0.6, 4.0)],
    1: [("c", 0.9, 1.0), ("d", 0.7, NAN), ("e", 0.5, 3.0)],
}


def _write_run(run, folds=FOLDS):
    for k, cases in folds.items():
        recs = [{"case": c, "class": "lesion", "class_index": 1, "dice": d, "hd95": h} for c, d, h in cases]
        rep.write_report(recs, run / f"fold_{k}" / "oof", ["background", "lesion"], plots=False)
    (run / "fold_7").mkdir()  # a fold without predictions is not a fold of the report


def test_per_fold_over_folds_and_pooled_numbers(tmp_path):
    _write_run(tmp_path)
    assert [d.name for d in fold_dirs(tmp_path)] == ["fold_0", "fold_1"]
    r = cv_report(tmp_path)
    assert r["per_fold"][0]["lesion"]["dice"] == pytest.approx(0.7)
    assert r["per_fold"][1]["lesion"]["dice"] == pytest.approx(0.7)
    assert r["per_fold"][1]["lesion"]["hd95"] == pytest.approx(2.0)  # nan left out
    over = r["over_folds"]["lesion"]
    assert over["dice"]["mean"] == pytest.approx(0.7) and over["dice"]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert over["hd95"]["mean"] == pytest.approx(2.5)
    assert over["hd95"]["sd"] == pytest.approx(np.std([3.0, 2.0], ddof=1))
    pooled = r["pooled"]["lesion"]
    assert r["n_cases"] == 5 and pooled["dice"]["n"] == 5
    assert pooled["dice"]["mean"] == pytest.approx(0.7)
    assert pooled["dice"]["std"] == pytest.approx(np.std([0.8, 0.6, 0.9, 0.7, 0.5], ddof=1))
    assert pooled["hd95"]["mean"] == pytest.approx(2.5) and pooled["hd95"]["n_nan"] == 1
    assert r["postprocessing"] is None
    doc = json.loads((tmp_path / "cv" / "cv_report.json").read_text(encoding="utf-8"))
    assert doc["n_cases"] == 5
    md = (tmp_path / "cv" / "cv_report.md").read_text(encoding="utf-8")
    assert "| fold 0 | 2 | 0.7000 | 3.00 |" in md and "[1 n/a]" in md
    assert (tmp_path / "cv" / "cv_box.png").stat().st_size > 0


def test_the_report_records_the_postprocessing_decision(tmp_path):
    _write_run(tmp_path)
    decision = [
        {
            "step": "largest_foreground",
            "classes": [1],
            "min_size": None,
            "dice_before": [0.7],
            "dice_after": [0.72],
            "mean_before": 0.7,
            "mean_after": 0.72,
            "kept": True,
        }
    ]
    PostprocessPlan([Step("largest_foreground", (1,))], None, decision).save(tmp_path / PLAN_FILE)
    pp = cv_report(tmp_path)["postprocessing"]
    assert pp["plan"].startswith("largest_foreground[1]")
    assert pp["oof_mean_dice_before"] == 0.7 and pp["oof_mean_dice_after"] == 0.72
    assert "0.7000 -> 0.7200" in (tmp_path / "cv" / "cv_report.md").read_text(encoding="utf-8")


def test_a_case_in_two_folds_is_an_error(tmp_path):
    _write_run(tmp_path, {0: [("a", 0.8, 2.0)], 1: [("a", 0.6, 1.0)]})
    with pytest.raises(DataError, match="fold_1: case 'a' was also validated by fold 0"):
        cv_report(tmp_path)
    with pytest.raises(DataError, match="no fold_k/oof/per_case.json"):
        cv_report(tmp_path / "fold_7")


def test_cli_cv_report_prints_the_table(tmp_path, capsys):
    _write_run(tmp_path)
    assert main(["cv-report", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("\t")[1:] == ["cases", "lesion Dice", "lesion HD95 (mm or px)"]
    assert out[-1].startswith("pooled (every case once)\t5\t0.7000 ± ")
    assert (tmp_path / "rep" / "cv_report.md").is_file()
    assert main(["cv-report", str(tmp_path / "nothing")]) == 2
