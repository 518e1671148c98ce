"""Trained mode-connecting curves between two optima (Garipov et al. 2018, "Loss Surfaces, Mode
Connectivity, and Fast Ensembling of DNNs", sec. 3; their code timgaripov/dnn-mode-connectivity).

A curve θ(t), t in [0, 1], from θ_a (t = 0) to θ_b (t = 1) through one trainable bend θ_bend:

    bezier     θ(t) = (1−t)²·θ_a + 2t(1−t)·θ_bend + t²·θ_b          (quadratic Bézier)
    polychain  θ(t) = θ_a + 2t·(θ_bend − θ_a)            for t < 1/2  (one bend: two segments)
               θ(t) = θ_bend + (2t−1)·(θ_b − θ_bend)     for t ≥ 1/2

The bend starts at the line's midpoint (θ_a + θ_b)/2 and is trained as the paper does: at every
step t ~ U(0, 1) and a minibatch are drawn, and one optimiser step (SGD or Adam) on θ_bend alone
lowers the training loss at θ(t); the ends are never written (fixed bit for bit: the weights of
θ_a at t = 0 are exactly (1, 0, 0)). Everything here works on flat vectors θ (P,) and a loss
function loss(θ) -> scalar (engine/flat.py), so it holds for any nn.Module.

For the evaluation θ(t) lies in the 2-D subspace through θ_a spanned by θ_bend − θ_a and
θ_b − θ_a (the weights of a curve sum to 1): `curve_coords` are its coordinates there, and the
straight line is (0, t), so the evaluation engine computes the curve and the line in one call,
BN running statistics recomputed at each t with engine.bn=recompute (their update_bn).

For a picture (their Figure 1) the same plane gets an orthonormal basis: u along θ_b − θ_a, v
the part of θ_bend − θ_a orthogonal to it (`plane_basis`); the curve's coordinates there are
its weights applied to the three points' (`plane_points`), exact since θ(t) is affine in them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from landscape_hpc import params
from landscape_hpc.engine.flat import LossFn
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.geometry.hyperplane import OPTIMIZERS

KINDS: tuple[str, ...] = ("bezier", "polychain")


@dataclass(frozen=True)
class CurveOptions:
    """How the bend is trained; checked when made (a UserError naming the key)."""

    kind: str = "bezier"
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    steps: int = 500

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.steps < 0:
            raise UserError(f"steps={self.steps} must be at least 0 (0: the untrained bend)")
        if not self.lr > 0:
            raise UserError(f"lr={self.lr} must be positive")
        if not 0 <= self.momentum < 1:
            raise UserError(f"momentum={self.momentum} must lie in [0, 1)")
        if not self.weight_decay >= 0:
            raise UserError(f"weight_decay={self.weight_decay} must be ≥ 0")


def curve_weights(kind: str, t: np.ndarray) -> np.ndarray:
    """Weights (Q, 3) of (θ_a, θ_bend, θ_b) at positions t (Q,): θ(t) = w·(θ_a, θ_bend, θ_b)."""
    check_choice("kind", kind, KINDS)
    t = np.asarray(t, np.float64)
    if kind == "bezier":
        return np.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], axis=1)
    first = t < 0.5
    return np.stack(
        [
            np.where(first, 1 - 2 * t, 0.0),
            np.where(first, 2 * t, 2 - 2 * t),
            np.where(first, 0.0, 2 * t - 1),
        ],
        axis=1,
    )


def curve_coords(kind: str, t: np.ndarray) -> np.ndarray:
    """Coordinates (Q, 2) of θ(t) in the subspace θ_a + c_0·(θ_bend − θ_a) + c_1·(θ_b − θ_a):
    the weights of θ_bend and θ_b (those of a curve sum to 1)."""
    return curve_weights(kind, t)[:, 1:]


def line_coords(t: np.ndarray) -> np.ndarray:
    """The straight line θ_a + t·(θ_b − θ_a) in the same coordinates (Q, 2): (0, t)."""
    t = np.asarray(t, np.float64)
    return np.stack([np.zeros_like(t), t], axis=1)


def curve_point(kind: str, t: float, theta_a: Tensor, bend: Tensor, theta_b: Tensor) -> Tensor:
    """θ(t) (P,) for one position t, differentiable in `bend` (the ends enter as constants)."""
    w_a, w_bend, w_b = (float(w) for w in curve_weights(kind, np.array([t]))[0])
    return w_a * theta_a.detach() + w_bend * bend + w_b * theta_b.detach()


def midpoint(theta_a: Tensor, theta_b: Tensor) -> Tensor:
    """The bend's start: the middle of the line, formed in float64, in θ_a's dtype."""
    return ((theta_a.double() + theta_b.double()) / 2).to(theta_a.dtype)


@dataclass
class BendTraining:
    """The state of a bend's training (what a checkpoint holds to resume it): the bend (P,),
    the steps done, the optimiser's state, the generator drawing t, and per step the t drawn
    and the minibatch loss at θ(t) before the step."""

    bend: Tensor
    step: int = 0
    optimizer_state: Optional[dict[str, Any]] = None
    generator_state: Optional[Tensor] = None
    ts: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def make_optimizer(bend: Tensor, options: CurveOptions) -> torch.optim.Optimizer:
    if options.optimizer == "adam":
        return torch.optim.Adam([bend], lr=options.lr, weight_decay=options.weight_decay)
    return torch.optim.SGD(
        [bend], lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay
    )


def train_bend(
    loss_fn: LossFn,
    theta_a: Tensor,
    theta_b: Tensor,
    options: CurveOptions,
    seed: int = 0,
    state: Optional[BendTraining] = None,
    until: Optional[int] = None,
) -> BendTraining:
    """Trains the bend of the curve θ_a → θ_b (Garipov et al. sec. 3.2): `options.steps` steps
    (or up to step `until`), each at t ~ U(0, 1) from a generator seeded with `seed` and on the
    minibatch `loss_fn` draws, the gradient taken with respect to the bend only. `state`: a
    training to continue (its bend, step, optimiser and generator; None: from the midpoint).
    The ends are read, never written."""
    state = state or BendTraining(midpoint(theta_a, theta_b))
    bend = state.bend.detach().clone().requires_grad_(True)
    optimizer = make_optimizer(bend, options)
    if state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state)
    generator = torch.Generator().manual_seed(seed)
    if state.generator_state is not None:
        generator.set_state(state.generator_state)
    ts, losses = list(state.ts), list(state.losses)
    stop = options.steps if until is None else min(until, options.steps)
    for _ in range(state.step, stop):
        t = float(torch.rand((), generator=generator, dtype=torch.float64))
        loss = loss_fn(curve_point(options.kind, t, theta_a, bend, theta_b))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ts.append(t)
        losses.append(float(loss.detach()))
    return BendTraining(
        bend.detach(), max(stop, state.step), optimizer.state_dict(), generator.get_state(),
        ts, losses,
    )  # fmt: skip


def bend_state(
    bend: Tensor, state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], keys: list[str]
) -> dict[str, Tensor]:
    """The bend as a full state dict: the parameters `keys` from the flat bend (P,), every
    other floating tensor (BN running statistics) at the line's midpoint, so that with
    engine.bn=eval they move along the curve exactly as along the line; integer buffers θ_a's."""
    out = {k: v.detach().clone() for k, v in params.unflatten(bend, state_a, keys).items()}
    for k, v in state_a.items():
        if k in out:
            continue
        if v.is_floating_point():
            out[k] = ((v.double() + state_b[k].to(v.device).double()) / 2).to(v.dtype)
        else:
            out[k] = v.detach().clone()
    return {k: out[k] for k in state_a}


# --- the plane through the ends and the bend (Garipov et al. 2018, Figure 1) -----------------


@dataclass(frozen=True)
class PlanePoints:
    """Coordinates in the plane's orthonormal basis (u, v) around θ_a: `points` (3, 2) of
    (θ_a, θ_bend, θ_b), `curve` (Q, 2) of θ(t) and `line` (Q, 2) of θ_a + t·(θ_b − θ_a)
    at the positions `t` (Q,)."""

    t: np.ndarray
    points: np.ndarray
    curve: np.ndarray
    line: np.ndarray


def plane_basis(theta_a: Tensor, bend: Tensor, theta_b: Tensor) -> tuple[Tensor, Tensor]:
    """Garipov et al.'s orthonormal basis (float64, (P,) each) of the plane through the three
    points: u = (θ_b − θ_a)/‖θ_b − θ_a‖ and v the part of θ_bend − θ_a orthogonal to u,
    normalised (Gram–Schmidt, in float64)."""
    d = theta_b.detach().double() - theta_a.detach().double()
    w = bend.detach().double() - theta_a.detach().double()
    length = float(d.norm())
    if not length > 0:
        raise UserError("the two ends are the same point; the plane needs two different nets")
    u = d / length
    w = w - (w @ u) * u
    height = float(w.norm())
    if not height > 1e-12 * max(length, 1.0):
        raise UserError(
            "the bend lies on the line θ_a → θ_b (an untrained curve, steps=0?): no plane "
            "through the three points; train the bend (steps > 0)"
        )
    return u, w / height


def plane_coords(points: Tensor, theta_a: Tensor, u: Tensor, v: Tensor) -> np.ndarray:
    """Coordinates (Q, 2) of θ (Q, P) in the basis (u, v) around θ_a: (⟨θ − θ_a, u⟩, ⟨·, v⟩),
    the orthogonal projection onto the plane (exact for points in it)."""
    diff = points.detach().double() - theta_a.detach().double()  # (Q, P)
    return torch.stack([diff @ u, diff @ v], dim=1).numpy()


def plane_points(
    kind: str, t: np.ndarray, theta_a: Tensor, bend: Tensor, theta_b: Tensor
) -> tuple[Tensor, Tensor, PlanePoints]:
    """The basis (u, v) and the coordinates of the ends, the bend, the curve and the line. θ(t)
    is an affine combination of the three points (its weights sum to 1), so it lies in their
    plane and its coordinates are those weights applied to the points' coordinates."""
    u, v = plane_basis(theta_a, bend, theta_b)
    t = np.asarray(t, np.float64).reshape(-1)
    points = plane_coords(torch.stack([theta_a, bend, theta_b]), theta_a, u, v)  # (3, 2)
    points[0] = 0.0  # θ_a is the origin (exactly)
    points[2, 1] = 0.0  # θ_b lies on u (exactly)
    curve = curve_weights(kind, t) @ points  # (Q, 2)
    line = t[:, None] * points[2][None, :]  # (Q, 2)
    return u, v, PlanePoints(t, points, curve, line)


def plane_axes(
    coords: np.ndarray, num: int = 21, margin: float = 0.2
) -> tuple[tuple[float, float, int], tuple[float, float, int]]:
    """Grid axes (min, max, num) covering the coordinates (K, 2) with `margin` of each axis'
    span on either side (the plane's default grid)."""
    if num < 2:
        raise UserError(f"plane num={num} must be at least 2 points per axis")
    if not margin >= 0:
        raise UserError(f"plane margin={margin} must be ≥ 0 (a fraction of each axis' span)")
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = np.maximum(hi - lo, 1e-12)
    lo, hi = lo - margin * span, hi + margin * span
    return (float(lo[0]), float(hi[0]), num), (float(lo[1]), float(hi[1]), num)
