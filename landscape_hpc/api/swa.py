"""`lh.swa_average`: stochastic weight averaging of snapshots (Izmailov et al. 2018; Fort &
Jastrzebski 2019, sec. 4.5): their weights averaged, BN running statistics recomputed at the
average on the training data (landscape_hpc/swa.py).

    avg = lh.swa_average([snap_1, snap_2, snap_3], data)      # a new nn.Module
    lh.interpolate(snap_1, avg, data)                         # the snapshot vs its average
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import nn

from landscape_hpc.api.options import model_device, splits_on
from landscape_hpc.engine.batchnorm import has_bn
from landscape_hpc.errors import UserError, UserTypeError
from landscape_hpc.swa import swa_state


def swa_average(
    snapshots: Sequence[Any],
    data: Any = None,
    *,
    bn_split: str = "train",
    batch_size: int = 256,
    device: Optional[Union[str, torch.device]] = None,
) -> nn.Module:
    """A copy of snapshots[0] holding the mean of every snapshot's weights (every floating
    entry of the state dict), with BatchNorm's running statistics then recomputed at the
    average from `data`'s `bn_split` inputs in batches of `batch_size` (momentum=None: each
    batch weighs the same, as torch.optim.swa_utils.update_bn). The snapshots are not modified.

    Args:
        snapshots: two or more nets of one architecture (nn.Modules; after the first, state
            dicts too), e.g. a constant-learning-rate run's checkpoints.
        data: the splits as lh.surface takes them; needed only when the net has BatchNorm.
        bn_split: the split whose inputs the BN statistics are recomputed from.
        batch_size: inputs per forward of that pass.
        device: where the average is built (default: snapshots[0]'s device).
    """
    if isinstance(snapshots, (nn.Module, Mapping)) or not isinstance(snapshots, Sequence):
        raise UserTypeError(
            "snapshots= must be a list of nets of one architecture, e.g. [net_1, net_2, net_3]"
        )
    if len(snapshots) < 2:
        raise UserError(f"{len(snapshots)} snapshot(s): an average needs at least two")
    if not isinstance(snapshots[0], nn.Module):
        raise UserTypeError(
            f"snapshots[0] is a {type(snapshots[0]).__name__}; it must be an nn.Module (the "
            "average is a copy of it); the others may be state dicts"
        )
    target = model_device(snapshots[0], device)
    template = copy.deepcopy(snapshots[0]).to(target)
    states = []
    for i, snap in enumerate(snapshots):
        state = snap.state_dict() if isinstance(snap, nn.Module) else snap
        if not isinstance(state, Mapping):
            raise UserTypeError(f"snapshots[{i}] is a {type(snap).__name__}: a net or a state dict")
        states.append({k: v.detach().to(target) for k, v in state.items()})
    bn_data = None
    if has_bn(template):
        if data is None:
            raise UserError(
                "the net has BatchNorm: pass data= (its training inputs recompute the running "
                "statistics at the average, as SWA does)"
            )
        _, bn_data = splits_on(data, target, [bn_split], bn_split, batch_size)
    try:
        averaged = swa_state(template, states, bn_data, batch_size)
    except ValueError as e:
        raise UserError(f"snapshots differ: {e}") from None
    template.load_state_dict(averaged)
    return template
