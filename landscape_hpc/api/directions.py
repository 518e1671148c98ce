"""Directions in weight space from Python (Li et al. 2018, sec. 4)."""

from __future__ import annotations

from torch import nn

from landscape_hpc.directions.maths import direction_keys, random_basis
from landscape_hpc.params import ParamDict


def random_directions(
    model: nn.Module,
    n: int = 2,
    *,
    seed: int = 0,
    norm: str = "filter",
    ignore: str = "biasbn",
    dir_type: str = "weights",
    same_dir: bool = False,
) -> list[ParamDict]:
    """`n` Gaussian directions around the model's weights, each normalised against them, as
    dicts keyed like model.state_dict() (a missing key is zero along that tensor): what
    `lh.surface(directions="random")` draws with the same arguments, to reuse or inspect.

    Args:
        model: the model whose weights are the origin (not modified).
        n: how many directions (x first, then y, ... from one seeded stream).
        seed: the stream's seed.
        norm: filter (each filter scaled to its weights' norm, Li et al.), layer, weight, none.
        ignore: biasbn (1-D tensors — biases, BN — stay zero) or none.
        dir_type: weights (parameters) or states (BN running statistics too).
        same_dir: every direction equal to the first.
    """
    origin = {k: v.detach() for k, v in model.state_dict().items()}
    keys = direction_keys(model, dir_type)
    return random_basis(origin, keys, n, seed, norm, ignore, same_dir)
