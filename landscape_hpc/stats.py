"""The statistics a finding is reported with: a mean with its t interval over independent units
(trained nets, pairs of nets, seeds — never rays or cells), and the difference of two designs
with its interval, its test and the smallest difference the design can detect.

    mean_interval(x)            mean and 95% t interval (n − 1 degrees of freedom)
    paired_difference(x, y)     x − y over matched units: paired t-test (scipy.stats.ttest_rel)
    welch_difference(x, y)      x − y over two independent groups: Welch's t-test (unequal
                                variances, Welch–Satterthwaite degrees of freedom)
    nested_mean_interval(g)     the mean over units of samples nested in them (rays per net):
                                each unit's samples averaged first, the t interval over units
    binomial_interval(k, n)     a proportion k/n with its Clopper–Pearson exact interval

The smallest detectable difference (MDD) at power 1 − β and two-sided level α is
(t_{1−α/2, df} + t_{1−β, df}) · SE, the usual normal-approximation formula with t quantiles:
a true difference of that size is found significant with probability ≈ 1 − β.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Difference:
    """x − y: its mean, the 95% interval [lo, hi], the test's t and two-sided p, the degrees of
    freedom, and the smallest difference detectable at 80% power (mdd). NaN where n < 2."""

    diff: float
    lo: float
    hi: float
    t: float
    p: float
    df: float
    mdd: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of independent values and its t interval; NaN bounds for n < 2."""
    values = np.asarray(values, np.float64)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def _mdd(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def paired_difference(x: np.ndarray, y: np.ndarray) -> Difference:
    """x − y over matched units (x[i] and y[i] measured on unit i)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values need one shape, got {x.shape} and {y.shape}")
    d = x - y
    n = len(d)
    mean, lo, hi = mean_interval(d)
    if n < 2:
        return Difference(mean, lo, hi, math.nan, math.nan, math.nan, math.nan)
    test = stats.ttest_rel(x, y)
    se = d.std(ddof=1) / math.sqrt(n)
    return Difference(
        mean, lo, hi, float(test.statistic), float(test.pvalue), n - 1, _mdd(se, n - 1)
    )


def welch_difference(x: np.ndarray, y: np.ndarray) -> Difference:
    """mean(x) − mean(y) over two independent groups (Welch)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Difference(diff, *(math.nan,) * 6)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    test = stats.ttest_ind(x, y, equal_var=False)
    half = stats.t.ppf(0.975, df) * se
    return Difference(
        diff, diff - half, diff + half, float(test.statistic), float(test.pvalue), df, _mdd(se, df)
    )


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided Welch tests (TOST) of |mean(x) − mean(y)| < margin, the margin fixed
    before the data: p is the larger one-sided p; equivalent at level α when p < α, i.e. when
    the 90% interval [lo90, hi90] of the difference lies inside (−margin, margin)."""

    diff: float
    margin: float
    lo90: float
    hi90: float
    p: float
    df: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def equivalence_test(x: np.ndarray, y: np.ndarray, margin: float) -> Equivalence:
    """TOST for independent groups with Welch's standard error and degrees of freedom: H0
    diff ≤ −margin and H0 diff ≥ margin, each rejected by a one-sided t test."""
    if not margin > 0:
        raise ValueError(f"margin={margin!r}: give a positive margin, fixed before the data")
    d = welch_difference(x, y)
    if math.isnan(d.df):
        return Equivalence(d.diff, margin, math.nan, math.nan, math.nan, math.nan)
    se = (d.hi - d.lo) / (2 * stats.t.ppf(0.975, d.df))
    p_lower = stats.t.sf((d.diff + margin) / se, d.df)  # H0: diff <= -margin
    p_upper = stats.t.cdf((d.diff - margin) / se, d.df)  # H0: diff >= margin
    half = stats.t.ppf(0.95, d.df) * se
    return Equivalence(
        d.diff, margin, d.diff - half, d.diff + half, float(max(p_lower, p_upper)), d.df
    )


@dataclass(frozen=True)
class Correlation:
    """A correlation over n independent units with its 95% interval [lo, hi] (Fisher's z) and
    its two-sided p (scipy's test). NaN where n < 4."""

    method: str
    r: float
    lo: float
    hi: float
    p: float
    n: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def correlation_interval(
    x: np.ndarray, y: np.ndarray, method: str = "spearman", level: float = 0.95
) -> Correlation:
    """Pearson's or Spearman's correlation of x and y with a Fisher-z interval: z = atanh(r) ±
    q·SE, SE = 1/√(n − 3) (Pearson) or √(1.06/(n − 3)) (Spearman; Fieller, Hartley & Pearson
    1957); the p of scipy.stats.pearsonr / spearmanr."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x {x.shape} and y {y.shape}: need two equal 1D arrays")
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method={method!r}: pearson or spearman")
    n = len(x)
    if n < 4:
        return Correlation(method, math.nan, math.nan, math.nan, math.nan, n)
    test = stats.pearsonr(x, y) if method == "pearson" else stats.spearmanr(x, y)
    r, p = float(test.statistic), float(test.pvalue)
    se = math.sqrt((1.0 if method == "pearson" else 1.06) / (n - 3))
    q = float(stats.norm.ppf(0.5 + level / 2))
    z = math.atanh(max(min(r, 1 - 1e-15), -1 + 1e-15))
    return Correlation(method, r, math.tanh(z - q * se), math.tanh(z + q * se), p, n)


def nested_mean_interval(
    groups: Sequence[np.ndarray], level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lo, hi) over independent units holding several samples each (the rays of each
    trained net): each unit's samples are averaged first, then the t interval of those means
    over units (n_units − 1 degrees of freedom). The samples of one unit are not independent
    replicates (pseudo-replication), so they never count as units; NaN bounds for one unit."""
    groups = [np.asarray(g, np.float64).ravel() for g in groups]
    if not groups or any(g.size == 0 for g in groups):
        raise ValueError("nested_mean_interval needs at least one unit, each with ≥ 1 sample")
    return mean_interval(np.array([g.mean() for g in groups]), level)


@dataclass(frozen=True)
class Proportion:
    """k of n with the Clopper–Pearson exact interval [lo, hi] at `level`."""

    k: int
    n: int
    fraction: float
    lo: float
    hi: float
    level: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def binomial_interval(k: int, n: int, level: float = 0.95) -> Proportion:
    """The proportion k/n and its Clopper–Pearson ("exact") interval: the Beta quantiles
    lo = B⁻¹(α/2; k, n − k + 1) (0 at k = 0), hi = B⁻¹(1 − α/2; k + 1, n − k) (1 at k = n),
    α = 1 − level; as scipy.stats.binomtest(k, n).proportion_ci(method="exact")."""
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"k={k}, n={n}: need n ≥ 1 and 0 ≤ k ≤ n")
    if not 0 < level < 1:
        raise ValueError(f"level={level}: must lie in (0, 1)")
    alpha = 1.0 - level
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Proportion(k, n, k / n, lo, hi, level)
