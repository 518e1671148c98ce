"""Radial tunnel width around optima (Fort & Jastrzebski 2019, sec. 4.4).

From an optimum θ*, the loss along `n_directions` random directions d at distances r in
[0, r_max]: L(θ* + r·d). The width along a ray is the first distance where the loss exceeds the
threshold level, linearly interpolated between the two grid distances around the crossing.
Several optima (e.g. nets trained with different lr / weight_decay by `landscape_hpc.train`) are
compared in one figure: loss against distance, and the widths as bars.

    python -m landscape_hpc.geometry width optima=[runs/lr0.1/model.pt,runs/lr0.01/model.pt] \\
        labels=[lr0.1,lr0.01] model=mlp threshold=1.0 r_max=40
    mpirun -n 4 python -m landscape_hpc.geometry width optima=[a.pt,b.pt] model=resnet20 \\
        dataset=cifar10 dataset.root=~/data n_directions=100 device=cuda

Choices (keys): `directions=unit` draws isotropic Gaussian directions normalised to unit length
over all parameters, so r is a Euclidean distance in weight space (the paper's rays);
`directions=filter` uses Li et al.'s filter-normalised directions instead (biases and BN
parameters left out), r then counts filter norms of the optimum itself, which makes nets of
different weight scale (weight decay) comparable. `threshold_kind=above_optimum` (default): the
level is the optimum's own loss + threshold; `absolute`: the level is threshold itself. The
same rays (seeded by `seed` and the ray index) are used from every optimum.

A ray that never exceeds the level up to r_max gets width r_max as a lower bound, and the
summary says so; an optimum where no ray crosses is an error (after the files are written).
One pool task per (optimum, ray); each evaluates the ray's distances together through the
engine (a 1D subspace: origin θ*, basis d). Writes width.csv (one row per ray),
width_curves.csv (loss and accuracy per ray and distance) and width.png to out_dir.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from landscape_hpc import parallel, params
from landscape_hpc.config import EngineConfig, WidthConfig
from landscape_hpc.directions import normalize_direction
from landscape_hpc.engine.evaluate import check_engine, evaluate_points
from landscape_hpc.engine.flat import LossFn
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import (
    MAX_EVALUATIONS,
    MAX_PATH_POINTS,
    UserError,
    check_at_most,
    check_choice,
)
from landscape_hpc.geometry import width_nets
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.hull import Optima, load_optima
from landscape_hpc.geometry.hyperplane import stream_seed
from landscape_hpc.geometry.width_files import write_width
from landscape_hpc.params import ParamDict

DIRECTION_KINDS: tuple[str, ...] = ("unit", "filter")
THRESHOLD_KINDS: tuple[str, ...] = ("above_optimum", "absolute")
_JOB_KEY = "width_job"


# --- pure maths --------------------------------------------------------------------------------


def random_unit_direction(n_params: int, seed: int, dtype=torch.float32) -> Tensor:
    """An isotropic Gaussian direction of length 1 (P,), drawn on the CPU from `seed`."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n_params, generator=g, dtype=torch.float64)
    return (d / d.norm()).to(dtype)


def crossing_distance(
    distances: np.ndarray, losses: np.ndarray, level: float
) -> tuple[float, bool]:
    """(width, crossed): the first distance where the loss exceeds `level`, interpolated linearly
    between the grid distances around it; (distances[-1], False) when it never does. A
    non-finite loss (diverged) counts as above the level at its distance."""
    above = ~(losses <= level)  # NaN counts as above
    if not above.any():
        return float(distances[-1]), False
    j = int(np.argmax(above))
    if j == 0:
        return float(distances[0]), True
    lo, hi = losses[j - 1], losses[j]
    if not np.isfinite(hi):
        return float(distances[j]), True
    frac = (level - lo) / (hi - lo)
    return float(distances[j - 1] + frac * (distances[j] - distances[j - 1])), True


def subtended_angle(theta: Tensor, direction: Tensor, r: float) -> float:
    """The angle in degrees, seen from the origin of weight space, between θ* and θ* + r·d: the
    angular width of a ray of width r, which compares optima of different weight norms (a
    Euclidean width of 1 is wide at ‖θ*‖ = 1, narrow at ‖θ*‖ = 100)."""
    theta, end = theta.double(), theta.double() + r * direction.double()
    cos = torch.dot(theta, end) / (theta.norm() * end.norm())
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0))))


def threshold_level(kind: str, threshold: float, loss_at_optimum: float) -> float:
    return threshold + (loss_at_optimum if kind == "above_optimum" else 0.0)


def ray_widths(
    loss_fn: LossFn,
    theta: Tensor,
    n_directions: int,
    distances: np.ndarray,
    threshold: float,
    kind: str = "above_optimum",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plain reference on a flat loss: (widths (n,), crossed (n,), losses (n, R)) along
    `n_directions` unit rays from θ, ray i drawn from stream_seed(seed, i) as the command does."""
    losses = np.zeros((n_directions, len(distances)))
    with torch.no_grad():
        for i in range(n_directions):
            d = random_unit_direction(theta.numel(), stream_seed(seed, i), theta.dtype)
            losses[i] = [float(loss_fn(theta + float(r) * d)) for r in distances]
    level = threshold_level(kind, threshold, float(loss_fn(theta)))
    found = [crossing_distance(distances, row, level) for row in losses]
    return np.array([w for w, _ in found]), np.array([c for _, c in found]), losses


# --- the command -------------------------------------------------------------------------------


@dataclass
class WidthJob:
    optima: Optima
    distances: np.ndarray
    directions: str
    split: str
    options: EngineConfig
    seed: int

    def direction(self, optimum: int, ray: int) -> ParamDict:
        o = self.optima
        origin = o.states[optimum]
        n_params = sum(origin[k].numel() for k in o.keys)
        flat = random_unit_direction(n_params, stream_seed(self.seed, ray))
        like = {k: origin[k] for k in o.keys}
        d = params.unflatten(flat.to(o.problem.device), like, o.keys)
        if self.directions == "filter":
            d = normalize_direction(d, like, "filter", "biasbn")
        return d

    def angular(self, optimum: int, widths: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """‖θ*‖ over the parameters the rays move, and per ray its width as a relative length
        ‖r·d‖ / ‖θ*‖ and as the angle it subtends (degrees)."""
        keys = self.optima.keys
        theta = params.flatten(self.optima.states[optimum], keys).cpu()
        rel, angles = np.zeros(len(widths)), np.zeros(len(widths))
        for i, r in enumerate(widths):
            d = params.flatten(self.direction(optimum, i), keys).cpu()
            rel[i] = float(r * d.double().norm() / theta.double().norm())
            angles[i] = subtended_angle(theta, d, float(r))
        return float(theta.double().norm()), rel, angles

    def ray(self, optimum: int, ray: int) -> tuple[np.ndarray, np.ndarray]:
        """Loss and accuracy (R,) at the distances along ray `ray` from optimum `optimum`."""
        problem = self.optima.problem
        subspace = Subspace(self.optima.states[optimum], [self.direction(optimum, ray)])
        split = problem.splits[self.split]
        coords = torch.from_numpy(self.distances)[:, None]  # (R, 1)
        metrics = evaluate_points(
            problem.model,
            subspace,
            coords,
            {self.split: (split.inputs, split.labels)},
            self.options,
            problem.splits["train"].inputs,
        )[self.split]
        return metrics.loss, metrics.acc


def _ray_task(task: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return parallel.worker_state(_JOB_KEY).ray(*task)


@dataclass
class WidthResult:
    """Per optimum o and ray i: losses/accs (O, n, R) along distances (R,), levels (O,),
    widths and crossed (O, n); the optima's norms (O,) and the widths as relative lengths
    ‖r·d‖/‖θ*‖ and angles in degrees (O, n)."""

    labels: list[str]
    optima: list[str]
    distances: np.ndarray
    losses: np.ndarray
    accs: np.ndarray
    levels: np.ndarray
    widths: np.ndarray
    crossed: np.ndarray
    norms: np.ndarray
    relative: np.ndarray
    angles: np.ndarray

    def over_nets(self) -> list[width_nets.OverNets]:
        """Per label and measure (width, relative, angle), the mean over the label's nets with
        its t interval over nets, each net's crossed rays averaged first (width_nets.py)."""
        values = {"width": self.widths, "relative": self.relative, "angle": self.angles}
        return [
            row
            for measure in width_nets.MEASURES
            for row in width_nets.over_nets(self.labels, values[measure], self.crossed, measure)
        ]


def default_labels(paths: list[str]) -> list[str]:
    """The checkpoints' folder names (train's run folders) when they differ, else the paths."""
    names = [Path(p).parent.name or Path(p).stem for p in paths]
    return names if len(set(names)) == len(names) else list(paths)


def check_config(cfg: WidthConfig) -> list[str]:
    """Checks the config; returns the labels."""
    if len(cfg.optima) < 1:
        raise UserError("optima is empty; give at least one checkpoint: optima=[model.pt]")
    check_choice("directions", cfg.directions, DIRECTION_KINDS)
    check_choice("threshold_kind", cfg.threshold_kind, THRESHOLD_KINDS)
    check_engine(cfg.engine)
    if cfg.n_directions < 1:
        raise UserError(f"n_directions={cfg.n_directions} must be at least 1")
    if cfg.n_distances < 2:
        raise UserError(f"n_distances={cfg.n_distances} must be at least 2")
    why = "each is a full evaluation of the loss over the data (at every ray of every optimum)"
    check_at_most("n_distances", cfg.n_distances, MAX_PATH_POINTS, why)
    evaluations = len(cfg.optima) * cfg.n_directions * cfg.n_distances
    if evaluations > MAX_EVALUATIONS:
        raise UserError(
            f"optima × n_directions × n_distances = {len(cfg.optima)} × {cfg.n_directions} × "
            f"{cfg.n_distances} = {evaluations} evaluations of the loss, over the limit of "
            f"{MAX_EVALUATIONS} (each a forward pass over the data); give fewer n_directions "
            "or n_distances"
        )
    if not cfg.r_max > 0:
        raise UserError(f"r_max={cfg.r_max} must be positive")
    if cfg.threshold_kind == "above_optimum" and not cfg.threshold > 0:
        raise UserError(
            f"threshold={cfg.threshold} must be positive with threshold_kind=above_optimum "
            "(it is the rise of the loss above the optimum's)"
        )
    labels = list(cfg.labels) if cfg.labels is not None else default_labels(list(cfg.optima))
    if len(labels) != len(cfg.optima):
        raise UserError(
            f"labels has {len(labels)} entries but optima has {len(cfg.optima)}: give one label "
            "per optimum, or leave labels=null"
        )
    return labels


def run_width(cfg: WidthConfig, comm: Any = None) -> Optional[WidthResult]:
    """The command: cfg's checkpoints and data set, then `widths_at`; the result on rank 0
    (None on the others)."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    paths = [str(p) for p in cfg.optima]
    return widths_at(load_optima(cfg.model, cfg.dataset, paths, cfg.device, comm), cfg, comm)


def widths_at(optima: Optima, cfg: WidthConfig, comm: Any = None) -> Optional[WidthResult]:
    """The rays from every optimum (loaded on every rank) with cfg's settings: the core under
    the command and lh.tunnel_width. The result on rank 0 (None on the others)."""
    comm = parallel.world_if_none(comm)
    labels = check_config(cfg)
    paths = optima.names
    optima.problem.require([cfg.split], "split")
    distances = np.linspace(0.0, cfg.r_max, cfg.n_distances)
    job = WidthJob(optima, distances, cfg.directions, cfg.split, cfg.engine, cfg.seed)
    shape = (len(paths), cfg.n_directions, len(distances))
    losses, accs = np.zeros(shape), np.zeros(shape)
    tasks = [(o, i) for o in range(len(paths)) for i in range(cfg.n_directions)]
    describe = lambda t: f"ray {t[1]} from optimum {paths[t[0]]}"  # noqa: E731
    with parallel.worker_pool(_JOB_KEY, job):
        for result in parallel.run_tasks(comm, _ray_task, tasks, describe=describe):
            losses[result.task], accs[result.task] = result.value
    if comm.Get_rank() != 0:
        return None
    # every ray starts at the optimum itself: its loss is the same on all of them
    levels = np.array(
        [threshold_level(cfg.threshold_kind, cfg.threshold, float(row[0, 0])) for row in losses]
    )
    found = [
        [crossing_distance(distances, ray, level) for ray in rays]
        for rays, level in zip(losses, levels)
    ]
    widths = np.array([[w for w, _ in row] for row in found])
    crossed = np.array([[c for _, c in row] for row in found])
    norms, relative, angles = zip(*(job.angular(o, widths[o]) for o in range(len(paths))))
    return WidthResult(
        labels, paths, distances, losses, accs, levels, widths, crossed,
        np.array(norms), np.array(relative), np.array(angles),
    )  # fmt: skip


#: the columns of width.csv, one row per (optimum, ray)
def summarize_width(result: WidthResult, threshold: float, kind: str) -> str:
    n = result.widths.shape[1]
    rule = "loss at the optimum + " if kind == "above_optimum" else ""
    lines = [
        f"radial tunnel width over {n} rays, level = {rule}{threshold:g} (r: the distance "
        "along the rays; of ‖θ*‖: the step's length over the optimum's norm; the angle: between "
        "θ* and θ* + r·d seen from the origin, comparable across weight norms)"
    ]
    for o, label in enumerate(result.labels):
        w, crossed = result.widths[o], result.crossed[o]
        text = f"  {label}: loss at optimum {result.losses[o, 0, 0]:.4g}"
        text += f", level {result.levels[o]:.4g}"
        if crossed.any():
            mean, std = w[crossed].mean(), w[crossed].std()
            text += f"; width r {mean:.4g} ± {std:.4g} (the spread over its {crossed.sum()} rays)"
            rel, angle = result.relative[o][crossed], result.angles[o][crossed]
            if result.norms[o] > 0:  # at θ* = 0 neither is defined
                text += (
                    f" = {rel.mean():.4g} ± {rel.std():.4g} of ‖θ*‖ = {result.norms[o]:.4g}, "
                    f"an angle of {angle.mean():.3g}° ± {angle.std():.2g}°"
                )
        if not crossed.all():
            largest = np.nanmax(result.losses[o][~crossed])
            text += (
                f"; {(~crossed).sum()} ray(s) never cross up to r_max={result.distances[-1]:g} "
                f"(width ≥ {result.distances[-1]:g}; largest loss there {largest:.4g})"
            )
        lines.append(text)
    lines += width_nets.summarize(result.over_nets())  # labels measured on several nets
    return "\n".join(lines)


def check_crossed(result: WidthResult) -> None:
    """A UserError for the optima where no ray crosses the level: their width is unknown."""
    never = [o for o in range(len(result.labels)) if not result.crossed[o].any()]
    if never:
        details = "; ".join(
            f"{result.labels[o]}: level {result.levels[o]:.4g}, largest loss reached "
            f"{np.nanmax(result.losses[o]):.4g}"
            for o in never
        )
        raise UserError(
            f"threshold never crossed: on none of the {result.widths.shape[1]} rays up to "
            f"r_max={result.distances[-1]:g} did the loss exceed the level ({details}); the width "
            f"is at least {result.distances[-1]:g}. Raise r_max or lower threshold"
        )


def _command(cfg: WidthConfig, comm: Any) -> Optional[Report]:
    result = run_width(cfg, comm)
    if result is None:
        return None
    out = Path(cfg.out_dir)
    files = write_width(result, out)
    if cfg.plot:
        from landscape_hpc.geometry import figures

        png = figures.plot_width(
            result.labels,
            result.distances,
            result.losses,
            result.levels,
            result.widths,
            result.crossed,
            out / "width.png",
            cfg.split,
        )
        files.append(png)
    summary = summarize_width(result, cfg.threshold, cfg.threshold_kind)
    return Report(summary, files, then=functools.partial(check_crossed, result))


main = experiment_main("width", _command)
