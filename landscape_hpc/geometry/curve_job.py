"""A trained curve between two optima on a problem (geometry/curve.py has the maths): the bend
trained on the "train" split, then the curve and the straight line evaluated along a grid of t
by the evaluation engine, and the loss barrier of each (Frankle et al. 2020,
connectivity.py) per split. The core under lh.curve (and the `curve` command).

The bend's objective is the loss of a train-mode copy of the model (BN normalises with each
minibatch's statistics, as Garipov et al. train; dropout off, so the objective is
deterministic given the minibatch); its running statistics are not used. At evaluation,
engine.bn=recompute (the default of lh.curve) recomputes them at every t from the train split
with engine/batchnorm.py (momentum=None: their update_bn); engine.bn=eval moves them linearly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from landscape_hpc import params
from landscape_hpc.config import EngineConfig
from landscape_hpc.connectivity import loss_barrier
from landscape_hpc.directions.maths import model_difference
from landscape_hpc.engine.batchnorm import train_mode_copy
from landscape_hpc.engine.evaluate import Evaluator
from landscape_hpc.engine.flat import LossFn, flat_loss
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.curve import (
    BendTraining,
    CurveOptions,
    PlanePoints,
    bend_state,
    curve_coords,
    line_coords,
    plane_axes,
    plane_points,
    train_bend,
)
from landscape_hpc.geometry.hull import Metrics, Optima, summarize_metrics
from landscape_hpc.geometry.hyperplane import stream_seed
from landscape_hpc.grid import Grid
from landscape_hpc.params import ParamDict

#: {split: {"curve" | "line": (barrier, the t where it is reached)}}
Barriers = dict[str, dict[str, tuple[float, float]]]


@dataclass
class CurveResult:
    """Along t (Q,): metrics {split: {"curve" | "line": (loss (Q,), acc (Q,))}}, their
    barriers, the trained bend as a full state dict, and its training (t drawn and minibatch
    loss per step)."""

    kind: str
    optima: list[str]
    t: np.ndarray
    metrics: Metrics
    barriers: Barriers
    bend: ParamDict
    training: BendTraining


def check_positions(t: np.ndarray) -> np.ndarray:
    """The evaluated positions: sorted, inside [0, 1] (the curve is defined there only)."""
    t = np.asarray(t, np.float64).reshape(-1)
    if len(t) < 2 or not np.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        held = f"from {t.min():g} to {t.max():g}" if len(t) else "none"
        raise UserError(
            f"t must hold at least two positions in [0, 1] (it holds {len(t)}, {held}); a curve "
            "is defined there only: e.g. t=(0, 1, 21) (0 and 1 included for the barriers)"
        )
    return np.unique(t)


def step_batch(n: int, batch_size: Optional[int], seed: int, step: int) -> Optional[torch.Tensor]:
    """The sample indices of training step `step`'s minibatch (None: the whole split): epoch
    e = step // (n // batch_size) in an order drawn from stream_seed(seed, e + 1), the last
    partial batch dropped. A function of the step alone, so a resumed training draws the
    minibatches it would have drawn."""
    if batch_size is None or batch_size >= n:
        return None
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(stream_seed(seed, epoch + 1))
    return torch.randperm(n, generator=generator)[k * batch_size : (k + 1) * batch_size]


def bend_loss(
    optima: Optima, batch_size: Optional[int], seed: int, loss: Any = "ce", start: int = 0
) -> LossFn:
    """loss(θ) on the minibatch of the next training step at every call (the first: step
    `start`), through a train-mode copy of the model; its BN running statistics are updated in
    a private state, never the optima's."""
    problem, (a, b) = optima.problem, optima.states[:2]
    train = problem.splits["train"]
    model = train_mode_copy(problem.model)
    state = bend_state(optima.flat(a), a, b, optima.keys)  # its buffers: a private copy
    inputs, labels = train.inputs, train.labels
    step = [start]

    def next_batch_loss(theta: torch.Tensor) -> torch.Tensor:
        idx = step_batch(inputs.shape[0], batch_size, seed, step[0])
        step[0] += 1
        x, y = (
            (inputs, labels)
            if idx is None
            else (inputs[idx.to(inputs.device)], labels[idx.to(labels.device)])
        )
        return flat_loss(model, state, optima.keys, x, y, loss=loss)[0](theta)

    return next_batch_loss


def curve_subspace(state_a: ParamDict, bend: ParamDict, state_b: ParamDict) -> Subspace:
    """θ_a + c_0·(θ_bend − θ_a) + c_1·(θ_b − θ_a), every floating tensor (float64
    differences: c = (0, 1) is θ_b exactly)."""
    basis = [model_difference(bend, state_a, "bend"), model_difference(state_b, state_a, "b")]
    return Subspace(state_a, basis)


def evaluate_curve(
    optima: Optima,
    bend: ParamDict,
    kind: str,
    t: np.ndarray,
    splits: Sequence[str],
    options: EngineConfig,
    loss: Any = None,
) -> Metrics:
    """The curve's and the line's loss and accuracy at positions t on `splits`, in one call of
    the engine (BN statistics recomputed from the train split with options.bn=recompute)."""
    problem, (a, b) = optima.problem, optima.states[:2]
    subspace = curve_subspace(a, bend, b)
    coords = np.concatenate([curve_coords(kind, t), line_coords(t)])  # (2Q, 2)
    data = {s: problem.splits[s] for s in splits}
    bn_data = problem.splits["train"].inputs
    evaluator = Evaluator(problem.model, subspace, data, options, bn_data, loss=loss)
    metrics = evaluator(torch.from_numpy(coords))
    q = len(t)
    return {
        s: {"curve": (m.loss[:q], m.acc[:q]), "line": (m.loss[q:], m.acc[q:])}
        for s, m in metrics.items()
    }


def barriers_of(t: np.ndarray, metrics: Metrics) -> Barriers:
    """The loss barrier (connectivity.loss_barrier) of every split and kind."""
    return {
        s: {kind: loss_barrier(t, loss) for kind, (loss, _) in kinds.items()}
        for s, kinds in metrics.items()
    }


def check_optima(optima: Optima) -> None:
    if len(optima.states) != 2:
        raise UserError(f"{len(optima.states)} optima given; a curve joins exactly two")
    a, b = optima.states
    if all(torch.equal(a[k], b[k]) for k in optima.keys):
        raise UserError("the two optima are the same point; give two different nets")


def train_curve(
    optima: Optima,
    options: CurveOptions,
    batch_size: Optional[int] = 128,
    seed: int = 0,
    loss: Any = "ce",
    state: Optional[BendTraining] = None,
    until: Optional[int] = None,
) -> BendTraining:
    """The bend's training between optima.states[0] and [1] (continued from `state`, up to step
    `until`): t and the minibatches drawn from `seed` step by step, so that a training stopped
    and continued is the one run straight through, bit for bit."""
    check_optima(optima)
    a, b = optima.states
    loss_fn = bend_loss(optima, batch_size, seed, loss, state.step if state else 0)
    return train_bend(loss_fn, optima.flat(a), optima.flat(b), options, seed, state, until)


def finish_curve(
    optima: Optima,
    training: BendTraining,
    kind: str,
    t: np.ndarray,
    splits: Sequence[str],
    engine: EngineConfig,
    loss: Any = None,
) -> CurveResult:
    """The trained curve and the line evaluated at t on `splits`, with their barriers."""
    t = check_positions(t)
    a, b = optima.states
    bend = bend_state(training.bend, a, b, optima.keys)
    metrics = evaluate_curve(optima, bend, kind, t, splits, engine, loss)
    return CurveResult(kind, list(optima.names), t, metrics, barriers_of(t, metrics), bend,
                       training)  # fmt: skip


def curve_between(
    optima: Optima,
    options: CurveOptions,
    t: np.ndarray,
    splits: Sequence[str],
    engine: EngineConfig,
    batch_size: Optional[int] = 128,
    seed: int = 0,
    loss: Any = None,
    state: Optional[BendTraining] = None,
) -> CurveResult:
    """The curve between optima.states[0] and [1]: the bend trained (or its training
    continued from `state`), then both paths evaluated at t on `splits`."""
    check_positions(t)
    objective = engine.loss if loss is None else loss
    training = train_curve(optima, options, batch_size, seed, objective, state)
    return finish_curve(optima, training, options.kind, t, splits, engine, loss)


def summarize_curve(result: CurveResult) -> str:
    steps = len(result.training.losses)
    lines = [
        f"{result.kind} curve between {result.optima[0]} and {result.optima[1]}: "
        f"bend trained {steps} steps"
    ]
    lines += summarize_metrics(result.metrics, lambda i: f"t={result.t[i]:.3f}")
    for s, kinds in result.barriers.items():
        parts = [f"{kind} {height:.4g} at t={where:.3g}" for kind, (height, where) in kinds.items()]
        lines.append(f"  loss barrier ({s}): " + "; ".join(parts))
    if steps:
        first, last = np.mean(result.training.losses[:10]), np.mean(result.training.losses[-10:])
        lines.append(f"  bend training: minibatch loss {first:.4g} -> {last:.4g} (first/last 10)")
    return "\n".join(lines)


# --- the plane through θ_a, the bend and θ_b (Garipov et al. 2018, Figure 1) -----------------


def plane_directions(
    state_a: ParamDict, bend: ParamDict, state_b: ParamDict, keys: list[str], kind: str,
    t: np.ndarray,
) -> tuple[list[ParamDict], PlanePoints]:  # fmt: skip
    """The plane's basis (u, v) as float64 state dicts around θ_a, and the coordinates of the
    three points, the curve and the line (geometry/curve.py plane_points). u and v span the
    parameters `keys`; u also moves every other floating tensor (BN running statistics) by
    (θ_b − θ_a)/‖θ_b − θ_a‖ of the parameters, so with bn=eval the line, and θ_b, carry the
    nets' statistics as lh.interpolate does (v leaves them at θ_a's; bn=recompute, the
    default, recomputes them at every point)."""
    flat = [params.flatten(s, keys).detach() for s in (state_a, bend, state_b)]
    u, v, coords = plane_points(kind, t, *flat)
    like = {k: state_a[k].double() for k in keys}
    du, dv = params.unflatten(u, like, keys), params.unflatten(v, like, keys)
    length = float(coords.points[2, 0])
    for k, value in state_a.items():
        if k not in du and value.is_floating_point():
            du[k] = (state_b[k].to(value.device).double() - value.double()) / length
    return [du, dv], coords


def plane_grid(
    coords: PlanePoints,
    x: Optional[Sequence[float]] = None,
    y: Optional[Sequence[float]] = None,
    num: int = 21,
    margin: float = 0.2,
) -> tuple[Sequence[float], Sequence[float]]:
    """The axes (min, max, num) of the plane's grid: `x` and `y` when given, else covering the
    three points with `margin` of their span on each side."""
    ax, ay = plane_axes(coords.points, num, margin)
    return (ax if x is None else x), (ay if y is None else y)


def plane_attrs(coords: PlanePoints) -> dict[str, Any]:
    """The coordinates a plot of the plane draws, as flat arrays (HDF5 and Dataset attrs)."""
    return {
        "plane_t": coords.t,
        "plane_curve_x": coords.curve[:, 0],
        "plane_curve_y": coords.curve[:, 1],
        "plane_line_x": coords.line[:, 0],
        "plane_line_y": coords.line[:, 1],
        "plane_points_x": coords.points[:, 0],
        "plane_points_y": coords.points[:, 1],
        "plane_points": "theta_a,bend,theta_b",
    }


@dataclass
class PlaneResult:
    """The plane's grid, its metrics {split: (loss (ny, nx), acc (ny, nx))}, its basis (u, v)
    as state dicts and the coordinates of the points, the curve and the line."""

    grid: Grid
    metrics: dict[str, tuple[np.ndarray, np.ndarray]]
    basis: list[ParamDict]
    coords: PlanePoints


def evaluate_plane(
    optima: Optima,
    bend: ParamDict,
    kind: str,
    t: np.ndarray,
    splits: Sequence[str],
    options: EngineConfig,
    x: Optional[Sequence[float]] = None,
    y: Optional[Sequence[float]] = None,
    num: int = 21,
    margin: float = 0.2,
    loss: Any = None,
) -> PlaneResult:
    """The loss and accuracy over the plane through θ_a, the bend and θ_b, on a grid (default:
    the points with margins), by the evaluation engine (one call for every grid point)."""
    a, b = optima.states[:2]
    basis, coords = plane_directions(a, bend, b, optima.keys, kind, t)
    grid = Grid.from_spec(*plane_grid(coords, x, y, num, margin), keys=("plane x", "plane y"))
    problem = optima.problem
    data = {s: problem.splits[s] for s in splits}
    bn_data = problem.splits["train"].inputs
    evaluator = Evaluator(problem.model, Subspace(a, basis), data, options, bn_data, loss=loss)
    points = torch.from_numpy(grid.coords(np.arange(grid.size)))  # (N, 2), row-major (y, x)
    metrics = evaluator(points)
    shape = grid.shape
    shaped = {s: (m.loss.reshape(shape), m.acc.reshape(shape)) for s, m in metrics.items()}
    return PlaneResult(grid, shaped, basis, coords)
