"""Linear mode connectivity as a number: the loss barrier on the straight line between two nets.

Frankle et al. 2020 (Linear Mode Connectivity and the Lottery Ticket Hypothesis, sec. 2): with
θ(t) = (1−t)·θa + t·θb, the barrier is

    B = max over t in [0, 1] of  L(θ(t)) − ((1−t)·L(θa) + t·L(θb)),

the height of the loss above the chord between the end losses; B ≈ 0 means the two nets are
linearly connected. Evaluated on the grid's points t in [0, 1] (a finer grid, a tighter max);
`interpolate` and `directions.kind=models` (1D) report it per split. Also the perplexity of a
per-token loss, exp(mean loss).
"""

from __future__ import annotations

import math

import numpy as np

#: how close a grid point must lie to t = 0 and t = 1 to stand for the end nets
_END_TOL = 1e-9


def loss_barrier(t: np.ndarray, losses: np.ndarray) -> tuple[float, float]:
    """(barrier, the t where it is reached) of losses (n,) at points t (n,) of the line; NaN
    when the grid lacks t = 0 or t = 1 or a point in [0, 1] is not computed (NaN)."""
    t, losses = np.asarray(t, np.float64), np.asarray(losses, np.float64)
    ends = [np.flatnonzero(np.abs(t - end) <= _END_TOL) for end in (0.0, 1.0)]
    if any(len(e) == 0 for e in ends):
        return math.nan, math.nan
    inside = (t >= -_END_TOL) & (t <= 1 + _END_TOL)
    if not np.isfinite(losses[inside]).all():
        return math.nan, math.nan
    la, lb = losses[ends[0][0]], losses[ends[1][0]]
    heights = losses[inside] - ((1 - t[inside]) * la + t[inside] * lb)  # above the chord
    best = int(np.argmax(heights))
    return float(heights[best]), float(t[inside][best])


def perplexity(mean_loss: np.ndarray) -> np.ndarray:
    """exp of a mean per-token loss (nats): the perplexity of a language model."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(mean_loss, np.float64))
