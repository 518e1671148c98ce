"""Two blocks or a banded decay: a number for the structure of a cosine matrix along a tunnel.

Fort & Jastrzebski (2019, sec. 4.2) predict that the deviations δ_i of a tunnel from the linear
path are aligned up to the wedges' intersection and re-oriented after it: the cosine matrix
C_ij = cos(δ_i, δ_j) of the n points is then two blocks (high within each, low between). A
smooth rotation along the path gives a banded matrix instead (C_ij a function of |i − j|). Both
are fitted by least squares to the off-diagonal pairs i < j:

    two blocks   a split s (1 ≤ s < n): one mean within [0, s), one within [s, n), one
                 between; the s with the smallest squared error (3 means and s: 4 parameters)
    banded       one mean per lag |i − j| = 1 .. n − 1 (n − 1 parameters)

Each is scored by R² = 1 − SSE / SST over the pairs and by the adjusted R²
1 − (1 − R²)(m − 1)/(m − p − 1) (m pairs, p parameters besides the overall mean: 3 for two
blocks, n − 2 for banded), which charges the banded model its extra means; `better` is the model
of the larger adjusted R², `difference` = adjusted R²(two blocks) − adjusted R²(banded). Pure
numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BlockScore:
    """The two fits of one cosine matrix: R² and adjusted R² of each, the best split (the
    second block starts at point `split`), its three means, which model fits better and the
    difference of the adjusted R² (two blocks − banded; > 0: two blocks)."""

    n: int
    pairs: int
    r2_blocks: float
    r2_banded: float
    adj_blocks: float
    adj_banded: float
    split: int
    within_first: float
    within_second: float
    between: float
    difference: float
    better: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _pairs(cosines: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.asarray(cosines, np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"a cosine matrix is square; got shape {c.shape}")
    n = c.shape[0]
    if n < 4:
        raise ValueError(f"{n} points: at least 4 are needed to tell two blocks from a band")
    if not np.allclose(c, c.T, equal_nan=True) or not np.isfinite(c).all():
        raise ValueError("the cosine matrix must be symmetric and finite")
    i, j = np.triu_indices(n, k=1)
    return i, j, c[i, j]


def _sse_of_groups(values: np.ndarray, groups: np.ndarray) -> tuple[float, np.ndarray]:
    """The squared error of each value from its group's mean, and the means (by group id)."""
    ids = np.unique(groups)
    means = np.array([values[groups == g].mean() for g in ids])
    fitted = means[np.searchsorted(ids, groups)]
    return float(((values - fitted) ** 2).sum()), means


def two_block_fit(cosines: np.ndarray) -> tuple[float, int, tuple[float, float, float]]:
    """(SSE, split s, (mean within [0, s), within [s, n), between)) of the best two-block model
    (NaN for a block of one point, which has no pair within it)."""
    i, j, v = _pairs(cosines)
    n = np.asarray(cosines).shape[0]
    best = (np.inf, 0, (np.nan, np.nan, np.nan))
    for s in range(1, n):
        groups = np.where(j < s, 0, np.where(i >= s, 1, 2))  # first, second, between
        sse, _ = _sse_of_groups(v, groups)
        if sse < best[0]:  # the first of equal splits
            means = tuple(float(v[groups == g].mean()) if (groups == g).any() else np.nan
                          for g in (0, 1, 2))  # fmt: skip
            best = (sse, s, means)
    return best


def banded_fit(cosines: np.ndarray) -> tuple[float, np.ndarray]:
    """(SSE, the mean cosine at each lag 1 .. n − 1) of the banded (Toeplitz) model."""
    i, j, v = _pairs(cosines)
    return _sse_of_groups(v, j - i)


def _adjusted(r2: float, m: int, p: int) -> float:
    return float(1 - (1 - r2) * (m - 1) / (m - p - 1)) if m - p - 1 > 0 else float("nan")


def block_score(cosines: np.ndarray) -> BlockScore:
    """Both fits of the cosine matrix (n, n) and which one explains it better (see the module)."""
    i, j, v = _pairs(cosines)
    n, m = np.asarray(cosines).shape[0], len(v)
    sst = float(((v - v.mean()) ** 2).sum())
    sse_b, split, (w1, w2, between) = two_block_fit(cosines)
    sse_t, _ = banded_fit(cosines)
    r2 = lambda sse: 1.0 - sse / sst if sst > 0 else float("nan")  # noqa: E731
    r2_b, r2_t = r2(sse_b), r2(sse_t)
    adj_b, adj_t = _adjusted(r2_b, m, 3), _adjusted(r2_t, m, n - 2)
    diff = adj_b - adj_t  # n ≥ 4: both defined (m − p − 1 ≥ 2)
    better = "two blocks" if diff > 0 else "banded" if diff < 0 else "tie"
    return BlockScore(n, m, r2_b, r2_t, adj_b, adj_t, split, w1, w2, between, float(diff), better)
