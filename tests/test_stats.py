"""landscape_hpc/stats.py against scipy's own intervals and tests, and against what an interval
and an MDD promise: coverage and power, by simulation (seeded)."""

import math

import numpy as np
import pytest
from scipy import stats as sp

from landscape_hpc.stats import (
    correlation_interval,
    equivalence_test,
    mean_interval,
    paired_difference,
    welch_difference,
)


def test_the_interval_is_scipys_t_interval_and_covers_95_percent():
    x = np.array([0.3, 0.1, 0.7, 0.4, 0.2])
    mean, lo, hi = mean_interval(x)
    want = sp.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=sp.sem(x))
    assert mean == pytest.approx(x.mean()) and (lo, hi) == pytest.approx(want)
    rng = np.random.default_rng(0)
    covered = [
        lo <= 1.0 <= hi
        for lo, hi in (mean_interval(rng.normal(1.0, 2.0, 4))[1:] for _ in range(4000))
    ]
    assert abs(np.mean(covered) - 0.95) < 0.015  # 3.5 binomial SDs of 4000 draws
    assert math.isnan(mean_interval(np.array([1.0]))[1])


def test_paired_and_welch_tests_are_scipys():
    x = np.array([1.2, 0.9, 1.5, 1.1])
    y = np.array([0.2, 0.4, 0.1, 0.5])
    d = paired_difference(x, y)
    assert d.p == pytest.approx(sp.ttest_rel(x, y).pvalue) and d.df == 3
    assert (d.lo + d.hi) / 2 == pytest.approx(d.diff)
    w = welch_difference(x, y)
    ref = sp.ttest_ind(x, y, equal_var=False)
    assert w.p == pytest.approx(ref.pvalue) and w.t == pytest.approx(ref.statistic)
    assert w.df == pytest.approx(ref.df)
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(x, y[:3])


def test_a_true_difference_of_one_mdd_is_found_about_80_percent_of_the_time():
    """The MDD's promise, simulated: with n = 8 pairs of noise sd 1, a true difference equal to
    the design's expected MDD is significant at α = 0.05 in ≈ 80% of draws (the t-quantile
    formula is approximate: within 0.75–0.85)."""
    rng = np.random.default_rng(1)
    n, sd = 8, 1.0
    mdd = (sp.t.ppf(0.975, n - 1) + sp.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    hits = [paired_difference(rng.normal(mdd, sd, n), np.zeros(n)).p < 0.05 for _ in range(3000)]
    assert 0.75 < np.mean(hits) < 0.85, np.mean(hits)
    one = paired_difference(rng.normal(0, sd, n), np.zeros(n))
    assert one.mdd > 0 and one.df == n - 1


def test_pearson_interval_is_scipys() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    y = 0.6 * x + rng.normal(size=25)
    c = correlation_interval(x, y, "pearson")
    ref = sp.pearsonr(x, y)
    ci = ref.confidence_interval(0.95)
    assert (c.r, c.p, c.n) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 25)
    assert (c.lo, c.hi) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def test_spearman_interval_by_hand() -> None:
    x = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    y = np.array([2.0, 1, 4, 3, 6, 5, 8, 7, 10, 9])  # rho = 1 - 6·10/(10·99) = 0.93939...
    c = correlation_interval(x, y, "spearman")
    rho = 1 - 6 * 10 / (10 * 99)
    half = 1.959963984540054 * math.sqrt(1.06 / 7)
    assert c.r == pytest.approx(rho)
    assert c.lo == pytest.approx(math.tanh(math.atanh(rho) - half))
    assert c.hi == pytest.approx(math.tanh(math.atanh(rho) + half))
    assert c.p == pytest.approx(sp.spearmanr(x, y).pvalue)
    assert math.isnan(correlation_interval(x[:3], y[:3]).lo)


def test_the_binomial_interval_is_scipys_exact_interval():
    from landscape_hpc.stats import binomial_interval

    for k, n in [(0, 50), (4, 50), (17, 1000), (999, 1000), (1000, 1000), (1, 1)]:
        got = binomial_interval(k, n)
        want = sp.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert (got.lo, got.hi) == pytest.approx((want.low, want.high), abs=1e-12)
        assert got.fraction == k / n and got.lo <= k / n <= got.hi
    want = sp.binomtest(3, 40).proportion_ci(confidence_level=0.99, method="exact")
    got = binomial_interval(3, 40, level=0.99)
    assert (got.lo, got.hi) == pytest.approx((want.low, want.high), abs=1e-12)
    for bad in [(5, 4), (-1, 4), (0, 0)]:
        with pytest.raises(ValueError):
            binomial_interval(*bad)


def test_the_nested_interval_counts_units_not_samples():
    from landscape_hpc.stats import nested_mean_interval

    # three nets with different means, many rays each: the interval of the three net means,
    # much wider than the pooled rays' interval, which treats 60 rays as 60 replicates
    rng = np.random.default_rng(1)
    nets = [m + 0.1 * rng.standard_normal(20) for m in (10.0, 12.0, 15.0)]
    mean, lo, hi = nested_mean_interval(nets)
    assert (mean, lo, hi) == pytest.approx(mean_interval(np.array([g.mean() for g in nets])))
    pooled = mean_interval(np.concatenate(nets))
    assert hi - lo > 5 * (pooled[2] - pooled[1])
    # unequal ray counts: each net weighs the same, unlike the pooled mean
    uneven = [np.array([1.0]), np.array([3.0, 3.0, 3.0, 3.0])]
    assert nested_mean_interval(uneven)[0] == 2.0 != np.concatenate(uneven).mean()
    assert math.isnan(nested_mean_interval([np.array([1.0, 2.0])])[1])
    with pytest.raises(ValueError):
        nested_mean_interval([])


@pytest.mark.parametrize("shift, margin", [(0.0, 1.0), (0.3, 0.5), (1.2, 0.5), (-0.8, 1.0)])
def test_tost_is_two_one_sided_welch_tests(shift, margin):
    """p = the larger of scipy's one-sided Welch tests against ±margin; equivalent at 5% exactly
    when the 90% interval lies inside (−margin, margin)."""
    rng = np.random.default_rng(3)
    x, y = rng.normal(shift, 1.0, 12), rng.normal(0.0, 2.0, 9)
    e = equivalence_test(x, y, margin)
    lower = sp.ttest_ind(x + margin, y, equal_var=False, alternative="greater").pvalue
    upper = sp.ttest_ind(x - margin, y, equal_var=False, alternative="less").pvalue
    assert e.p == pytest.approx(max(lower, upper), rel=1e-10)
    assert (e.p < 0.05) == (-margin < e.lo90 and e.hi90 < margin)
    assert e.diff == pytest.approx(x.mean() - y.mean())


def test_tost_needs_a_positive_margin_and_two_per_group():
    with pytest.raises(ValueError, match="margin"):
        equivalence_test([1.0, 2.0], [1.0, 2.0], 0.0)
    assert math.isnan(equivalence_test([1.0], [1.0, 2.0], 1.0).p)
