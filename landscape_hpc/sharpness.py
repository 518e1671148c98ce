"""How flat a minimum is, as one number: the distance along a direction at which the loss has
risen by a fixed amount above the origin's (Li et al. 2018 compare flatness by eye on 1D
filter-normalised curves, sec. 5; a scalar fixed before running lets nets be compared with
statistics). Larger widths are flatter minima.

    lo, hi = rise_crossings(x, loss, rise=0.1)     # one sampled curve through the origin x = 0

The crossing on each side is the first one walking outward from the origin, linearly
interpolated between the two grid points that bracket it; a side that never reaches the level
on the grid is censored at the grid's end (the width is then a lower bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Crossing:
    """Where the loss first reaches origin + rise on one side, as a distance from the origin."""

    distance: float
    censored: bool  # never reached on the grid: distance is the grid's end (a lower bound)


def _above(values: np.ndarray, level: float) -> np.ndarray:
    return ~np.isfinite(values) | (values >= level)  # a diverged point counts as above


def rise_crossings(x: np.ndarray, loss: np.ndarray, rise: float) -> tuple[Crossing, Crossing]:
    """(negative side, positive side) crossings of loss(0) + rise on a curve sampled at the
    increasing coordinates `x` (which hold 0: the origin)."""
    x, loss = np.asarray(x, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if x.ndim != 1 or x.shape != loss.shape or len(x) < 2:
        raise ValueError(f"x {x.shape} and loss {loss.shape}: need two equal 1D arrays")
    if not np.all(np.diff(x) > 0):
        raise ValueError("x must increase")
    if not rise > 0:
        raise ValueError(f"rise={rise}: must be positive")
    zero = np.flatnonzero(x == 0)
    if len(zero) != 1:
        raise ValueError("x must hold the origin 0 (an odd, symmetric grid does)")
    i0 = int(zero[0])
    if not np.isfinite(loss[i0]):
        raise ValueError(f"the loss at the origin is {loss[i0]}: no level to rise from")
    level = loss[i0] + rise
    return _walk(x[i0::-1], loss[i0::-1], level), _walk(x[i0:], loss[i0:], level)


def _walk(x: np.ndarray, loss: np.ndarray, level: float) -> Crossing:
    """The first crossing along x[0] = 0, x[1], ... (outward on one side)."""
    hit = _above(loss, level)
    if not hit[1:].any():
        return Crossing(float(abs(x[-1])), True)
    j = 1 + int(np.argmax(hit[1:]))  # the first grid point at or above the level
    a, b = abs(x[j - 1]), abs(x[j])
    fa, fb = loss[j - 1], loss[j]
    if not np.isfinite(fb) or fb == fa:
        return Crossing(float(b), False)
    return Crossing(float(a + (level - fa) / (fb - fa) * (b - a)), False)


def mean_width(crossings: list[Crossing]) -> tuple[float, int]:
    """The mean distance over crossings (directions × sides) and how many were censored."""
    if not crossings:
        raise ValueError("no crossings to average")
    return float(np.mean([c.distance for c in crossings])), sum(c.censored for c in crossings)
