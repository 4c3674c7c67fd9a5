"""Leaderboard maths on small synthetic result tables, checked against hand-worked
answers and independent computations (exact Wilcoxon null distribution by enumeration,
the normal approximation of the mean for the bootstrap)."""

from __future__ import annotations

import csv
import io
import itertools
import math

import numpy as np
import pytest

from medseg.benchmark.leaderboard import (
    bootstrap_ci,
    build_leaderboard,
    case_scores,
    competition_ranks,
    holm,
    mean_case_rank,
    paired_against_best,
    pareto_front,
    wilcoxon_signed_rank,
)
from medseg.benchmark.tables import to_csv, to_markdown


def exact_wilcoxon_p(d: np.ndarray) -> tuple[float, float]:
    """Two-sided exact p of the signed-rank statistic by enumerating all 2^n sign patterns
    (no ties, no zeros): p = min(1, 2 * min(P(T <= t), P(T >= t))), T = sum of positive ranks."""
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    t_plus = ranks[d > 0].sum()
    totals = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))]
    totals = np.array(totals)
    lower = np.mean(totals <= t_plus)
    upper = np.mean(totals >= t_plus)
    t_minus = ranks.sum() - t_plus
    return min(1.0, 2 * min(lower, upper)), float(min(t_plus, t_minus))


def test_wilcoxon_matches_exact_enumeration():
    d = np.array([1.1, -0.3, 2.5, 0.7, -1.9, 3.2, 0.4, 1.6, -0.05])
    a = np.linspace(0.5, 0.9, d.size)
    res = wilcoxon_signed_rank(a + d, a)
    p, stat = exact_wilcoxon_p(d)
    assert res["n"] == d.size
    assert res["p"] == pytest.approx(p, rel=1e-9)
    assert res["statistic"] == pytest.approx(stat)
    assert res["median_diff"] == pytest.approx(np.median(d))


def test_wilcoxon_one_sided_extreme_case():
    # all 10 differences negative: exact two-sided p = 2 / 2^10
    a = np.arange(10) * 0.01
    res = wilcoxon_signed_rank(a, a + np.linspace(0.01, 0.1, 10))
    assert res["p"] == pytest.approx(2 / 2**10)


def test_wilcoxon_drops_nan_and_zero_pairs():
    a = [0.9, 0.8, math.nan, 0.7, 0.6, 0.5, 0.4, 0.3]
    b = [0.8, 0.8, 0.5, 0.5, 0.35, 0.2, 0.05, 0.2]
    res = wilcoxon_signed_rank(a, b)
    assert res["n"] == 7  # NaN pair dropped (the zero difference is counted in n but not ranked)
    d = np.array([0.1, 0.2, 0.25, 0.3, 0.35, 0.1 + 1e-9])  # same ranks as the nonzero differences
    p, _ = exact_wilcoxon_p(d)
    assert res["p"] == pytest.approx(p)


def test_wilcoxon_degenerate():
    assert wilcoxon_signed_rank([0.5, 0.6], [0.5, 0.6])["p"] == 1.0
    assert math.isnan(wilcoxon_signed_rank([math.nan], [0.3])["p"])
    with pytest.raises(ValueError, match="equal lengths"):
        wilcoxon_signed_rank([1, 2], [1])


def test_holm_hand_worked():
    # sorted p: 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.2, math.nan, 0.01])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def test_competition_ranks():
    assert competition_ranks([0.9, 0.8, 0.9, 0.7]) == [1, 3, 1, 4]
    assert competition_ranks([3.0, 1.0, 2.0], higher_better=False) == [3, 1, 2]
    assert competition_ranks([0.5, math.nan, 0.6]) == [2, 3, 1]


def test_mean_case_rank_hand_worked():
    scores = {
        "A": {(0, "1"): 0.9, (0, "2"): 0.5},
        "B": {(0, "1"): 0.8, (0, "2"): 0.7},
        "C": {(0, "1"): 0.8, (0, "2"): 0.6},
    }
    # case 1: A 1, B 2.5, C 2.5; case 2: A 3, B 1, C 2
    assert mean_case_rank(scores) == pytest.approx({"A": 2.0, "B": 1.75, "C": 2.25})
    # distances: lower is better, so the order flips
    assert mean_case_rank(scores, higher_better=False) == pytest.approx({"A": 2.0, "B": 2.25, "C": 1.75})


def test_pareto_front():
    pts = [(0.9, 10), (0.8, 20), (0.85, 5), (0.7, 15), (0.9, 10), (math.nan, 99)]
    assert pareto_front(pts) == [0, 1, 4]


def test_bootstrap_ci():
    assert bootstrap_ci([0.7, 0.7, 0.7]) == (0.7, 0.7)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    x = np.random.default_rng(1).normal(0.0, 1.0, 400)
    lo, hi = bootstrap_ci(x, n_boot=4000)
    # independent reference: normal approximation of the mean, mean +- 1.96 s / sqrt(n)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo < x.mean() < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.12)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)


def _records(cell, values, cls="lesion", hd=None):
    return [
        {
            "cell": cell,
            "fold": None,
            "case": f"c{i:02d}",
            "class": cls,
            "dice": v,
            "iou": v / (2 - v),
            "hd95": (hd[i] if hd is not None else 10 * (1 - v)),
            "assd": 1.0,
        }
        for i, v in enumerate(values)
    ]


def test_case_scores_average_classes_and_skip_nan():
    recs = [
        {"cell": "A", "fold": 0, "case": "x", "class": "rv", "dice": 0.6},
        {"cell": "A", "fold": 0, "case": "x", "class": "lv", "dice": 0.8},
        {"cell": "A", "fold": 0, "case": "y", "class": "rv", "dice": math.nan},
        {"cell": "A", "fold": 0, "case": "y", "class": "lv", "dice": 0.5},
        {"cell": "A", "fold": 0, "case": "z", "class": "rv", "dice": None},
    ]
    s = case_scores(recs, "dice")["A"]
    assert s[(0, "x")] == pytest.approx(0.7)
    assert s[(0, "y")] == pytest.approx(0.5)
    assert math.isnan(s[(0, "z")])
    assert case_scores(recs, "dice", classes=["rv"])["A"][(0, "x")] == pytest.approx(0.6)


def test_leaderboard_ranks_and_statistics():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.85, 12)
    jitter = np.array([1, -1] * 6) * rng.uniform(0.0005, 0.002, 12)
    recs = (
        _records("unet__dice", base + 0.1)
        + _records("fcn__dice", base + 0.1 + jitter)
        + _records("segnet__dice", base)
    )
    info = {"unet__dice": {"params": 1.5e6, "infer_images_per_s": 40.0}}
    board = build_leaderboard(recs, info, n_boot=500)
    rows = {r["cell"]: r for r in board["rows"]}
    assert board["best"] in ("unet__dice", "fcn__dice")
    assert board["rows"][-1]["cell"] == "segnet__dice" and board["rows"][-1]["rank"] == 3
    assert rows["segnet__dice"]["dice"] == pytest.approx(base.mean())
    assert rows["segnet__dice"]["hd95"] == pytest.approx(np.mean(10 * (1 - base)))
    assert rows["segnet__dice"]["verdict"] == "worse"
    other = "fcn__dice" if board["best"] == "unet__dice" else "unet__dice"
    assert rows[other]["verdict"] == "n.s."
    # segnet is below the best in all 12 cases: exact p = 2 / 2^12; Holm over 2 tests doubles it
    # (it is the smaller p), and the n.s. comparison's adjusted p cannot be smaller.
    assert rows["segnet__dice"]["p"] == pytest.approx(2 / 2**12)
    assert rows["segnet__dice"]["p_holm"] == pytest.approx(4 / 2**12)
    assert rows[other]["p_holm"] >= rows["segnet__dice"]["p_holm"]
    lo, hi = rows["segnet__dice"]["dice_ci"]
    assert lo < base.mean() < hi
    assert rows["unet__dice"]["params"] == 1.5e6

    md = to_markdown(board)
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].startswith("| rank | model | loss | dice (95% CI)")
    assert "| 3 | segnet | dice |" in lines[-1] and "worse" in lines[-1]
    parsed = list(csv.DictReader(io.StringIO(to_csv(board))))
    assert [p["cell"] for p in parsed] == [r["cell"] for r in board["rows"]]
    assert float(parsed[-1]["dice"]) == pytest.approx(base.mean())
    assert float(parsed[-1]["dice_ci_low"]) == pytest.approx(lo)


def test_leaderboard_distance_primary_lower_is_better():
    recs = _records("a__l", [0.8] * 6, hd=[1, 2, 1, 2, 1, 2]) + _records(
        "b__l", [0.8] * 6, hd=[5, 6, 5, 6, 5, 7]
    )
    board = build_leaderboard(recs, primary="hd95", n_boot=200)
    assert board["best"] == "a__l"
    assert board["rows"][1]["median_diff"] > 0  # b's distances are larger
    assert board["rows"][1]["p"] == pytest.approx(2 / 2**6)


def test_paired_tests_use_shared_cases_only():
    scores = {"A": {(0, "1"): 0.9, (0, "2"): 0.8, (0, "3"): 0.7}, "B": {(0, "1"): 0.5, (0, "2"): 0.4}}
    res = paired_against_best(scores, "A")
    assert res["B"]["n"] == 2 and res["B"]["verdict"] == "n.s."  # p = 0.5 with 2 pairs
    assert res["B"]["p"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown best"):
        paired_against_best(scores, "Z")


def test_empty_records_rejected():
    with pytest.raises(ValueError, match="no per-case records"):
        build_leaderboard([])


def test_undefined_distance_values_are_counted_and_shown():
    # two classes, three cases; HD95 undefined (empty prediction) for (y, rv) and both classes of z
    recs = []
    for case, rv, lv in [("x", 4.0, 2.0), ("y", math.nan, 6.0), ("z", math.nan, math.nan)]:
        recs.append({"cell": "A__l", "fold": 0, "case": case, "class": "rv", "dice": 0.5, "hd95": rv})
        recs.append({"cell": "A__l", "fold": 0, "case": case, "class": "lv", "dice": 0.7, "hd95": lv})
    board = build_leaderboard(recs, n_boot=50)
    row = board["rows"][0]
    assert row["hd95_undefined"] == 3 and row["dice_undefined"] == 0
    # the mean skips them: case means x = 3, y = 6 (z has none) -> 4.5; per class rv 4, lv 4
    assert row["hd95"] == pytest.approx(4.5)
    assert row["hd95/rv"] == pytest.approx(4.0) and row["hd95/lv"] == pytest.approx(4.0)
    line = to_markdown(board).strip().splitlines()[-1]
    assert "4.50 (3 n/a)" in line
    assert "(0 n/a)" not in line
    assert list(csv.DictReader(io.StringIO(to_csv(board))))[0]["hd95_undefined"] == "3"
