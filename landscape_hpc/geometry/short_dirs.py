"""Short directions along tunnels and m-connectors (Fort & Jastrzebski 2019, fig. 4).

At a point θ, `n_directions` random unit directions d_j (isotropic Gaussian, unit length over all
parameters: the width experiment's rays, drawn from `seed` and j, the same at every point so
points compare) and the loss at distances r in [0, r_max] along each, L(θ + r·d_j). A
direction's distance is the first r where the loss exceeds the level L(θ) + threshold, linearly
interpolated between grid distances (width.crossing_distance); it is short when that distance is
below `short`. A direction that stays below the level up to r_max has distance ≥ r_max
(crossed = 0) and is never short.

Interpretation (the paper counts, along tunnels, the random directions in which the loss rises
within a short distance): the level is relative to the point's own loss, as the width's
`above_optimum`, so a point high on the linear path and a low point of the tunnel are compared
by how steep the landscape is around each, not by how high they are. Measured at the optima, at
every optimised point of the tunnel or connector, and at the same positions on the linear path
or simplex (the paper's contrast).

Part of tunnel and connector (`short_dirs.*`, off with the default n_directions=0): after the
points are optimised, one pool task per point and chunk of CHUNK directions, its directions'
distances evaluated together by one engine call in the hull's subspace extended by the chunk's
directions (origin θ_1, basis [θ_j − θ_1, δ_k, d_j ...]), so results do not depend on the number
of ranks and a thousand directions per point are practical. Writes short_dirs.csv (a row per point
and direction) and short_dirs.png.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from landscape_hpc import parallel, params
from landscape_hpc.config import HullConfig, ShortDirsConfig
from landscape_hpc.engine.evaluate import evaluate_points
from landscape_hpc.engine.flat import LossFn
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import (
    MAX_EVALUATIONS,
    MAX_PATH_POINTS,
    UserError,
    check_at_most,
    check_choice,
)
from landscape_hpc.geometry.hull import HullJob
from landscape_hpc.geometry.hyperplane import stream_seed
from landscape_hpc.geometry.short_count import reference_radius
from landscape_hpc.geometry.width import crossing_distance, random_unit_direction
from landscape_hpc.params import ParamDict

_JOB_KEY = "short_dirs_job"
#: how the radius below which a direction is short is set (short_dirs.radius)
RADIUS_RULES: tuple[str, ...] = ("fixed", "linear_centre")


# --- pure maths --------------------------------------------------------------------------------


@dataclass
class PointDirections:
    """At one point: per direction its distance (N,), whether it crossed (N,), whether it is
    short (N,); the level and the losses (N, R) along the directions."""

    distance: np.ndarray
    crossed: np.ndarray
    short: np.ndarray
    level: float
    losses: np.ndarray

    @property
    def n_short(self) -> int:
        return int(self.short.sum())


def measure_point(
    distances: np.ndarray, losses: np.ndarray, own_loss: float, threshold: float, short: float
) -> PointDirections:
    """The directions of one point from their losses (N, R) at `distances` (R,): level = the
    point's own loss + threshold; short = crossed below `short`."""
    level = own_loss + threshold
    found = [crossing_distance(distances, row, level) for row in losses]
    distance = np.array([d for d, _ in found])
    crossed = np.array([c for _, c in found], dtype=bool)
    return PointDirections(distance, crossed, crossed & (distance < short), level, losses)


def short_directions(
    loss_fn: LossFn,
    theta: Tensor,
    n_directions: int,
    distances: np.ndarray,
    threshold: float,
    short: float,
    seed: int = 0,
) -> PointDirections:
    """The plain reference on a flat loss: the directions of point θ, direction j drawn from
    stream_seed(seed, j) as the command does."""
    losses = np.zeros((n_directions, len(distances)))
    with torch.no_grad():
        for j in range(n_directions):
            d = random_unit_direction(theta.numel(), stream_seed(seed, j), theta.dtype)
            losses[j] = [float(loss_fn(theta + float(r) * d)) for r in distances]
        own = float(loss_fn(theta))
    return measure_point(distances, losses, own, threshold, short)


# --- through the engine, over the pool ---------------------------------------------------------


def check_config(cfg: ShortDirsConfig, splits: list[str]) -> None:
    """The short_dirs.* keys (checked even when off, so a typo is not silently kept)."""
    if cfg.n_directions < 0:
        raise UserError(f"short_dirs.n_directions={cfg.n_directions} must be ≥ 0 (0 = off)")
    if not cfg.r_max > 0:
        raise UserError(f"short_dirs.r_max={cfg.r_max} must be positive")
    if cfg.n_distances < 2:
        raise UserError(f"short_dirs.n_distances={cfg.n_distances} must be at least 2")
    why = "each is a full evaluation of the loss over the data, along every direction"
    check_at_most("short_dirs.n_distances", cfg.n_distances, MAX_PATH_POINTS, why)
    evaluations = cfg.n_directions * cfg.n_distances
    if evaluations > MAX_EVALUATIONS:
        raise UserError(
            f"short_dirs.n_directions × short_dirs.n_distances = {evaluations} evaluations at "
            f"every point, over the limit of {MAX_EVALUATIONS}; give fewer of either"
        )
    if not cfg.threshold > 0:
        raise UserError(
            f"short_dirs.threshold={cfg.threshold} must be positive (the rise of the loss above "
            "the point's own)"
        )
    check_choice("short_dirs.radius", cfg.radius, RADIUS_RULES)
    if cfg.radius == "linear_centre" and not 0 < cfg.quantile < 1:
        raise UserError(
            f"short_dirs.quantile={cfg.quantile} must lie in (0, 1) (0.5: the median distance at "
            "the linear centre)"
        )
    if cfg.radius == "fixed" and not 0 < cfg.short <= cfg.r_max:
        raise UserError(
            f"short_dirs.short={cfg.short} must be in (0, r_max={cfg.r_max}]: a distance is "
            "known only up to r_max"
        )
    if cfg.n_directions and cfg.split not in splits:
        raise UserError(
            f"short_dirs.split={cfg.split} is not one of splits={list(splits)} (the splits "
            "evaluated); add it there or pick one of them"
        )


@dataclass
class ShortDirsJob:
    """What every rank needs: the hull (its subspace set), the points {kind: (n_k, D) hull
    coordinates}, the distances (R,)."""

    hull: HullJob
    points: dict[str, np.ndarray]
    distances: np.ndarray
    split: str
    seed: int

    def direction(self, j: int) -> ParamDict:
        o = self.hull.optima
        like = {k: o.states[0][k] for k in o.keys}
        flat = random_unit_direction(self.hull.n_params, stream_seed(self.seed, j))
        return params.unflatten(flat.to(o.problem.device), like, o.keys)

    def rays(self, kind: str, i: int, start: int, stop: int) -> np.ndarray:
        """The losses (B, R) along directions start..stop − 1 from point i of `kind`, in one
        engine call: the hull's subspace extended by the B directions, at the (B·R, d + B)
        coordinates whose row b·R + r is the point's hull coordinates and distances[r] along
        direction start + b."""
        hull, problem = self.hull, self.hull.optima.problem
        basis = [*hull.subspace.basis, *(self.direction(j) for j in range(start, stop))]
        b, n_r, d = stop - start, len(self.distances), hull.subspace.dim
        coords = torch.zeros(b * n_r, d + b, dtype=torch.float64)
        coords[:, :d] = torch.from_numpy(np.asarray(self.points[kind][i], np.float64))
        for m in range(b):
            coords[m * n_r : (m + 1) * n_r, d + m] = torch.from_numpy(self.distances)
        split = problem.splits[self.split]
        data = {self.split: (split.inputs, split.labels)}
        bn_data = problem.splits["train"].inputs
        subspace = Subspace(hull.subspace.origin, basis)
        metrics = evaluate_points(problem.model, subspace, coords, data, hull.options, bn_data)
        return metrics[self.split].loss.reshape(b, n_r)

    def ray(self, kind: str, i: int, j: int) -> np.ndarray:
        """The loss (R,) along direction j from point i of `kind`."""
        return self.rays(kind, i, j, j + 1)[0]


#: directions per pool task, evaluated together in one engine call (one subspace)
CHUNK = 32


def _rays_task(task: tuple[str, int, int, int]) -> np.ndarray:
    return parallel.worker_state(_JOB_KEY).rays(*task)


@dataclass
class ShortDirsResult:
    """Per kind of point ("optimum", "linear", "tunnel"|"connector"), each point's directions."""

    distances: np.ndarray
    threshold: float
    short: float
    split: str
    points: dict[str, list[PointDirections]]
    rule: str = "fixed"  # how `short` was set: fixed, or the linear centre's quantile

    def counts(self, kind: str) -> np.ndarray:
        return np.array([p.n_short for p in self.points[kind]])


def probe(
    cfg: ShortDirsConfig, comm: Any, points: dict[str, np.ndarray], hull: HullJob
) -> Optional[ShortDirsResult]:
    """The directions at `points` {kind: (n_k, D) hull coordinates}, on every rank once the
    hull's subspace is set there (run_hull's `probe`); the result on rank 0."""
    distances = np.linspace(0.0, cfg.r_max, cfg.n_distances)
    job = ShortDirsJob(hull, points, distances, cfg.split, cfg.seed)
    n = cfg.n_directions
    losses = {k: np.zeros((len(c), n, len(distances))) for k, c in points.items()}
    chunks = [(j, min(j + CHUNK, n)) for j in range(0, n, CHUNK)]
    tasks = [(k, i, *c) for k, p in points.items() for i in range(len(p)) for c in chunks]
    describe = lambda t: f"short directions {t[2]}..{t[3] - 1} at {t[0]} point {t[1]}"  # noqa: E731
    with parallel.worker_pool(_JOB_KEY, job):
        for result in parallel.run_tasks(comm, _rays_task, tasks, describe=describe):
            kind, i, start, stop = result.task
            losses[kind][i, start:stop] = result.value
    if comm.Get_rank() != 0:
        return None
    return measure_all(cfg, distances, losses, points, len(hull.optima.states))


def centre_index(linear: np.ndarray, m: int) -> int:
    """The linear point nearest the centre of the m optima's simplex (λ = 1/m each; a point's
    first m − 1 hull coordinates are λ_2..λ_m): the tunnel's t nearest 0.5, the first of two
    equally near."""
    return int(np.argmin(np.linalg.norm(linear[:, : m - 1] - 1.0 / m, axis=1)))


def measure_all(
    cfg: ShortDirsConfig,
    distances: np.ndarray,
    losses: dict[str, np.ndarray],
    points: dict[str, np.ndarray],
    m: int,
) -> ShortDirsResult:
    """Every point's directions from their losses {kind: (n_k, N, R)}, the radius by cfg's
    rule: `short` (fixed), or (linear_centre) the `quantile` of the distances at the linear
    point nearest the simplex's centre, fixed before any point is counted."""
    short, rule = cfg.short, "fixed"
    if cfg.radius == "linear_centre":
        i = centre_index(points["linear"], m)
        ref = losses["linear"][i]
        found = measure_point(distances, ref, float(ref[0, 0]), cfg.threshold, cfg.r_max)
        short = reference_radius(found.distance, found.crossed, cfg.quantile)
        where = ", ".join(f"{x:.3g}" for x in points["linear"][i][: m - 1])
        rule = f"the {cfg.quantile:g}-quantile of the distances at the linear point ({where})"
    # every direction starts at the point itself: its loss is the first one's at r = 0
    measured = {
        k: [measure_point(distances, row, float(row[0, 0]), cfg.threshold, short) for row in v]
        for k, v in losses.items()
    }
    return ShortDirsResult(distances, cfg.threshold, short, cfg.split, measured, rule)


def enabled(cfg: HullConfig) -> bool:
    return cfg.short_dirs.n_directions > 0


# --- reporting ---------------------------------------------------------------------------------


def write_csv(
    result: ShortDirsResult, path: Path, positions: dict[str, np.ndarray], names: list[str]
) -> Path:
    """One row per point and direction: where (kind), the point's index among its kind and its
    position (`names`: e.g. t, or λ_1..λ_m), the direction, its distance, crossed, short, the
    point's loss and level, the largest loss along the direction."""
    with open(path, "w") as f:
        f.write(
            f"where,point,{','.join(names)},direction,distance,crossed,short,loss_at_point,"
            "level,max_loss\n"
        )
        for kind, found in result.points.items():
            for i, p in enumerate(found):
                where = ",".join(f"{x:.6g}" for x in positions[kind][i])
                for j in range(len(p.distance)):
                    f.write(
                        f"{kind},{i},{where},{j},{p.distance[j]:.6g},{int(p.crossed[j])},"
                        f"{int(p.short[j])},{p.losses[j, 0]:.6g},{p.level:.6g},"
                        f"{np.nanmax(p.losses[j]):.6g}\n"
                    )
    return path


def summarize(result: ShortDirsResult) -> str:
    n = len(next(iter(result.points.values()))[0].distance)
    r_max = result.distances[-1]
    lines = [
        f"  short directions ({n} random unit directions per point, {result.split} loss above "
        f"the point's own + {result.threshold:g} within r < {result.short:.4g} ({result.rule}); "
        f"r ≤ {r_max:g}):"
    ]
    for kind, found in result.points.items():
        counts = result.counts(kind)
        distance = np.concatenate([p.distance for p in found])
        never = int(sum((~p.crossed).sum() for p in found))
        text = (
            f"    {kind}: short per point {', '.join(map(str, counts))} (mean "
            f"{counts.mean():.3g} of {n}); median distance {np.median(distance):.3g}"
        )
        if never:
            text += f", {never} of {len(distance)} never crossed (≥ {r_max:g})"
        lines.append(text)
    return "\n".join(lines)


def plot(result: ShortDirsResult, x: dict[str, np.ndarray], xlabel: str, out_dir: Path) -> Path:
    """short_dirs.png; x: each kind's points' positions on the figure's axis."""
    from landscape_hpc.geometry import figures

    return figures.plot_short_dirs(
        x,
        {k: result.counts(k) for k in result.points},
        {k: np.stack([p.distance for p in v]) for k, v in result.points.items()},
        {k: np.stack([p.crossed for p in v]) for k, v in result.points.items()},
        result.short,
        xlabel,
        out_dir / "short_dirs.png",
    )
