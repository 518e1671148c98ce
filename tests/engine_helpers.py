"""A random filter-normalised plane through a model's weights: the subspace the engine tests
(test_evaluate, test_bnfold) evaluate points of."""

from __future__ import annotations

from torch import nn

from landscape_hpc import directions
from landscape_hpc.engine.subspace import Subspace


def random_plane(model: nn.Module, dir_type: str = "weights", ignore: str = "biasbn") -> Subspace:
    origin = {k: v.clone() for k, v in model.state_dict().items()}
    keys = directions.direction_keys(model, dir_type)
    return Subspace(origin, directions.random_basis(origin, keys, 2, 0, "filter", ignore))
