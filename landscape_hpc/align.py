"""Permutation alignment of two nets before interpolating between them: weight matching.

Ainsworth, Hayase & Srinivasa 2022 (Git Re-Basin, sec. 3.2 and Algorithm 1): permuting the
hidden units of a layer (the rows of its weight, the matching entries of its bias and BN, the
columns of the next layer's weight) leaves the function unchanged, so net B has as many
equivalent copies as permutations. Weight matching picks the copy of B nearest A: it maximises
Σ over weights of <W_a, π(W_b)> by coordinate descent over the permutation groups, each step a
linear assignment (scipy.optimize.linear_sum_assignment) with the other groups held fixed, so
the objective never decreases.

A `PermutationSpec` says which axis of which state_dict entry each group permutes (their
perm_to_axes / axes_to_perm). `permutation_spec(model)` derives it for feed-forward chains of
Linear / Conv2d / BatchNorm / elementwise activations / pooling / flatten (the modules walked in
the order they are registered, which must be the order forward runs them) and for residual blocks
shaped like models/resnet.py's BasicBlock (conv1 → bn1 → conv2 → bn2 plus `shortcut`: one
permutation is shared along the residual stream, a projection shortcut starts a new one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from landscape_hpc.errors import UserError

#: modules that act on each channel (or feature) alone: a permutation passes through them
PASS_THROUGH: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
SUPPORTED = (
    "Linear, Conv2d (groups=1), BatchNorm1d/2d, Flatten, elementwise activations, dropout, "
    "pooling, and residual blocks of conv1/bn1/conv2/bn2 + shortcut (models/resnet.py)"
)

Perms = dict[str, Tensor]


@dataclass(frozen=True)
class PermutationSpec:
    """Which state_dict axes each permutation group permutes.

    axes_to_perm: key -> one group name (or None: not permuted) per axis of that tensor; every
    key of the net's state_dict is here (num_batches_tracked with no axes).
    perm_to_axes: group -> the (key, axis) pairs it permutes; the first is the layer that makes
    the group's units, whose axis size is the group's size. An axis k times that size (a Linear
    after a flatten of (C, H, W)) is permuted in blocks of k contiguous entries.
    buffers: keys permuted with their units but left out of the matching objective (BN running
    statistics: not weights).
    """

    axes_to_perm: dict[str, tuple[Optional[str], ...]]
    perm_to_axes: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    buffers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.perm_to_axes:
            for key, axes in self.axes_to_perm.items():
                for axis, perm in enumerate(axes):
                    if perm is not None:
                        self.perm_to_axes.setdefault(perm, []).append((key, axis))


class _Walk:
    """The state of the walk along a chain: the group on the current channel axis and its width."""

    def __init__(self, model: nn.Module) -> None:
        self.state = model.state_dict(keep_vars=True)
        self.axes: dict[str, list[Optional[str]]] = {}
        self.buffers: set[str] = set()
        self.perm: Optional[str] = None  # the group permuting the current channels (None: input)
        self.width: Optional[int] = None  # the current channel count (None: not known yet)
        self.spatial = False  # the channels carry (H, W) maps: a flatten makes blocks of them

    def entries(self, name: str, module: nn.Module) -> dict[str, Tensor]:
        prefix = f"{name}." if name else ""
        return {
            k: v
            for k, v in self.state.items()
            if k.startswith(prefix) and "." not in k[len(prefix) :]
        }

    def weight_layer(
        self, name: str, module: nn.Module, fan_in: int, out: int, spatial: bool
    ) -> None:
        """Linear or conv: output units a new group, input axis the current group."""
        if self.width is not None and fan_in != self.width:
            blocks = self.spatial and not spatial and fan_in % self.width == 0
            if not blocks:
                raise UserError(
                    f"{name} ({type(module).__name__}) takes {fan_in} inputs after {self.width} "
                    "channels: the modules are not a chain in registration order; align supports "
                    f"{SUPPORTED}"
                )
        new = name
        for key, value in self.entries(name, module).items():
            leaf = key.rpartition(".")[2]
            if leaf == "weight":
                self.axes[key] = [new, self.perm] + [None] * (value.dim() - 2)
            elif leaf == "bias":
                self.axes[key] = [new]
            else:
                raise UserError(f"{key}: an entry align does not know; align supports {SUPPORTED}")
        self.perm, self.width, self.spatial = new, out, spatial

    def batch_norm(self, name: str, module: nn.modules.batchnorm._BatchNorm) -> None:
        if self.width is not None and module.num_features != self.width:
            raise UserError(
                f"{name}: BatchNorm of {module.num_features} after {self.width} channels: the "
                f"modules are not a chain in registration order; align supports {SUPPORTED}"
            )
        for key in self.entries(name, module):
            if key.endswith("num_batches_tracked"):
                self.axes[key] = []
                continue
            self.axes[key] = [self.perm]
            if key.endswith(("running_mean", "running_var")):
                self.buffers.add(key)
        self.width = module.num_features


def _walk(walk: _Walk, name: str, module: nn.Module) -> None:
    children = list(module.named_children())
    own = list(walk.entries(name, module))
    if hasattr(module, "shortcut") and children:
        _residual_block(walk, name, module)
    elif isinstance(module, nn.Linear):
        walk.weight_layer(name, module, module.in_features, module.out_features, spatial=False)
    elif isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise UserError(
                f"{name}: Conv2d with groups={module.groups}; align supports {SUPPORTED}"
            )
        walk.weight_layer(name, module, module.in_channels, module.out_channels, spatial=True)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        walk.batch_norm(name, module)
    elif isinstance(module, nn.Flatten):
        pass  # the next Linear sees the channels in blocks of H·W (walk.spatial)
    elif isinstance(module, PASS_THROUGH) and not own:
        pass
    elif children and not own:
        for child_name, child in children:
            _walk(walk, f"{name}.{child_name}" if name else child_name, child)
    else:
        raise UserError(
            f"{name or 'the model'} ({type(module).__name__}) cannot be permuted; align "
            f"supports {SUPPORTED}"
        )


def _residual_block(walk: _Walk, name: str, block: nn.Module) -> None:
    """conv1 → bn1 → conv2 → bn2 (+ shortcut: Identity, or conv → BN): the block's inner units
    are a group; its output shares the stream's group (identity shortcut) or starts one."""
    parts = dict(block.named_children())
    shortcut = parts.get("shortcut")
    kinds = {"conv1": nn.Conv2d, "bn1": nn.BatchNorm2d, "conv2": nn.Conv2d, "bn2": nn.BatchNorm2d}
    projection = isinstance(shortcut, nn.Sequential) and [type(m) for m in shortcut] == [
        nn.Conv2d,
        nn.BatchNorm2d,
    ]
    shaped = set(parts) == {*kinds, "shortcut"} and all(
        isinstance(parts[k], t) for k, t in kinds.items()
    )
    if not shaped or not (isinstance(shortcut, nn.Identity) or projection):
        raise UserError(
            f"{name} ({type(block).__name__}) has a shortcut but not the shape of "
            "models/resnet.py's BasicBlock (conv1, bn1, conv2, bn2, shortcut = Identity or "
            f"conv + BN); align supports {SUPPORTED}"
        )
    stream, width = walk.perm, walk.width
    for part in ("conv1", "bn1", "conv2", "bn2"):
        _walk(walk, f"{name}.{part}", parts[part])
    if projection:
        walk.perm, walk.width = stream, width
        _walk(walk, f"{name}.shortcut", shortcut)  # its conv's output: the block's new group
        out = walk.perm
        for key in walk.entries(f"{name}.conv2", parts["conv2"]):
            walk.axes[key][0] = out
        for key in walk.entries(f"{name}.bn2", parts["bn2"]):
            if walk.axes[key]:
                walk.axes[key][0] = out
    else:
        _rename(walk, walk.perm, stream)  # conv2's output joins the stream
        walk.perm = stream
    walk.spatial = True


def _rename(walk: _Walk, old: Optional[str], new: Optional[str]) -> None:
    for axes in walk.axes.values():
        axes[:] = [new if p == old else p for p in axes]


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The groups of `model` (a chain or a CIFAR ResNet, see the module's docstring); the last
    weight layer's outputs (the net's outputs) are not permuted. Raises UserError naming the
    first module that is not supported."""
    walk = _Walk(model)
    _walk(walk, "", model)
    missing = sorted(set(walk.state) - set(walk.axes))
    if missing:
        raise UserError(
            f"{missing[:3]}: entries of no supported module; align supports {SUPPORTED}"
        )
    _rename(walk, walk.perm, None)  # the outputs stay in place
    axes = {key: tuple(walk.axes[key]) for key in walk.state}  # in state_dict order
    return PermutationSpec(axes, buffers=frozenset(walk.buffers))


def check_spec(spec: PermutationSpec, state: Mapping[str, Tensor]) -> dict[str, int]:
    """Each group's size; raises UserError when `state` does not fit `spec`."""
    if set(state) != set(spec.axes_to_perm):
        odd = sorted(set(state) ^ set(spec.axes_to_perm))
        raise UserError(f"state_dict keys {odd[:3]} do not match the permutation spec's")
    sizes = {}
    for perm, axes in spec.perm_to_axes.items():
        key, axis = axes[0]
        sizes[perm] = n = state[key].shape[axis]
        for key, axis in axes:
            if state[key].shape[axis] % n:
                raise UserError(
                    f"{key} axis {axis} of size {state[key].shape[axis]} ≠ k·{n} ({perm})"
                )
    for key, axes in spec.axes_to_perm.items():
        if len(axes) != state[key].dim():
            raise UserError(f"{key}: {state[key].dim()} axes, the spec names {len(axes)}")
    return sizes


def _index(perm: Tensor, size: int) -> Tensor:
    """A group's permutation as an index of an axis of `size` entries (blocks when larger)."""
    k = size // len(perm)
    return (perm[:, None] * k + torch.arange(k, device=perm.device)).reshape(-1)  # (size,)


def _permuted(spec: PermutationSpec, perms: Perms, key: str, w: Tensor, skip: int = -1) -> Tensor:
    for axis, perm in enumerate(spec.axes_to_perm[key]):
        if perm is not None and axis != skip:
            w = w.index_select(axis, _index(perms[perm].to(w.device), w.shape[axis]))
    return w


def apply_permutation(
    spec: PermutationSpec, perms: Perms, state: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """π(state): every entry with its axes permuted (new tensors; `state` is not changed, the
    entries no group touches come back as they are). Entry i of a permuted axis is entry
    perms[group][i] of the old one (a block of k entries: block perms[group][i])."""
    check_spec(spec, state)
    return {key: _permuted(spec, perms, key, value) for key, value in state.items()}


def matching_objective(
    spec: PermutationSpec,
    perms: Perms,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
) -> float:
    """Σ over the weights (not the buffers) of <W_a, π(W_b)>, in float64: what matching raises."""
    total = 0.0
    for key in spec.axes_to_perm:
        if key in spec.buffers or not state_a[key].is_floating_point():
            continue
        w_b = _permuted(spec, perms, key, state_b[key])
        total += float(
            torch.vdot(
                state_a[key].double().reshape(-1), w_b.double().reshape(-1).to(state_a[key].device)
            )
        )
    return total


def weight_matching(
    spec: PermutationSpec,
    state_a: Mapping[str, Tensor],
    state_b: Mapping[str, Tensor],
    max_iter: int = 100,
    seed: int = 0,
) -> Perms:
    """Ainsworth et al. 2022, Algorithm 1: the permutations π making π(state_b) nearest state_a.

    Each iteration visits the groups in a random order (numpy, `seed`); a group's step solves
    the linear assignment maximising Σ over its (key, axis) pairs of <W_a, π(W_b)> with the other
    groups fixed. Stops after an iteration that changes no group, or after `max_iter`.
    Returns group -> int64 permutation (CPU), for apply_permutation(spec, perms, state_b).
    """
    sizes = check_spec(spec, state_a)
    check_spec(spec, state_b)
    shapes = [k for k in state_a if state_a[k].shape != state_b[k].shape]
    if shapes:
        raise UserError(f"state_b is not of state_a's architecture: shapes of {shapes[:3]} differ")
    perms = {p: torch.arange(n) for p, n in sizes.items()}
    names = list(sizes)
    rng = np.random.default_rng(seed)
    for _ in range(max_iter):
        changed = False
        for p in rng.permutation(len(names)):
            perm, n = names[p], sizes[names[p]]
            cost = torch.zeros(n, n, dtype=torch.float64)  # cost[i, j] = Σ <a's unit i, b's unit j>
            for key, axis in spec.perm_to_axes[perm]:
                if key in spec.buffers:
                    continue
                w_a = state_a[key].double().movedim(axis, 0).reshape(n, -1)
                w_b = _permuted(spec, perms, key, state_b[key], skip=axis).double()
                w_b = w_b.to(w_a.device).movedim(axis, 0).reshape(n, -1)
                cost += (w_a @ w_b.T).cpu()
            _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            rows = torch.arange(n)
            old = float(cost[rows, perms[perm]].sum())
            new = float(cost[rows, torch.from_numpy(cols)].sum())
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[perm] = torch.from_numpy(cols).long()
                changed = True
        if not changed:
            break
    return perms
