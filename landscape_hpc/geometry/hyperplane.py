"""Optimisation confined to a hyperplane of weight space (Fort & Jastrzebski 2019, sec. 4.2-4.3).

A point of the convex hull of m optima, θ⁰ = Σ_j λ_j θ_j, is optimised inside the affine space
through θ⁰ orthogonal to the optima's affine hull: every update is projected onto the orthogonal
complement of span{θ_j − θ_1}, so the point keeps its position λ along the path (m = 2: the
hyperplane normal to the linear path, a tunnel point) or in the simplex (an m-connector point).

Everything works on flat vectors θ (P,) and a loss function loss(θ) -> scalar (LossFn, from
`landscape_hpc.engine.flat`); `minibatch_loss` makes one from a model and its training data, drawing
the next minibatch at every call. No MPI, HDF5 or Hydra here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape_hpc.engine.flat import LossFn, flat_loss
from landscape_hpc.errors import UserError, check_choice

OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")

#: relative size below which a direction counts as already spanned by the previous ones
_RANK_TOL = 1e-10


@dataclass(frozen=True)
class HyperplaneOptions:
    """How one point is optimised inside its hyperplane. Checked when made (a UserError naming
    the config key hyperplane.<field>), so a command that makes them once checks them once."""

    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    steps: int = 200

    def __post_init__(self) -> None:
        check_hyperplane(self)

    @classmethod
    def from_config(cls, node: Any) -> HyperplaneOptions:
        """From a config node holding these four keys (HyperplaneConfig, WedgeHyperplaneConfig)."""
        return cls(node.optimizer, node.lr, node.momentum, node.steps)


def check_hyperplane(node: Any, prefix: str = "hyperplane.") -> None:
    """A UserError naming `prefix` + the key of a bad optimiser, lr, momentum or steps of `node`
    (the library passes its keyword arguments' prefix)."""
    check_choice(f"{prefix}optimizer", node.optimizer, OPTIMIZERS)
    if node.steps < 1:
        raise UserError(f"{prefix}steps={node.steps} must be at least 1")
    if not node.lr > 0:
        raise UserError(f"{prefix}lr={node.lr} must be positive")
    if not 0 <= node.momentum < 1:
        raise UserError(f"{prefix}momentum={node.momentum} must lie in [0, 1)")


@dataclass
class HyperplaneResult:
    """theta: the optimised point (P,); losses: the loss before each step (its minibatch's)."""

    theta: Tensor
    losses: list[float] = field(default_factory=list)


def orthonormal_rows(vectors: Tensor) -> Tensor:
    """Orthonormal rows (r, P), float64, spanning the rows of `vectors` (m, P); r = their rank."""
    vectors = vectors.double().reshape(-1, vectors.shape[-1])
    if vectors.shape[0] == 0:
        return vectors
    q, r = torch.linalg.qr(vectors.T)  # (P, m), (m, m): Gram–Schmidt of the rows
    diag = r.diagonal().abs()
    keep = diag > _RANK_TOL * max(float(diag.max()), 1e-300)
    return q[:, keep].T.contiguous()


def project_out(v: Tensor, normals: Tensor) -> Tensor:
    """v (..., P) minus its components along the orthonormal rows of `normals` (r, P), in
    float64 and returned in v's dtype: the projection onto the hyperplane's directions."""
    v64 = v.double()
    return (v64 - (v64 @ normals.T) @ normals).to(v.dtype)


def hull_normals(optima: Tensor) -> Tensor:
    """Orthonormal rows spanning the directions of the optima's affine hull, θ_j − θ_1
    (optima: (m, P)); a point optimised orthogonally to them keeps its barycentric position."""
    return orthonormal_rows(optima[1:] - optima[:1])


def optimise_in_hyperplane(
    loss_fn: LossFn,
    theta0: Tensor,
    normals: Tensor,
    options: HyperplaneOptions = HyperplaneOptions(),
) -> HyperplaneResult:
    """Minimises loss_fn over θ0 + {v : normals·v = 0}.

    The gradient is projected onto the hyperplane before the optimiser sees it, and the
    displacement θ − θ0 is projected again after every step (Adam rescales coordinates one by
    one, which would tilt a step off the hyperplane), so (θ − θ0)·n stays 0 to rounding for
    every normal n. The moments are the optimiser's own: each point starts afresh.
    """
    normals = normals.to(theta0.device)
    theta = theta0.detach().clone().requires_grad_(True)
    if options.optimizer == "adam":
        optimizer = torch.optim.Adam([theta], lr=options.lr)
    else:
        optimizer = torch.optim.SGD([theta], lr=options.lr, momentum=options.momentum)
    losses = []
    for _ in range(options.steps):
        loss = loss_fn(theta)
        (grad,) = torch.autograd.grad(loss, theta)
        losses.append(float(loss.detach()))
        theta.grad = project_out(grad, normals)
        optimizer.step()
        with torch.no_grad():  # back onto the hyperplane: drop what the step added along normals
            theta.copy_(theta0 + project_out(theta - theta0, normals))
    return HyperplaneResult(theta.detach(), losses)


def optimise_hull_point(
    loss_fn: LossFn,
    optima: Tensor,
    weights: Tensor,
    options: HyperplaneOptions = HyperplaneOptions(),
) -> HyperplaneResult:
    """The point Σ_j weights_j θ_j of the optima's hull (optima: (m, P), weights: (m,) summing
    to 1), optimised in the space orthogonal to the hull through it (sec. 4.2 for m = 2: the
    hyperplane normal to the linear path; sec. 4.3: an m-connector point)."""
    start = (weights.to(optima.dtype) @ optima).to(optima.dtype)  # (P,)
    return optimise_in_hyperplane(loss_fn, start, hull_normals(optima), options)


def segment_positions(n_segments: int) -> np.ndarray:
    """Positions t_i = i / n_segments, i = 0..n_segments, of the points along a linear path."""
    return np.linspace(0.0, 1.0, n_segments + 1)


def hat_weights(t: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation weights (len(t), len(knots)): row q holds the weights of
    the knots whose linear interpolation gives position t_q (two nonzero per row)."""
    eye = np.eye(len(knots))
    return np.stack([np.interp(t, knots, eye[k]) for k in range(len(knots))], axis=1)


def cosine_matrix(vectors: Tensor) -> np.ndarray:
    """Cosine similarities (k, k) of the rows of `vectors` (k, P); NaN for a zero row."""
    v = vectors.double()
    norms = v.norm(dim=1, keepdim=True)
    unit = v / torch.where(norms > 0, norms, torch.full_like(norms, float("nan")))
    return (unit @ unit.T).cpu().numpy()


def simplex_grid(m: int, resolution: int) -> np.ndarray:
    """Barycentric coordinates (Q, m) of the regular grid of the (m−1)-simplex: every
    λ = n / resolution with nonnegative integers n summing to `resolution`, vertices first."""
    points: list[tuple[int, ...]] = []

    def compose(prefix: tuple[int, ...], left: int, parts: int) -> None:
        if parts == 1:
            points.append((*prefix, left))
            return
        for k in range(left, -1, -1):
            compose((*prefix, k), left - k, parts - 1)

    compose((), resolution, m)
    grid = np.array(points, dtype=np.float64) / resolution
    is_vertex = (grid == 1.0).any(axis=1)
    return np.concatenate([grid[is_vertex], grid[~is_vertex]])


def simplex_interpolation(points: np.ndarray, grid: np.ndarray, resolution: int) -> np.ndarray:
    """Weights (N, Q) that interpolate values at the barycentric `grid` (Q, m) of
    simplex_grid(m, resolution) piecewise linearly at `points` (N, m): each point's weights sit
    on the m vertices of the small simplex holding it (the Freudenthal triangulation of the grid
    in the coordinates u_k = R·(λ_k + ... + λ_m), k ≥ 2) and sum to 1; Σ_q W[n, q]·grid[q] =
    points[n] exactly. With the optimised points' positions at the grid, this is the
    m-connector between them: the polytope their simplices span."""
    index = {tuple(np.rint(g * resolution).astype(int)): q for q, g in enumerate(grid)}
    weights = np.zeros((len(points), len(grid)))
    for n, lam in enumerate(points):
        u = resolution * np.cumsum(lam[::-1])[::-1][1:]  # (m − 1,), non-increasing
        base = np.minimum(np.floor(u + 1e-9), resolution - 1).clip(min=0)
        frac = np.clip(u - base, 0.0, 1.0)
        order = np.argsort(-frac, kind="stable")
        vertex = base.copy()
        for w, step in zip(_freudenthal_weights(frac[order]), [None, *order]):
            if step is not None:
                vertex[step] += 1
            counts = -np.diff(np.concatenate([[resolution], vertex, [0]]))  # back to n_1..n_m
            weights[n, index[tuple(counts.astype(int))]] += w
    return weights


def _freudenthal_weights(frac_desc: np.ndarray) -> np.ndarray:
    """The barycentric weights of the Freudenthal simplex's vertices for sorted fractions."""
    edges = np.concatenate([[1.0], frac_desc, [0.0]])
    return edges[:-1] - edges[1:]


def minibatch_loss(
    model: nn.Module,
    state: Mapping[str, Tensor],
    keys: list[str],
    inputs: Tensor,
    labels: Tensor,
    batch_size: int | None,
    seed: int,
    loss: str = "ce",
) -> LossFn:
    """loss(θ) of the model whose tensors `keys` are θ and whose other tensors are `state`, on
    the next minibatch of `batch_size` training samples at every call: reshuffled each epoch by a
    generator seeded with `seed` (batch_size None or ≥ N: the whole split every time).

    The model runs as it is: in eval mode BN uses the running statistics in `state` and dropout
    is off, so the objective is the loss the engine evaluates.
    """
    n = inputs.shape[0]
    if batch_size is None or batch_size >= n:
        return flat_loss(model, state, keys, inputs, labels, loss=loss)[0]
    generator = torch.Generator().manual_seed(seed)
    queue: list[Tensor] = []

    def next_batch_loss(theta: Tensor) -> Tensor:
        if not queue:
            order = torch.randperm(n, generator=generator).to(inputs.device)
            starts = range(0, n - batch_size + 1, batch_size)  # the last partial batch is dropped
            queue.extend(order[i : i + batch_size] for i in starts)
        idx = queue.pop(0)
        batch_fn = flat_loss(model, state, keys, inputs[idx], labels[idx], loss=loss)[0]
        return batch_fn(theta)

    return next_batch_loss


def stream_seed(seed: int, index: int) -> int:
    """An independent seed for item `index` of a run seeded with `seed` (a point, a ray)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def tunnel_deviations(
    loss_fn: LossFn,
    theta_a: Tensor,
    theta_b: Tensor,
    n_segments: int,
    options: HyperplaneOptions = HyperplaneOptions(),
) -> Tensor:
    """The plain serial tunnel (sec. 4.2): deviations δ_i (n_segments − 1, P) of the inner points
    t_i = i / n_segments, each optimised in the hyperplane normal to θ_b − θ_a through it."""
    optima = torch.stack([theta_a, theta_b])  # (2, P)
    deviations = []
    for t in segment_positions(n_segments)[1:-1]:
        weights = torch.tensor([1.0 - t, t], dtype=torch.float64)
        result = optimise_hull_point(loss_fn, optima, weights, options)
        deviations.append(result.theta - (weights.to(optima.dtype) @ optima))
    return torch.stack(deviations)


def path_losses(
    loss_fn: LossFn, theta_a: Tensor, theta_b: Tensor, deviations: Tensor, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Loss at positions t (Q,) along the linear path θ_a + t(θ_b − θ_a) and along the tunnel
    through the deviations (K, P) of K equally spaced inner points (piecewise linear)."""
    knots = segment_positions(len(deviations) + 1)
    hats = torch.from_numpy(hat_weights(t, knots)[:, 1:-1]).to(deviations.dtype)  # (Q, K)
    linear_points = theta_a + torch.from_numpy(t).to(theta_a.dtype)[:, None] * (theta_b - theta_a)
    tunnel_points = linear_points + hats @ deviations  # (Q, P)
    with torch.no_grad():
        linear = np.array([float(loss_fn(p)) for p in linear_points])
        tunnel = np.array([float(loss_fn(p)) for p in tunnel_points])
    return linear, tunnel
