"""The vmap strategy: K points of a subspace as one batched network.

Their weights are stacked to (K, ...) and one `torch.func.vmap` of `torch.func.functional_call`
runs the K networks on each data batch: a small model costs one batched kernel per layer
instead of K Python-driven forwards.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from landscape_hpc.engine.batchnorm import bn_recompute_template, fresh_bn_state
from landscape_hpc.engine.losses import Forward, Points, batches, concat, split_metrics
from landscape_hpc.engine.memory import points_per_pass
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.params import ParamDict


class Stacked:
    """functional_call of a template model on (moving (K, ...), fixed) weights, vmapped over K."""

    def __init__(self, model: nn.Module):
        self.model = model

        def forward(moving: ParamDict, fixed: ParamDict, x: Tensor) -> Tensor:
            return functional_call(self.model, (moving, fixed), (x,))

        self.forward = vmap(forward, in_dims=(0, None, None))

    def __call__(self, moving: ParamDict, fixed: ParamDict, x: Tensor) -> Tensor:
        return self.forward(moving, fixed, x)  # (K, B, C)


def recompute_bn_batched(
    model: nn.Module, moving: ParamDict, fixed: ParamDict, bn_data: Tensor, batch_size: int
) -> tuple[ParamDict, ParamDict]:
    """BN running statistics recomputed at each of the K points from `bn_data` (inputs only)."""
    k = next(iter(moving.values())).shape[0] if moving else 1
    moving, fixed = fresh_bn_state(model, moving, fixed, k)
    stacked = Stacked(bn_recompute_template(model))
    with torch.no_grad():
        for b in batches(bn_data.shape[0], batch_size):
            stacked(moving, fixed, bn_data[b])  # updates moving[...running_*] in place
    return moving, fixed


def stacked_points(
    stacked: Stacked, subspace: Subspace, coords: Tensor, bn_data: Tensor | None, batch_size: int
) -> Forward:
    """The k = len(coords) networks at coords (k, d): x (B, ...) -> (k, B, [C]). BN statistics
    recomputed from bn_data when given."""
    moving, fixed = subspace.points(coords)
    if bn_data is not None:
        moving, fixed = recompute_bn_batched(stacked.model, moving, fixed, bn_data, batch_size)
    if moving:
        return lambda x: stacked(moving, fixed, x)
    k = coords.shape[0]  # no direction moves anything: one network, shared by all k points

    def shared(x: Tensor) -> Tensor:
        out = functional_call(stacked.model, fixed, (x,))
        return out.expand(k, *out.shape)

    return shared


class Batched:
    """Points of one subspace on fixed data, as many per batched pass as the memory budget
    allows; built once and called chunk after chunk."""

    def __init__(self, points: Points, batch_size: int, memory_mb: float):
        self.points, self.batch_size = points, batch_size
        self.stacked = Stacked(points.model.eval())
        sample = next(iter(points.data.values()))[0][0]
        self.per_pass = points_per_pass(
            points.model, points.subspace, sample, batch_size, memory_mb
        )

    def __call__(self, coords: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """Mean loss and accuracy of every split at each row of coords (K, d): (K,) each."""
        p = self.points
        parts = []
        with torch.no_grad():
            for chunk in batches(coords.shape[0], self.per_pass):
                k = coords[chunk].shape[0]
                forward = stacked_points(
                    self.stacked, p.subspace, coords[chunk], p.bn_data, p.bn_batch_size
                )
                parts.append(
                    {
                        name: split_metrics(
                            forward, k, split, self.batch_size, p.loss, p.loss_output
                        )
                        for name, split in p.data.items()
                    }
                )
        return concat(parts)
