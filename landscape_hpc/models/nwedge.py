"""The n-wedge toy landscape (Fort & Jastrzebski 2019, sec. 3).

In D dimensions an n-wedge is the set of points with at most n nonzero coordinates: the union of
the C(D, n) coordinate subspaces of dimension n. The loss is the Euclidean distance to the nearest
of them: sort |θ_i|, keep the D − n smallest, take the root of their sum of squares (the nearest
point of a subspace keeps the n free coordinates and zeroes the rest, so the best subspace frees
the n largest |θ_i|). Every point of a wedge is a global minimum (loss 0); the minima form a
connected union of n-dimensional hyperplanes, the paper's toy model of a landscape whose low-loss
set is a union of high-dimensional wedges.

`Wedge` wraps it as a model every command evaluates: one parameter θ (D,), and a forward that
returns the loss itself for every sample (`loss_output = True`), so the data set is ignored;
the registry builds it as `model=wedge`. (The geometry experiment `python -m
landscape_hpc.geometry wedge`, geometry/wedge.py, runs the paper's experiments on it.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from landscape_hpc.errors import UserError


def wedge_distance(theta: Tensor, n: int) -> Tensor:
    """Distance from θ (..., D) to the nearest n-wedge: (...,); differentiable almost everywhere.

    n = D gives 0 everywhere; n = 0 gives |θ|. The gradient is 0 (not NaN) on the wedge itself.
    """
    dim = theta.shape[-1]
    if not 0 <= n <= dim:
        raise ValueError(f"wedge dimension n={n} must lie in [0, D={dim}]")
    # (..., D − n): the coordinates a wedge point cannot keep, i.e. the D − n smallest |θ_i|
    constrained = torch.topk(theta.abs(), dim - n, dim=-1, largest=False).values
    return torch.linalg.vector_norm(constrained, dim=-1)


class Wedge(nn.Module):
    """θ (D,) with loss = distance to the nearest n-wedge, whatever the input.

    forward(x) returns that loss once per sample, shape (N,): the evaluation engine and the
    trainers take the mean of a `loss_output` model's output as its loss, and its accuracy is NaN.
    """

    #: the forward returns per-sample losses, not logits
    loss_output = True

    def __init__(self, dim: int, n: int, init_scale: float = 1.0) -> None:
        super().__init__()
        self.dim = int(dim)
        self.n = int(n)
        # θ ~ init_scale · N(0, I): almost surely off every wedge (all coordinates nonzero)
        self.theta = nn.Parameter(init_scale * torch.randn(self.dim))

    def forward(self, x: Tensor) -> Tensor:
        return wedge_distance(self.theta, self.n).expand(x.shape[0])  # (N,)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n={self.n}"


#: model.kwargs of `model=wedge` as its config node shows them, so `model.kwargs.dim=20` needs no +
WEDGE_KWARGS: dict[str, float] = {"dim": 100, "n": 10, "init_scale": 1.0}


def wedge(
    input_shape: tuple[int, ...],
    num_classes: int,
    dim: int = int(WEDGE_KWARGS["dim"]),
    n: int = int(WEDGE_KWARGS["n"]),
    init_scale: float = WEDGE_KWARGS["init_scale"],
) -> Wedge:
    """Registry builder for model=wedge; the data's sample shape and class count are ignored."""
    del input_shape, num_classes
    if not _is_int(dim) or dim < 1:
        raise UserError(f"model.kwargs.dim={dim!r}: give a positive number of dimensions D")
    if not _is_int(n) or not 0 <= n <= dim:
        raise UserError(
            f"model.kwargs.n={n!r}: the wedge dimension must be an integer in [0, dim={dim}]"
        )
    if not isinstance(init_scale, (int, float)) or not init_scale > 0:
        raise UserError(f"model.kwargs.init_scale={init_scale!r}: give a positive number")
    return Wedge(dim, n, float(init_scale))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
