"""What the library functions share: the engine options from keyword arguments, the device a
model computes on, and the data as the engine takes them (or as tensors, for the kernels that
index samples)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch
from torch import nn

from landscape_hpc.config import EngineConfig
from landscape_hpc.data import Split
from landscape_hpc.engine.data import as_splits
from landscape_hpc.errors import UserError


def engine_options(
    batch_size: int,
    memory_mb: float,
    bn: str,
    loss: Any,
    strategy: str,
    fold_bn: bool,
    precision: str = "fp32",
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
        precision=precision,
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
        bn_data = every[bn_split]  # the split itself, as the command passes it
    return {n: every[n] for n in names}, bn_data


def resident_splits(
    data: Any, device: torch.device, names: Optional[Sequence[str]], key: str = "splits"
) -> dict[str, Split]:
    """The named splits of `data` (default: all) as tensors on `device`: the geometry kernels
    index and differentiate samples, so a streamed split is refused. `key` names the argument
    that asked for them in the message (split or splits)."""
    every = as_splits(data, device)
    names = list(every) if names is None else list(names)
    missing = [n for n in names if n not in every]
    if missing or not names:
        asked = repr(names[0]) if key == "split" and len(names) == 1 else str(names)
        raise UserError(
            f"{key}={asked}: {missing or 'nothing'} not in the data, which hold the splits "
            f"{list(every)}; pass {key}= from those"
        )
    out = {}
    for name in names:
        value = every[name]
        if getattr(value, "streamed", False):
            raise UserError(
                f"data[{name!r}] is streamed (a Dataset or a DataLoader); this function indexes "
                "its samples: pass it as (inputs, labels) tensors"
            )
        inputs, labels = value  # a resident split unpacks as its (inputs, target) pair
        if not (isinstance(inputs, torch.Tensor) and isinstance(labels, torch.Tensor)):
            raise UserError(
                f"data[{name!r}] holds keyword inputs or no labels; this function needs "
                "(inputs, labels) tensors"
            )
        out[name] = Split(inputs, labels)
    return out
