"""Targets for `model=custom` and `dataset=custom` tests: importable callables as a user would
write them."""

from __future__ import annotations

import time

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


def image_splits(
    n_train: int = 40, n_test: int = 20, seed: int = 0
) -> dict[str, tuple[Tensor, Tensor]]:
    """Seeded (N, 1, 8, 8) images with labels 0..9, for tiny_net through the surface command."""
    g = torch.Generator().manual_seed(seed)
    return {
        "train": (torch.randn(n_train, 1, 8, 8, generator=g), torch.arange(n_train) % 10),
        "test": (torch.randn(n_test, 1, 8, 8, generator=g), torch.arange(n_test) % 10),
    }


# --- model=custom targets for the MPI tests (tests/test_mpi.py) ---


def _mpi_rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


class _FailingNet(nn.Module):
    """tiny_net whose forward raises on MPI rank `fail_rank`, as a GPU out of memory would."""

    def __init__(self, fail_rank: int, width: int) -> None:
        super().__init__()
        self.net = tiny_net(width)
        self.fail_rank = fail_rank

    def forward(self, x: Tensor) -> Tensor:
        if _mpi_rank() == self.fail_rank:
            raise RuntimeError(f"out of memory (simulated on rank {self.fail_rank})")
        return self.net(x)


def failing_net(fail_rank: int = 1, at: str = "forward", width: int = 4) -> nn.Module:
    """at=forward: every forward on `fail_rank` raises; at=build: building the net raises there
    (a checkpoint that is bad only on that rank's node), before any work is handed out."""
    if at == "build" and _mpi_rank() == fail_rank:
        raise RuntimeError(f"corrupt checkpoint (simulated on rank {fail_rank})")
    return _FailingNet(fail_rank, width)


class _DivergingNet(nn.Module):
    """tiny_net whose loss diverges far from its initial weights: where the first layer's weight
    norm exceeds `inf_factor` times its initial norm, class 0 gets logit -inf (loss +inf); beyond
    `nan_factor` times, every logit is NaN (loss NaN). A real value everywhere else.

    Each forward also sleeps `delay_s`: a stand-in for a big net on a slow device, so a test can
    act while a run is still in progress."""

    def __init__(self, inf_factor: float, nan_factor: float, width: int, delay_s: float) -> None:
        super().__init__()
        self.net = tiny_net(width)
        norm0 = float(self.net[0].weight.detach().norm())
        self.inf_norm, self.nan_norm = inf_factor * norm0, nan_factor * norm0
        self.delay_s = delay_s

    def forward(self, x: Tensor) -> Tensor:
        if self.delay_s:
            time.sleep(self.delay_s)
        norm = self.net[0].weight.norm()
        logits = self.net(x)  # (B, 10)
        shift = torch.where(norm > self.inf_norm, float("-inf"), 0.0)
        logits = torch.cat([logits[..., :1] + shift, logits[..., 1:]], dim=-1)
        return torch.where(norm > self.nan_norm, torch.full_like(logits, float("nan")), logits)


def diverging_net(
    inf_factor: float = 1.3, nan_factor: float = 1.6, width: int = 4, delay_s: float = 0.0
) -> nn.Module:
    return _DivergingNet(inf_factor, nan_factor, width, delay_s)


def loader_splits(n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict[str, object]:
    """image_splits with the train split as a DataLoader of batches of 16 (streamed) and the
    test split as tensors: the surface of either must be the same."""
    from torch.utils.data import DataLoader, TensorDataset

    splits = image_splits(n_train, n_test, seed)
    return {
        "train": DataLoader(TensorDataset(*splits["train"]), batch_size=16),
        "test": splits["test"],
    }


def token_splits(n: int = 6) -> dict[str, tuple[Tensor, Tensor]]:
    """Integer inputs (token ids): they must stay integers."""
    ids = torch.arange(n * 4).reshape(n, 4) % 7
    return {"train": (ids, torch.arange(n) % 2), "test": (ids[:2], torch.arange(2))}
