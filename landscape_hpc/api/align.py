"""Permutation alignment from Python (Ainsworth et al. 2022, weight matching): a copy of one net
with its hidden units permuted to match another's, the same function, so that the straight line
between the two no longer crosses the barrier that merely relabelled units put there.

    import landscape_hpc as lh
    before = lh.interpolate(net_a, net_b, data, t=(0, 1, 11))
    after = lh.interpolate(net_a, lh.align(net_a, net_b), data, t=(0, 1, 11))
    before.attrs["barrier_train"], after.attrs["barrier_train"]

The maths is landscape_hpc/align.py (the spec of a net, weight matching, the permutation).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from landscape_hpc import params
from landscape_hpc.align import (
    apply_permutation,
    matching_objective,
    permutation_spec,
    weight_matching,
)
from landscape_hpc.errors import UserError, check_seed

#: the permuted copy computes model_b's function: outputs equal up to float rounding
_RTOL, _ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class Alignment:
    """What `align` found, on the copy it returns as `.alignment`.

    perms: permutation group -> int64 permutation (entry i of a permuted axis of the copy is
    entry perms[group][i] of model_b's); objective_before / objective_after: Σ <W_a, π(W_b)>
    over the weights (BN running statistics excluded) at the identity and at the result.
    """

    perms: dict[str, Tensor]
    objective_before: float
    objective_after: float


def align(
    model_a: nn.Module,
    model_b: nn.Module,
    max_iter: int = 100,
    seed: int = 0,
    inputs: Optional[Tensor] = None,
    restarts: int = 1,
) -> nn.Module:
    """A copy of model_b with its hidden units permuted to match model_a by weight matching
    (Ainsworth, Hayase & Srinivasa 2022, Algorithm 1): the same function as model_b, its weights
    nearer model_a's. The permutations are on the copy as `.alignment` (an `Alignment`).

    The barrier before and after alignment (landscape_hpc/connectivity.py: the loss's height
    above the chord between the end nets, in the interpolation's attrs):

        lh.interpolate(a, b, data).attrs["barrier_train"]
        lh.interpolate(a, lh.align(a, b), data).attrs["barrier_train"]

    With BN, the running statistics interpolated between two nets fit neither (Jordan et al.
    2023, REPAIR); bn="recompute" in interpolate measures each point with its own.

    Supported nets: chains of Linear / Conv2d / BatchNorm / elementwise activations / pooling /
    flatten, their modules registered in the order forward runs them (the registry's mlp,
    mpo_cnn*, vgg9), and CIFAR ResNets (resnet20/56/110 and their _noshort twins); any other
    module raises UserError naming it. BN's running statistics move with their channels.

    model_a: the net to match (not changed).
    model_b: the net to permute, of model_a's architecture (not changed; the copy is on its
        device, in its train/eval mode).
    max_iter: at most this many passes over all permutation groups (a pass that changes no
        group ends the search).
    seed: the random order of the groups in each pass.
    restarts: weight matching runs with the seeds seed, seed + 1, ...; the permutation of the
        highest matching objective is kept (it needs no data). One run can end in a poor local
        optimum: docs/connectivity.md has a conv net whose aligned line rose above the plain
        one with one run and fell to the others' level with any of four other seeds.
    inputs: optional batch model_b takes: the copy's outputs on it (eval mode) are checked
        against model_b's, and a difference raises UserError (a net whose forward is not the
        chain its modules' order says). None: no check.

    Returns: the permuted copy of model_b, its `.alignment` the permutations and the matching
    objective before and after.
    """
    check_seed(seed, "seed")
    if not isinstance(model_a, nn.Module) or not isinstance(model_b, nn.Module):
        raise UserError("align(model_a, model_b): pass two nn.Modules of one architecture")
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
        raise UserError(f"max_iter={max_iter!r}: give a positive number of passes, e.g. 100")
    spec = permutation_spec(model_a)
    state_b = model_b.state_dict()
    device = next(iter(state_b.values())).device
    state_a = {k: v.detach().to(device) for k, v in model_a.state_dict().items()}
    missing, unexpected, shapes = params.layout_diff(state_a, state_b)
    if missing or unexpected or shapes:
        raise UserError(
            f"model_b is not of model_a's architecture (missing keys {missing[:3]}, unexpected "
            f"{unexpected[:3]}, shapes {[s[0] for s in shapes[:3]]}); pass two nets of one class"
        )
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 1:
        raise UserError(f"restarts={restarts!r}: give a positive number of runs, e.g. 1 or 5")
    runs = [
        weight_matching(spec, state_a, state_b, max_iter=max_iter, seed=seed + i)
        for i in range(restarts)
    ]
    perms = max(runs, key=lambda p: matching_objective(spec, p, state_a, state_b))
    identity = {p: torch.arange(len(v)) for p, v in perms.items()}
    aligned = copy.deepcopy(model_b)
    aligned.load_state_dict(apply_permutation(spec, perms, state_b))
    aligned.alignment = Alignment(
        perms,
        matching_objective(spec, identity, state_a, state_b),
        matching_objective(spec, perms, state_a, state_b),
    )
    if inputs is not None:
        _check_function(model_b, aligned, inputs)
    return aligned


def _check_function(model_b: nn.Module, aligned: nn.Module, inputs: Tensor) -> None:
    """Raises UserError unless `aligned` computes model_b's outputs on `inputs` (eval mode)."""
    twin = copy.deepcopy(model_b).eval()  # eval on copies: the callers' modes stay as they are
    probe = copy.deepcopy(aligned).eval()
    device = next(iter(twin.state_dict().values())).device
    with torch.no_grad():
        want, got = twin(inputs.to(device)), probe(inputs.to(device))
    if not torch.allclose(got, want, rtol=_RTOL, atol=_ATOL * float(want.abs().max())):
        worst = float((got - want).abs().max())
        raise UserError(
            "the permuted model_b computes another function (outputs differ by up to "
            f"{worst:.3g}): its forward is not the chain its modules' registration order says; "
            "align supports chains and CIFAR ResNets (see help(lh.align))"
        )
