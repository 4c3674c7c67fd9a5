"""The leaderboard's confidence interval is scipy's BCa bootstrap (Efron 1987), seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medseg.benchmark.leaderboard import bootstrap_ci


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
