"""The block-structure score of a cosine matrix (geometry/block_score.py): two blocks win on a
synthetic two-block matrix (and the split is found), banded wins on a Toeplitz decay; the fits
are the least-squares ones a brute-force search gives."""

from __future__ import annotations

import numpy as np
import pytest

from landscape_hpc.geometry.block_score import banded_fit, block_score, two_block_fit


def _symmetric_noise(n: int, scale: float, seed: int) -> np.ndarray:
    e = scale * np.random.default_rng(seed).standard_normal((n, n))
    e = (e + e.T) / 2
    np.fill_diagonal(e, 0.0)
    return e


def _two_blocks(n: int = 10, split: int = 6, seed: int = 0) -> np.ndarray:
    c = np.full((n, n), 0.1)
    c[:split, :split], c[split:, split:] = 0.85, 0.7
    np.fill_diagonal(c, 1.0)
    return c + _symmetric_noise(n, 0.03, seed)


def _banded(n: int = 10, rho: float = 0.85) -> np.ndarray:
    lag = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    return rho**lag


def test_two_blocks_win_on_a_two_block_matrix_and_the_split_is_found():
    score = block_score(_two_blocks())
    assert score.better == "two blocks" and score.difference > 0.3
    assert score.split == 6
    assert score.within_first == pytest.approx(0.85, abs=0.03)
    assert score.within_second == pytest.approx(0.7, abs=0.03)
    assert score.between == pytest.approx(0.1, abs=0.03)
    assert score.r2_blocks > 0.95 > score.r2_banded
    assert score.pairs == 45 and score.n == 10


def test_banded_wins_on_a_toeplitz_decay():
    score = block_score(_banded())
    assert score.better == "banded" and score.difference < 0
    assert score.r2_banded == pytest.approx(1.0) and score.adj_banded == pytest.approx(1.0)
    assert score.r2_blocks < 0.9
    # with noise too
    noisy = block_score(_banded() + _symmetric_noise(10, 0.02, 3))
    assert noisy.better == "banded"


def test_the_fits_are_the_least_squares_ones():
    c = _two_blocks(n=7, split=3, seed=5) + _symmetric_noise(7, 0.1, 6)
    i, j = np.triu_indices(7, k=1)
    v = c[i, j]
    # brute force: every split, every pair's group mean
    want = []
    for s in range(1, 7):
        g = np.where(j < s, 0, np.where(i >= s, 1, 2))
        want.append(sum(((v[g == k] - v[g == k].mean()) ** 2).sum() for k in set(g)))
    sse, split, _ = two_block_fit(c)
    assert sse == pytest.approx(min(want)) and split == 1 + int(np.argmin(want))
    sse_t, lags = banded_fit(c)
    assert lags == pytest.approx([c[i, j][(j - i) == k].mean() for k in range(1, 7)])
    assert sse_t == pytest.approx(
        sum(((v[j - i == k] - lags[k - 1]) ** 2).sum() for k in range(1, 7))
    )
    score = block_score(c)
    sst = ((v - v.mean()) ** 2).sum()
    assert score.r2_blocks == pytest.approx(1 - min(want) / sst)
    assert score.adj_blocks == pytest.approx(1 - (1 - score.r2_blocks) * 20 / 17)


@pytest.mark.parametrize(
    "bad", [np.eye(3), np.ones((4, 5)), np.triu(np.ones((5, 5))), np.full((5, 5), np.nan)]
)
def test_bad_matrices_are_refused(bad):
    with pytest.raises(ValueError):
        block_score(bad)
