"""A grid range that shows the basin: where the loss along one direction first reaches a level.

A fixed range such as [-1, 1] shows a flat plateau for one model and one wall of the basin for
another. Along a direction d, f(c) = L(θ₀ + c·d); the span is the first coordinate on each side
where f reaches a level above the origin's loss, found in two steps:

1. outward geometrically, both sides in one batch: c = ±start·2^i (i = 0, 1, ...) up to ±max_coord,
   so the bracket [c_{i-1}, c_i] of the first crossing is found in log2(max/start) points a side;
2. inward by k-section: `per_round` points inside each side's bracket per batch (one batch for
   both sides), keeping the sub-bracket of the first crossing, until it is narrower than `tol`.

The level (`parse_level`): "plus:δ" is the origin's loss + δ (the default, δ = 1: where the
loss has risen by one nat, whatever the minimum's own loss; a ratio of a near-zero training
loss would draw only the bottom of the basin) or "ratio:k", the origin's loss × k. A side that
never reaches the level within max_coord ends there, with a warning. A non-finite loss (a
diverged point) counts as above the level. Pure: f is any callable on coordinates (K,) → losses
(K,); api/auto_range.py evaluates it through the engine.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from landscape_hpc.errors import UserError

log = logging.getLogger(__name__)

#: f: coordinates along the direction (K,) -> losses (K,)
LossAlong = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Level:
    """The loss a span ends at: origin + value ("plus") or origin × value ("ratio")."""

    kind: str
    value: float

    def of(self, origin_loss: float) -> float:
        return origin_loss + self.value if self.kind == "plus" else origin_loss * self.value

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"

    def describe(self, split: str = "train") -> str:
        """In words, for a figure: "train loss reaches the origin's + 1" or "... × 2"."""
        op = "+" if self.kind == "plus" else "×"
        return f"{split} loss reaches the origin's {op} {self.value:g}"


def parse_level(spec: str | Level) -> Level:
    """ "plus:1.0" or "ratio:2" as a Level; a UserError naming the forms for anything else."""
    if isinstance(spec, Level):
        return spec
    kind, _, value = str(spec).partition(":")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if kind == "plus" and number > 0 or kind == "ratio" and number > 1:
        return Level(kind, number)
    raise UserError(
        f"auto level {spec!r} is not 'plus:δ' (origin loss + δ, δ > 0) or 'ratio:k' (origin "
        "loss × k, k > 1); e.g. level='plus:1.0'"
    )


@dataclass
class Span:
    """Where the loss along one direction reaches `level`: lo < 0 < hi, each the middle of a
    bracket narrower than tol around the first crossing. lo_capped/hi_capped: that side never
    reached it within max_coord (the bound is ±max_coord)."""

    lo: float
    hi: float
    level: float
    origin_loss: float
    lo_capped: bool
    hi_capped: bool
    evaluations: int  # points of f evaluated, the origin included

    def axis(self, points: int = 51, margin: float = 0.1) -> tuple[float, float, int]:
        """A grid axis (min, max, num) over the span widened by `margin` × its width a side."""
        width = self.hi - self.lo
        return (self.lo - margin * width, self.hi + margin * width, int(points))


def _above(values: np.ndarray, level: float) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return ~np.isfinite(values) | (values >= level)


def find_span(
    f: LossAlong,
    level: str | Level = "plus:1.0",
    start: float = 0.05,
    max_coord: float = 10.0,
    tol: float = 1e-3,
    per_round: int = 7,
    name: str = "direction",
) -> Span:
    """The span along one direction where f first reaches the level on each side (module
    docstring); f is called on batches of coordinates, the first batch [0]."""
    if not 0 < start <= max_coord or not tol > 0 or per_round < 1:
        raise UserError(
            f"auto range: need 0 < start ({start:g}) <= max_coord ({max_coord:g}), tol > 0 "
            f"({tol:g}) and per_round >= 1 ({per_round})"
        )
    lvl = parse_level(level)
    origin = float(np.asarray(f(np.zeros(1)), dtype=np.float64)[0])
    if not np.isfinite(origin):
        raise UserError(f"auto range: the loss at the origin is {origin}; nothing to bracket")
    target = lvl.of(origin)
    steps = start * 2.0 ** np.arange(int(np.ceil(np.log2(max_coord / start))) + 1)
    steps = np.minimum(steps, max_coord)
    steps = steps[: int(np.searchsorted(steps, max_coord)) + 1]  # (S,) ends at max_coord
    outward = _above(f(np.concatenate([steps, -steps])), target)  # (2S,)
    evaluations = 1 + 2 * len(steps)
    brackets, capped = [], []
    for side in (outward[: len(steps)], outward[len(steps) :]):
        if not side.any():
            brackets.append((max_coord, max_coord))
            capped.append(True)
            continue
        i = int(np.argmax(side))  # the first step at or above the level
        brackets.append((0.0 if i == 0 else float(steps[i - 1]), float(steps[i])))
        capped.append(False)
    # k-section of both sides at once: (below, above) distances from the origin
    while any(hi - lo > tol for lo, hi in brackets):
        open_sides = [k for k, (lo, hi) in enumerate(brackets) if hi - lo > tol]
        inner = {k: np.linspace(*brackets[k], per_round + 2)[1:-1] for k in open_sides}
        coords = np.concatenate([inner[k] * (1.0 if k == 0 else -1.0) for k in open_sides])
        above = _above(f(coords), target)
        evaluations += len(coords)
        for n, k in enumerate(open_sides):
            hit = above[n * per_round : (n + 1) * per_round]
            edges = np.concatenate([[brackets[k][0]], inner[k], [brackets[k][1]]])
            j = int(np.argmax(hit)) if hit.any() else per_round  # first inner point above
            brackets[k] = (float(edges[j]), float(edges[j + 1]))
    hi, lo = sum(brackets[0]) / 2, -sum(brackets[1]) / 2  # within tol / 2 of the crossings
    for capped_side, where in zip(capped, ("+", "-")):
        if capped_side:
            warnings.warn(
                f"auto range: the loss along {name} stays below {target:.4g} ({lvl}) up to "
                f"{where}{max_coord:g}; that side of the span ends there (raise max_coord or "
                "lower the level)",
                stacklevel=2,
            )
    log.info(
        "auto range along %s: level %.4g (%s of origin loss %.4g), span [%.4g, %.4g] after %d "
        "evaluations",
        name, target, lvl, origin, lo, hi, evaluations,
    )  # fmt: skip
    return Span(lo, hi, target, origin, capped[1], capped[0], evaluations)
