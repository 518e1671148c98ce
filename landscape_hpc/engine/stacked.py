"""The vmap strategy: K points of a subspace as one batched network.

Their weights are stacked to (K, ...) and one `torch.func.vmap` of `torch.func.functional_call`
runs the K networks on each data batch: a small model costs one batched kernel per layer
instead of K Python-driven forwards.

A streamed split is read once per pass: the pass's points share every batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import vmap

from landscape_hpc.engine.batchnorm import bn_inputs, bn_recompute_template, fresh_bn_state
from landscape_hpc.engine.data import Inputs, Split, batches
from landscape_hpc.engine.losses import Sums, run_model
from landscape_hpc.engine.memory import points_per_pass
from landscape_hpc.engine.metrics import Forward, Points, concat, split_sums
from landscape_hpc.engine.shared_input import FirstLinear, first_linear
from landscape_hpc.engine.subspace import Subspace, tied_aliases
from landscape_hpc.params import ParamDict


class Stacked:
    """functional_call of a template model on (moving (K, ...), fixed) weights, vmapped over K."""

    def __init__(self, model: nn.Module):
        self.model = model
        aliases = tied_aliases(model)  # functional_call moves a tied alias with its primary

        def forward(moving: ParamDict, fixed: ParamDict, x: Inputs) -> Tensor:
            if aliases:
                moving = {k: v for k, v in moving.items() if k not in aliases}
                fixed = {k: v for k, v in fixed.items() if k not in aliases}
            return run_model(self.model, x, (moving, fixed))  # unwrapped inside the vmap

        self.forward = vmap(forward, in_dims=(0, None, None))

    def __call__(self, moving: ParamDict, fixed: ParamDict, x: Inputs) -> Tensor:
        return self.forward(moving, fixed, x)  # (K, B, ...)


def recompute_bn_batched(
    model: nn.Module, moving: ParamDict, fixed: ParamDict, bn_data: Split | Tensor, batch_size: int
) -> tuple[ParamDict, ParamDict]:
    """BN running statistics recomputed at each of the K points from `bn_data` (inputs only),
    in one read of it."""
    k = next(iter(moving.values())).shape[0] if moving else 1
    moving, fixed = fresh_bn_state(model, moving, fixed, k)
    stacked = Stacked(bn_recompute_template(model))
    with torch.no_grad():
        for inputs in bn_inputs(bn_data, batch_size):
            stacked(moving, fixed, inputs)  # updates moving[...running_*] in place
    return moving, fixed


class StackedRest:
    """The rest of K networks after their first Linear (shared_input.py), vmapped over K: their
    first layers' outputs computed as one product on the shared batch."""

    def __init__(self, first: FirstLinear):
        self.first = first

        def forward(moving: ParamDict, fixed: ParamDict, h: Tensor) -> Tensor:
            return run_model(first.rest, h, (moving, fixed))

        self.forward = vmap(forward, in_dims=(0, None, 0))

    def points(self, subspace: Subspace, coords: Tensor, moving: ParamDict, fixed: ParamDict):
        """x (B, ...) -> (K, B, ...) at coords (K, d), the states (moving, fixed) there."""
        moving, fixed = self.first.rest_weights(moving), self.first.rest_weights(fixed)
        return lambda x: self.forward(moving, fixed, self.first.outputs(subspace, coords, x))


def stacked_points(
    stacked: Stacked,
    subspace: Subspace,
    coords: Tensor,
    bn_data: Split | None,
    batch_size: int,
    rest: StackedRest | None = None,
) -> Forward:
    """The k = len(coords) networks at coords (k, d): x (B, ...) -> (k, B, ...). BN statistics
    recomputed from bn_data when given. `rest`: the first Linear as one shared product."""
    moving, fixed = subspace.points(coords)
    if bn_data is not None:
        moving, fixed = recompute_bn_batched(stacked.model, moving, fixed, bn_data, batch_size)
    if moving and rest is not None:
        return rest.points(subspace, coords, moving, fixed)
    if moving:
        return lambda x: stacked(moving, fixed, x)
    k = coords.shape[0]  # no direction moves anything: one network, shared by all k points

    def shared(x: Inputs) -> Tensor:
        out = run_model(stacked.model, x, fixed)
        return out.expand(k, *out.shape)

    return shared


def shared_input(splits: list[Split]) -> bool:
    """Whether every split's inputs are one floating-point tensor (a first Linear can take)."""
    for split in splits:
        sample = split.sample()
        if not (isinstance(sample, Tensor) and sample.is_floating_point()):
            return False
    return True


class Batched:
    """Points of one subspace on fixed data, as many per batched pass as the memory budget
    allows; built once and called chunk after chunk."""

    def __init__(self, points: Points, batch_size: int, memory_mb: float):
        self.points, self.batch_size = points, batch_size
        self.stacked = Stacked(points.model.eval())
        splits = list(points.data.values())
        shared = shared_input(splits) and not tied_aliases(points.model)
        first = first_linear(points.model, points.subspace) if shared else None
        self.rest = StackedRest(first) if first is not None else None
        # a streamed split comes in its loader's batches: the largest sizes the activations
        largest = max([batch_size] + [s.first().n for s in splits if s.streamed])
        self.per_pass = points_per_pass(
            points.model, points.subspace, splits[0].sample(), largest, memory_mb
        )

    def __call__(self, coords: Tensor) -> dict[str, Sums]:
        """The sums of every split at each row of coords (K, d): rows (K,) (metrics.join)."""
        p = self.points
        parts = []
        with torch.no_grad():
            for chunk in batches(coords.shape[0], self.per_pass):
                forward = stacked_points(
                    self.stacked, p.subspace, coords[chunk], p.bn_data, p.bn_batch_size, self.rest
                )
                parts.append(
                    {
                        name: split_sums(forward, split, self.batch_size, p.loss)
                        for name, split in p.data.items()
                    }
                )
        return concat(parts)
