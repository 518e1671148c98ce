"""PLACEHOLDER (replaced by the protocol branch): resident (inputs, labels) splits only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


def as_splits(data: Any, device: torch.device, batch_size: int = 256) -> dict[str, Any]:
    if isinstance(data, Mapping):
        return {str(k): _pair(v, device) for k, v in data.items()}
    return {"train": _pair(data, device)}


def _pair(value: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    inputs, labels = value
    return torch.as_tensor(inputs).to(device), torch.as_tensor(labels).to(device)
