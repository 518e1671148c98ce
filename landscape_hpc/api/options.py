"""What the library functions share: the engine options from keyword arguments, the device a
model computes on, and the data as the engine takes them."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from torch import nn

from landscape_hpc.config import EngineConfig
from landscape_hpc.engine.data import as_splits
from landscape_hpc.errors import UserError


def engine_options(
    batch_size: int, memory_mb: float, bn: str, loss: Any, strategy: str, fold_bn: bool
) -> EngineConfig:
    """The EngineConfig of keyword arguments (a callable loss travels beside it: loss=)."""
    name = loss if isinstance(loss, str) else "ce"
    return EngineConfig(
        batch_size=batch_size,
        memory_mb=memory_mb,
        bn=bn,
        loss=name,
        strategy=strategy,
        fold_bn=fold_bn,
    )


def model_device(model: nn.Module, device: Optional[Union[str, torch.device]]) -> torch.device:
    """`device`, or where the model's first parameter (or buffer) lives; the CPU for a model
    with no tensors."""
    if device is not None:
        from landscape_hpc.devices import resolve_device

        return resolve_device(str(device))
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def on_device(model: nn.Module, device: Optional[Union[str, torch.device]]) -> nn.Module:
    """The model itself where it already lives on `device` (or device is None), else a copy
    moved there: the caller's model is never moved."""
    target = model_device(model, device)
    if target == model_device(model, None):
        return model
    return copy.deepcopy(model).to(target)


def splits_on(
    data: Any,
    device: torch.device,
    splits: Optional[Sequence[str]],
    bn_split: Optional[str],
    batch_size: int = 256,
) -> tuple[dict[str, Any], Any]:
    """The splits to evaluate ({name: engine split}, in the order asked) and the split BN
    statistics are recomputed from (None unless `bn_split`), as landscape_hpc.engine.data
    reads them."""
    every = as_splits(data, device, batch_size)
    names = list(every) if splits is None else list(splits)
    missing = [n for n in names if n not in every]
    if missing or not names:
        raise UserError(
            f"splits={names}: {missing or 'nothing'} to evaluate; the data hold the splits "
            f"{list(every)}; pass splits= from those"
        )
    bn_data = None
    if bn_split is not None:
        if bn_split not in every:
            raise UserError(
                f"bn_split={bn_split!r} is not a split of the data ({', '.join(every)}); BN "
                'statistics are recomputed from it with bn="recompute": pass bn_split='
            )
        bn_data = every[bn_split][0]  # the inputs
    return {n: every[n] for n in names}, bn_data
