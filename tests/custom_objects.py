"""Targets for `model=custom` and `dataset=custom` tests: importable callables as a user would
write them."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset


def tiny_net(width: int = 4) -> nn.Module:
    """A small conv net for (1, 8, 8) images and 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, width, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(width * 2 * 2, 10),
    )


def not_a_module() -> dict[str, int]:
    """A callable that returns something other than an nn.Module."""
    return {"width": 4}


# --- dataset=custom targets ---


def tensor_splits(n_train: int = 12, n_test: int = 5) -> dict[str, tuple[Tensor, np.ndarray]]:
    """Train as (float64 tensor, int tensor), test as numpy arrays: both must become a Split."""
    inputs = torch.arange(n_train * 3, dtype=torch.float64).reshape(n_train, 3)
    test_inputs = np.ones((n_test, 3), dtype=np.float32)
    return {
        "train": (inputs, torch.arange(n_train) % 2),
        "test": (test_inputs, np.arange(n_test, dtype=np.int32) % 2),
    }


class SquaresDataset(Dataset):
    """Item i is (tensor([i, i*i]), i % 3), as a user's own map-style Dataset."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.tensor([index, index * index], dtype=torch.float32), index % 3


def dataset_splits(size: int = 6) -> dict[str, Dataset]:
    """Splits given as torch Datasets: loading must stack their items."""
    return {"train": SquaresDataset(size), "test": SquaresDataset(size // 2)}


def train_split_only() -> dict[str, tuple[Tensor, Tensor]]:
    """A target that forgets the test split."""
    return {"train": (torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64))}


def broken_splits() -> dict[str, Dataset]:
    """A target that fails while building its data."""
    raise FileNotFoundError("labels.csv")
