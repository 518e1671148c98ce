"""Random d-dimensional hyperplanes through θ0 and training inside them (Li, Farkhoor, Liu &
Yosinski 2018, "Measuring the intrinsic dimension of objective landscapes"): θ(c) = θ0 + P·c
with P (P_params × d) random and fixed, c ∈ R^d trained from 0 by Adam. Pure maths on a flat
loss; the `subspace` experiment (geometry/intrinsic_dim.py) runs it over the MPI pool.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from landscape_hpc.errors import UserError

#: nonzeros of each row of a sparse projection (one row per parameter; fewer when d is smaller)
SPARSE_NONZEROS_PER_ROW = 4


class DenseProjection:
    """P (P_params × d) with i.i.d. Gaussian columns scaled to unit norm, stored as (d, P_params).

    Drawn row by row of the stored (d, P) matrix, so the first d columns are the same for every
    larger d with the same seed: the hyperplanes of one seed are nested.
    """

    def __init__(self, num_params: int, d: int, generator: torch.Generator, like: Tensor):
        basis = torch.randn(d, num_params, generator=generator, dtype=torch.float64)  # (d, P)
        basis /= basis.norm(dim=1, keepdim=True)
        self.basis = basis.to(device=like.device, dtype=like.dtype)

    def __call__(self, c: Tensor) -> Tensor:
        return c @ self.basis  # (P,)


class SparseProjection:
    """A sparse P (Li et al. 2018, sec. 2: sparse random projections instead of a dense P):
    every parameter's row holds ±1 in min(SPARSE_NONZEROS_PER_ROW, d) distinct random columns,
    and the columns are scaled to unit norm.

    Only the nonzeros are stored, (rows, cols, values) of length P_params · nonzeros; P·c is
    one gather and one scatter-add, never a dense P_params × d matrix.
    """

    def __init__(self, num_params: int, d: int, generator: torch.Generator, like: Tensor):
        per_row = min(SPARSE_NONZEROS_PER_ROW, d)
        cols = _distinct_columns(num_params, d, per_row, generator).reshape(-1)  # (P·k,)
        rows = torch.arange(num_params).repeat_interleave(per_row)
        signs = torch.randint(0, 2, (num_params * per_row,), generator=generator) * 2 - 1
        values = signs.to(torch.float64)
        col_norm = torch.zeros(d, dtype=torch.float64).index_add_(0, cols, values**2).sqrt()
        # a column no parameter drew would be zero: P would have rank < d (rare for small P)
        values = values / col_norm.clamp_min(1e-12)[cols]
        self.num_params = num_params
        self.rows = rows.to(like.device)
        self.cols = cols.to(like.device)
        self.values = values.to(device=like.device, dtype=like.dtype)

    def __call__(self, c: Tensor) -> Tensor:
        out = c.new_zeros(self.num_params)
        return out.index_add(0, self.rows, self.values * c[self.cols])  # (P,)


def _distinct_columns(rows: int, d: int, k: int, generator: torch.Generator) -> Tensor:
    """(rows, k) column indices, each row a uniform random k-subset of range(d): Floyd's
    algorithm, vectorised over rows (k steps, no (rows, d) matrix)."""
    chosen = torch.empty(rows, k, dtype=torch.long)
    for i, j in enumerate(range(d - k, d)):
        t = (torch.rand(rows, generator=generator, dtype=torch.float64) * (j + 1)).long()
        taken = (chosen[:, :i] == t[:, None]).any(dim=1)
        chosen[:, i] = torch.where(taken, torch.full_like(t, j), t)
    return chosen


@dataclass
class SubspaceResult:
    """The outcome of training c in one random d-dimensional hyperplane."""

    d: int
    final_loss: float  # loss at the final θ
    c: Tensor  # (d,) coordinates of the final point
    theta: Tensor  # (P,) the final weights θ0 + P·c
    losses: list[float] = field(default_factory=list)  # loss before each Adam step
    seconds: float = 0.0


def train_in_subspace(
    loss_fn: Callable[[Tensor], Tensor],
    theta0: Tensor,
    d: int,
    *,
    sparse: bool = False,
    steps: int = 500,
    lr: float = 1e-2,
    seed: int = 0,
    full: bool = False,
) -> SubspaceResult:
    """Minimises loss_fn(θ0 + P·c) over c ∈ R^d, from c = 0, by `steps` Adam steps.

    loss_fn maps a flat θ (P,) to a scalar (a flat.LossFn). P is a random projection with
    unit-norm columns drawn from `seed` (dense Gaussian, or sparse with a few nonzeros per row).
    The learning rate follows a cosine decay from `lr` to 0, so the last iterate settles instead
    of circling the minimum at the step size (the wedge loss is a norm: its gradient never
    shrinks). `full`: every parameter trained directly (P the identity, d = P_params): the
    baseline a subspace's accuracy is compared with. Raises UserError when d is not in [1, P].
    """
    num_params = theta0.numel()
    d = num_params if full else d
    if not 1 <= d <= num_params:
        raise UserError(
            f"subspace dimension d={d} must lie in [1, {num_params}], the number of trained "
            "parameters; drop it from dims"
        )
    if steps < 0:
        raise UserError(f"steps={steps} must be zero or positive")
    start = time.perf_counter()
    theta0 = theta0.detach().reshape(-1)
    generator = torch.Generator().manual_seed(seed)
    if full:
        projection = lambda c: c  # noqa: E731
    else:
        kind = SparseProjection if sparse else DenseProjection
        projection = kind(num_params, d, generator, theta0)
    c = torch.zeros(d, dtype=theta0.dtype, device=theta0.device, requires_grad=True)
    optimizer = torch.optim.Adam([c], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
    )
    losses: list[float] = []
    for _ in range(steps):
        loss = loss_fn(theta0 + projection(c))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        theta = theta0 + projection(c)
        final = float(loss_fn(theta))
    return SubspaceResult(d, final, c.detach(), theta.detach(), losses, time.perf_counter() - start)
