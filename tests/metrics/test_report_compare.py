"""compare_runs: paired differences, Wilcoxon signed-rank test, effect sizes, files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from medseg import metrics as M
from medseg.errors import DataError


def _write(dir_, scores: dict[str, float], hd: dict[str, float] | None = None):
    recs = []
    for case, v in scores.items():
        recs.append(
            {
                "case": case,
                "class": "organ",
                "class_index": 1,
                "dice": v,
                "hd95": (hd or {}).get(case, 1.0),
                "empty_target": False,
                "empty_pred": False,
            }
        )
    M.write_report(recs, dir_, plots=False)


def test_paired_statistics_by_hand(tmp_path):
    a = {"c1": 0.50, "c2": 0.60, "c3": 0.70, "c4": 0.80, "c5": 0.90, "only_a": 0.1}
    # differences B - A: +0.01, +0.02, -0.03, +0.04, 0 (dropped by the signed-rank test)
    b = {"c1": 0.51, "c2": 0.62, "c3": 0.67, "c4": 0.84, "c5": 0.90, "only_b": 0.2}
    _write(tmp_path / "A", a)
    _write(tmp_path / "B" / "eval" / "test", b)  # a run folder: eval/<split> is found
    res = M.compare_runs(tmp_path / "A", tmp_path / "B", tmp_path / "cmp")
    d = np.array([0.01, 0.02, -0.03, 0.04, 0.0])
    assert res["n"] == 5 and res["n_nonzero"] == 4
    assert res["only_in_a"] == ["only_a"] and res["only_in_b"] == ["only_b"]
    assert res["mean_diff"] == pytest.approx(d.mean())
    assert res["median_diff"] == pytest.approx(0.01)
    assert res["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    # ranks of |d| among non-zero: 1, 2, 3, 4 -> R+ = 1 + 2 + 4 = 7, R- = 3
    assert res["rank_biserial"] == pytest.approx((7 - 3) / 10)
    ref = stats.wilcoxon(d[d != 0])
    assert res["p_value"] == pytest.approx(ref.pvalue)
    assert res["wilcoxon_w"] == pytest.approx(ref.statistic)
    assert res["b_better"] is None  # not significant with 4 pairs
    files = res["files"]
    saved = json.loads(open(files["json"]).read())
    assert saved["mean_diff"] == pytest.approx(res["mean_diff"])
    assert open(files["plot_png"], "rb").read(4) == b"\x89PNG"
    lines = open(files["cases_csv"]).read().splitlines()
    assert lines[0] == "case,dice_a,dice_b,diff_b_minus_a" and len(lines) == 6
    assert "organ" in res["per_class"]


def test_direction_and_significance(tmp_path):
    rng = np.random.default_rng(0)
    cases = [f"c{i}" for i in range(30)]
    a = {c: float(v) for c, v in zip(cases, rng.uniform(0.6, 0.8, 30))}
    b = {c: a[c] + float(rng.uniform(0.01, 0.05)) for c in cases}  # B better on every case
    hd_a = {c: 5.0 + i for i, c in enumerate(cases)}
    hd_b = {c: hd_a[c] + 1.0 for c in cases}  # B worse in HD95 (higher)
    _write(tmp_path / "A", a, hd_a)
    _write(tmp_path / "B", b, hd_b)
    res = M.compare_runs(tmp_path / "A", tmp_path / "B", tmp_path / "out")
    assert res["p_value"] < 1e-4 and res["rank_biserial"] == 1.0 and res["b_better"] is True
    res_hd = M.compare_runs(tmp_path / "A", tmp_path / "B", tmp_path / "out_hd", metric="hd95")
    assert res_hd["mean_diff"] == pytest.approx(1.0) and res_hd["b_better"] is False
    assert not res_hd["higher_is_better"]


def test_undefined_pairs_dropped_and_errors(tmp_path):
    _write(tmp_path / "A", {"c1": 0.5, "c2": 0.6}, {"c1": float("nan"), "c2": 2.0})
    _write(tmp_path / "B", {"c1": 0.4, "c2": 0.7}, {"c1": 3.0, "c2": 1.0})
    res = M.compare_runs(tmp_path / "A", tmp_path / "B", tmp_path / "o", metric="hd95")
    assert res["n"] == 1 and res["n_undefined"] == 1 and math.isfinite(res["mean_diff"])
    _write(tmp_path / "C", {"x": 0.5})
    with pytest.raises(DataError, match="share no case"):
        M.compare_runs(tmp_path / "A", tmp_path / "C", tmp_path / "o2")
    with pytest.raises(DataError, match="no such"):
        M.compare_runs(tmp_path / "A", tmp_path / "missing", tmp_path / "o3")
    with pytest.raises(ValueError, match="unknown metric"):
        M.compare_runs(tmp_path / "A", tmp_path / "B", tmp_path / "o4", metric="f1")
