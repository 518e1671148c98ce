"""A low-dimensional affine subspace of weight space: θ(c) = origin + Σ_k c_k · basis_k.

Every experiment in the seed papers evaluates a network at points of such a subspace (Li et al.
surfaces, MPO planes, Fort & Jastrzebski's hyperplanes); the evaluation engine takes one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape_hpc import params
from landscape_hpc.params import ParamDict

#: BN running variances are clamped at zero: a direction through the running statistics
#: (dir_type=states) must never produce a negative variance anywhere on the grid.
NONNEGATIVE_SUFFIX = "running_var"


@dataclass
class Subspace:
    """origin: the full state (parameters and buffers); basis: d directions.

    A key missing from a basis vector means zero along that tensor; integer buffers
    (num_batches_tracked) are never moved.
    """

    origin: ParamDict
    basis: list[ParamDict]

    def __post_init__(self) -> None:
        for i, direction in enumerate(self.basis):
            for key, d in direction.items():
                if key not in self.origin:
                    raise ValueError(f"basis {i} moves {key!r}, which the origin does not hold")
                if d.shape != self.origin[key].shape:
                    raise ValueError(
                        f"basis {i} has shape {tuple(d.shape)} for {key!r}, "
                        f"the origin {tuple(self.origin[key].shape)}"
                    )

    @property
    def dim(self) -> int:
        return len(self.basis)

    def to(self, device: torch.device | str) -> Subspace:
        move = lambda p: {k: v.to(device) for k, v in p.items()}  # noqa: E731
        return Subspace(move(self.origin), [move(d) for d in self.basis])

    def point(self, coords: Tensor) -> ParamDict:
        """The full state at one coordinate vector (d,)."""
        state = params.combine(self.origin, self.basis, coords)
        return clamp_variances(state)

    def points(self, coords: Tensor) -> tuple[ParamDict, ParamDict]:
        """States at K coordinate vectors (K, d): (moving (K, ...) tensors, fixed shared ones)."""
        moving, fixed = params.combine_batch(self.origin, self.basis, coords)
        return clamp_variances(moving), fixed


def clamp_variances(state: ParamDict) -> ParamDict:
    """Running variances clamped at 0 (a plane can take them below); the rest as given."""
    return {k: v.clamp_min(0) if k.endswith(NONNEGATIVE_SUFFIX) else v for k, v in state.items()}


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """{alias: primary} for the state_dict keys naming a tensor an earlier key already names
    (a HF model's lm_head.weight tied to its token embedding): one tensor, two names."""
    first: dict[int, str] = {}
    aliases = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in first:
            aliases[key] = first[id(tensor)]
        else:
            first[id(tensor)] = key
    return aliases


def tie(subspace: Subspace, aliases: dict[str, str]) -> Subspace:
    """The subspace with every tied alias moving as its primary (one tensor moves once): a
    direction given only for the primary (random directions follow named_parameters, which
    names a tied tensor once) would otherwise leave the alias at the origin, and loading both
    names would keep the unmoved one."""
    if not aliases:
        return subspace
    origin = dict(subspace.origin)
    basis = [dict(d) for d in subspace.basis]
    for alias, primary in aliases.items():
        if primary in origin:
            origin[alias] = origin[primary]
        for d in basis:
            d.pop(alias, None)
            if primary in d:
                d[alias] = d[primary]
    return Subspace(origin, basis)
