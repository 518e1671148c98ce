"""Stochastic weight averaging (Izmailov et al. 2018; Fort & Jastrzebski 2019, sec. 4.5): the
average of snapshots' weights, then BatchNorm's running statistics recomputed at the average
from training data, as torch.optim.swa_utils.update_bn does (the snapshots' running statistics
do not describe the averaged net's activations).

    average_states(states)                    every floating entry averaged (in float64, cast
                                              back); integer ones (BN batch counters) the first's
    swa_state(model, states, bn_data, b)      that average with the BN statistics recomputed
                                              (engine/batchnorm.py: momentum=None, each batch of
                                              b inputs weighing the same), when the model has BN

Pure maths on state dicts; no MPI, no files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from landscape_hpc.engine.batchnorm import has_bn, recompute_bn_state
from landscape_hpc.params import ParamDict


def average_states(states: Sequence[Mapping[str, Tensor]]) -> ParamDict:
    """The entry-wise mean of state dicts of one architecture (same keys, shapes, dtypes)."""
    if not states:
        raise ValueError("nothing to average: give at least one state dict")
    first = states[0]
    for i, state in enumerate(states[1:], start=1):
        if set(state) != set(first):
            diff = sorted(set(state) ^ set(first))
            raise ValueError(f"state {i} and state 0 differ in keys: {diff[:5]}")
        for key, value in first.items():
            if state[key].shape != value.shape or state[key].dtype != value.dtype:
                raise ValueError(
                    f"state {i} has {key!r} of shape {tuple(state[key].shape)} "
                    f"{state[key].dtype}, state 0 {tuple(value.shape)} {value.dtype}"
                )
    out: ParamDict = {}
    for key, value in first.items():
        if value.is_floating_point():
            total = sum(s[key].detach().double() for s in states)
            out[key] = (total / len(states)).to(value.dtype)
        else:
            out[key] = value.detach().clone()
    return out


def swa_state(
    model: nn.Module, states: Sequence[Mapping[str, Tensor]], bn_data: Any, batch_size: int
) -> ParamDict:
    """average_states, then (a model with BN) its running statistics recomputed from bn_data
    (a Split or a Tensor of training inputs) at the averaged weights; `model` is the template
    (its own weights unused)."""
    averaged = average_states(states)
    if not has_bn(model):
        return averaged
    if bn_data is None:
        raise ValueError("the model has BatchNorm: its statistics need training inputs (bn_data)")
    return recompute_bn_state(model, averaged, bn_data, batch_size)
