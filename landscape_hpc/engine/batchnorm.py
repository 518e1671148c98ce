"""BatchNorm at points of a subspace: which nets have it, train-mode copies, and the running
statistics recomputed from training data at each point (engine.bn=recompute), batched over K
points or for states one at a time, with the plain in-place reference they are tested against.

The training data are a split of the data protocol (engine/data.py) or a Tensor of inputs; only
the inputs are used. BN with momentum=None averages the statistics of each batch equally, so a
streamed split's statistics are those of its loader's batches.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape_hpc.engine.data import Inputs, Resident, Split
from landscape_hpc.engine.losses import run_model
from landscape_hpc.params import ParamDict


def bn_inputs(bn_data: Split | Tensor, batch_size: int) -> Iterator[Inputs]:
    """The inputs of every batch of the training split (one read of a streamed one)."""
    split = Resident(bn_data, None, "bn_data") if isinstance(bn_data, Tensor) else bn_data
    for batch in split.batches(batch_size):
        yield batch.inputs


def has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def fresh_bn_state(model: nn.Module, moving: ParamDict, fixed: ParamDict, k: int):
    """Replaces the BN running statistics by fresh (K, C) ones and zero batch counters."""
    moving, fixed = dict(moving), dict(fixed)
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            for key, value in (("running_mean", 0.0), ("running_var", 1.0)):
                full = f"{name}.{key}"
                fixed.pop(full, None)
                ref = getattr(m, key)
                moving[full] = torch.full(
                    (k, *ref.shape), value, dtype=ref.dtype, device=ref.device
                )
            fixed[f"{name}.num_batches_tracked"] = torch.zeros(
                (), dtype=torch.long, device=m.running_mean.device
            )
    return moving, fixed


def train_mode_copy(model: nn.Module, **bn_settings: object) -> nn.Module:
    """A copy in train mode (BN normalises with the statistics of each batch) with dropout off,
    its BN layers given `bn_settings` (attribute values, e.g. momentum=None)."""
    template = copy.deepcopy(model).train()
    for m in template.modules():
        if isinstance(m, _BatchNorm):
            for name, value in bn_settings.items():
                setattr(m, name, value)
        elif isinstance(m, nn.Dropout):
            m.eval()
    return template


def bn_recompute_template(model: nn.Module) -> nn.Module:
    """A copy in train mode whose BN layers average the statistics of every batch equally
    (momentum=None), as torch.optim.swa_utils.update_bn and dnn-mode-connectivity do."""
    return train_mode_copy(model, momentum=None)


def recompute_bn_single(model: nn.Module, bn_data: Split | Tensor, batch_size: int) -> None:
    """Reference: the same recomputation on one model, in place."""
    template = bn_recompute_template(model)
    template.load_state_dict(model.state_dict())
    for m in template.modules():
        if isinstance(m, _BatchNorm):
            m.reset_running_stats()
    with torch.no_grad():
        for inputs in bn_inputs(bn_data, batch_size):
            run_model(template, inputs)
    model.load_state_dict(template.state_dict())


def recompute_bn_states(
    model: nn.Module, states: Sequence[ParamDict], bn_data: Split | Tensor, batch_size: int
) -> list[ParamDict]:
    """The same recomputation for full states, functionally (no vmap, no module copy), all in
    one read of the training data: each batch runs through every state in turn."""
    fresh = []
    for state in states:
        moving, fixed = fresh_bn_state(model, {}, dict(state), 1)
        fresh.append({**fixed, **{k: v[0] for k, v in moving.items()}})
    template = bn_recompute_template(model)
    with torch.no_grad():
        for inputs in bn_inputs(bn_data, batch_size):
            for weights in fresh:
                run_model(template, inputs, weights)  # updates weights[...running_*]
    return fresh


def recompute_bn_state(
    model: nn.Module, state: ParamDict, bn_data: Split | Tensor, batch_size: int
) -> ParamDict:
    """recompute_bn_states for one state."""
    return recompute_bn_states(model, [state], bn_data, batch_size)[0]
