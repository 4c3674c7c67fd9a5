"""Leaderboard statistics: scipy's BCa bootstrap interval (Efron 1987), and cases repeated over folds counted once."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medseg.benchmark.leaderboard import bootstrap_ci, build_leaderboard, pool_repeats


@pytest.mark.parametrize("seed", [0, 5])
def test_bootstrap_ci_equals_scipy_bca_with_the_same_seed(seed):
    x = np.random.default_rng(11).beta(8, 2, size=17)  # a skewed, Dice-like sample of 17 cases
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=3000, confidence_level=0.9, method="BCa", rng=np.random.default_rng(seed)
    )
    lo, hi = bootstrap_ci(list(x), level=0.9, n_boot=3000, seed=seed)
    assert (lo, hi) == (ref.confidence_interval.low, ref.confidence_interval.high)
    # and it is not the plain percentile interval of the same resamples
    pct = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=3000,
        confidence_level=0.9,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    assert (lo, hi) != (pct.confidence_interval.low, pct.confidence_interval.high)


def test_bootstrap_ci_drops_nan_and_handles_degenerate_samples():
    x = [0.9, float("nan"), 0.7, 0.8, 0.95, 0.6]
    assert bootstrap_ci(x, seed=1) == bootstrap_ci([v for v in x if not math.isnan(v)], seed=1)
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan")]))


def test_a_case_repeated_over_folds_counts_once():
    # K-fold benchmark: every fold's model is scored on the same fixed test cases
    recs = []
    for fold, shift in ((0, 0.0), (1, 0.1), (2, -0.05)):
        for i, d in enumerate([0.6, 0.7, 0.8, 0.9]):
            for cell, delta in (("A__l", 0.0), ("B__l", 0.05)):
                recs.append(
                    {"cell": cell, "fold": fold, "case": f"t{i}", "class": "fg", "dice": d + shift + delta}
                )
    board = build_leaderboard(recs, n_boot=200)
    rows = {r["cell"]: r for r in board["rows"]}
    assert rows["A__l"]["n_cases"] == 4 and rows["B__l"]["n_cases"] == 4  # not 12
    assert set(board["case_scores"]["A__l"]) == {"None:t0", "None:t1", "None:t2", "None:t3"}
    assert board["case_scores"]["A__l"]["None:t1"] == pytest.approx(0.7 + (0.1 - 0.05) / 3)
    assert rows["A__l"]["dice"] == pytest.approx(np.mean([0.6, 0.7, 0.8, 0.9]) + 0.05 / 3)
    pooled = pool_repeats({"A": {(0, "x"): 0.5, (1, "x"): float("nan"), (1, "y"): 0.2}})
    assert pooled == {"A": {(None, "x"): 0.5, (None, "y"): 0.2}}
