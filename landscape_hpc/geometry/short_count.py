"""Short-direction counts at scale: at one point θ, N random unit directions (N ≥ 1,000), the
loss along each at distances 0..r_max, how many cross the level L(θ) + rise within the radius
`short`, and that count with its Clopper–Pearson exact interval (stats.binomial_interval).

Fort & Jastrzebski (2019) count the random directions in which the loss rises within a short
distance; with 50 directions in 8,970 dimensions a count of 0 and one of 4 are not told apart,
so this counts many directions, through the evaluation engine's batched path: the directions
go in chunks of `chunk`, each chunk one Subspace (origin θ, basis the chunk's directions) and
one Evaluator call over all its (direction, distance) points, the strategy chosen on the first
chunk and pinned for the rest; no Python loop evaluates one direction at a time.

The radius is a rule stated before looking, never tuned on the counts:

    FixedRadius(r)               short = crossed below r
    ReferenceRadius(q)           short = crossed below the q-quantile of the crossing distances
                                 of the same directions at a reference point (e.g. the linear
                                 path's midpoint: q = 0.5 makes half of its directions short)

Directions are the width's rays (geometry/width.py): isotropic Gaussian over the parameters
`keys`, unit length, direction j drawn from stream_seed(seed, j), the same at every point, as
geometry/short_dirs.py draws them. A direction that stays below the level up to r_max has
distance ≥ r_max (crossed False) and is never short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from landscape_hpc import params
from landscape_hpc.config import EngineConfig
from landscape_hpc.engine.evaluate import Evaluator, LossSpec
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.hyperplane import stream_seed
from landscape_hpc.geometry.width import crossing_distance, random_unit_direction
from landscape_hpc.params import ParamDict
from landscape_hpc.stats import Proportion, binomial_interval


@dataclass(frozen=True)
class FixedRadius:
    """A direction is short when it crosses below `radius` (a number fixed in advance)."""

    radius: float

    def describe(self) -> str:
        return f"fixed radius {self.radius:g}"


@dataclass(frozen=True)
class ReferenceRadius:
    """A direction is short when it crosses below the `quantile` of the crossing distances of
    the same directions at a reference point (its own level: its loss + rise)."""

    quantile: float = 0.5

    def describe(self) -> str:
        return f"the {self.quantile:g}-quantile of the distances at the reference point"


Rule = Union[FixedRadius, ReferenceRadius]


# --- pure maths --------------------------------------------------------------------------------


def crossings(
    distances: np.ndarray, losses: np.ndarray, rise: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """(distance (N,), crossed (N,), level) of losses (N, R) at `distances` (R,), the first
    column at r = 0 being the point itself: level = its loss + rise."""
    level = float(losses[0, 0]) + rise
    found = [crossing_distance(distances, row, level) for row in losses]
    return np.array([d for d, _ in found]), np.array([c for _, c in found], dtype=bool), level


def reference_radius(distance: np.ndarray, crossed: np.ndarray, quantile: float) -> float:
    """The `quantile` of the crossing distances (the lower empirical quantile: a distance some
    direction reached), a never-crossing direction counted as +∞; refused when the quantile
    falls on one of those (its distance is only known to be ≥ r_max)."""
    if not 0 < quantile < 1:
        raise UserError(f"quantile={quantile}: must lie in (0, 1), e.g. 0.5 for the median")
    d = np.where(crossed, distance, np.inf)
    value = float(np.quantile(d, quantile, method="lower"))
    if not math.isfinite(value):
        raise UserError(
            f"the {quantile:g}-quantile of the distances at the reference point is beyond "
            f"r_max={float(distance.max()):g} ({int((~crossed).sum())} of {len(d)} directions "
            "never crossed): raise r_max or lower the rise"
        )
    return value


@dataclass
class ShortCount:
    """At one point: per direction its distance, crossed, short (N,); the level, the radius,
    the rule that gave it, and the count of short directions with its exact interval."""

    distance: np.ndarray
    crossed: np.ndarray
    short: np.ndarray
    level: float
    radius: float
    rule: str
    proportion: Proportion

    @property
    def count(self) -> int:
        return self.proportion.k

    @property
    def n(self) -> int:
        return self.proportion.n

    def summary(self) -> str:
        p = self.proportion
        return (
            f"{p.k} of {p.n} directions short ({100 * p.fraction:.3g}%, exact {100 * p.level:g}% "
            f"interval [{100 * p.lo:.3g}%, {100 * p.hi:.3g}%]) within r < {self.radius:.4g} "
            f"({self.rule}); level {self.level:.4g}, median distance "
            f"{float(np.median(self.distance)):.4g}, {int((~self.crossed).sum())} never crossed"
        )


def count_short(
    distance: np.ndarray,
    crossed: np.ndarray,
    level: float,
    radius: float,
    rule: str,
    confidence: float = 0.95,
) -> ShortCount:
    """The directions crossing below `radius`, counted, with the Clopper–Pearson interval."""
    short = crossed & (distance < radius)
    proportion = binomial_interval(int(short.sum()), len(short), confidence)
    return ShortCount(distance, crossed, short, level, float(radius), rule, proportion)


# --- through the engine ------------------------------------------------------------------------


def direction(state: ParamDict, keys: list[str], j: int, seed: int) -> ParamDict:
    """Direction j (unit length over `keys`), as geometry/short_dirs.py and width.py draw it."""
    like = {k: state[k] for k in keys}
    n_params = sum(v.numel() for v in like.values())
    flat = random_unit_direction(n_params, stream_seed(seed, j))
    device = next(iter(like.values())).device
    return params.unflatten(flat.to(device), like, keys)


def ray_losses(
    model: torch.nn.Module,
    state: ParamDict,
    keys: list[str],
    n_directions: int,
    distances: np.ndarray,
    data: Any,
    split: str,
    options: Optional[EngineConfig] = None,
    bn_data: Any = None,
    loss: LossSpec = None,
    seed: int = 0,
    chunk: int = 32,
) -> np.ndarray:
    """The `split` loss (N, R) along directions 0..N−1 from the full state `state`, at
    `distances` (R,): chunk after chunk of directions, each one Evaluator call on the subspace
    (origin state, basis the chunk) at the (B·R, B) coordinates whose row b·R + r is distances[r]
    along direction b. `data`: {split: data} as the engine takes it."""
    if n_directions < 1 or chunk < 1:
        raise UserError(f"n_directions={n_directions}, chunk={chunk}: both must be ≥ 1")
    distances = np.asarray(distances, np.float64)
    n_r = len(distances)
    out = np.empty((n_directions, n_r))
    plan = None
    for start in range(0, n_directions, chunk):
        stop = min(start + chunk, n_directions)
        basis = [direction(state, keys, j, seed) for j in range(start, stop)]
        b = len(basis)
        coords = torch.zeros(b * n_r, b, dtype=torch.float64)
        for i in range(b):
            coords[i * n_r : (i + 1) * n_r, i] = torch.from_numpy(distances)
        evaluator = Evaluator(model, Subspace(state, basis), data, options, bn_data, plan, loss)
        out[start:stop] = evaluator(coords)[split].loss.reshape(b, n_r)
        plan = plan or evaluator.plan  # the strategy chosen on the first chunk, pinned
    return out


def measure(
    model: torch.nn.Module,
    state: ParamDict,
    keys: list[str],
    n_directions: int,
    distances: np.ndarray,
    rise: float,
    rule: Rule,
    data: Any,
    split: str,
    reference: Optional[ParamDict] = None,
    confidence: float = 0.95,
    **engine: Any,
) -> ShortCount:
    """The count at `state` under `rule` (a ReferenceRadius needs the `reference` state; its
    directions are the same ones). `engine`: ray_losses's options, bn_data, loss, seed, chunk."""
    if not rise > 0:
        raise UserError(f"rise={rise}: must be positive (the loss's rise above the point's own)")
    if isinstance(rule, FixedRadius):
        if reference is not None:
            raise UserError("a fixed radius takes no reference point; pass one or the other")
        if not 0 < rule.radius <= distances[-1]:
            raise UserError(
                f"radius={rule.radius}: must lie in (0, r_max={distances[-1]:g}]: a distance "
                "is known only up to r_max"
            )
        radius = rule.radius
    elif isinstance(rule, ReferenceRadius):
        if reference is None:
            raise UserError("the reference rule needs the reference point: pass reference=")
        losses = ray_losses(model, reference, keys, n_directions, distances, data, split, **engine)
        ref_distance, ref_crossed, _ = crossings(distances, losses, rise)
        radius = reference_radius(ref_distance, ref_crossed, rule.quantile)
    else:
        raise TypeError(f"rule={rule!r}: a FixedRadius or a ReferenceRadius")
    losses = ray_losses(model, state, keys, n_directions, distances, data, split, **engine)
    distance, crossed, level = crossings(distances, losses, rise)
    return count_short(distance, crossed, level, radius, rule.describe(), confidence)
