"""A problem: the data set and the model built for it, on one device, set up the same way by
every command (surface, train, mpo, sweep, geometry)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from landscape_hpc.config import DatasetConfig, ModelConfig
from landscape_hpc.data import AnySplit, Split, load_dataset, num_classes
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model


@dataclass
class Problem:
    """`model` (its checkpoint or seeded init) and the data `splits`, both on `device`."""

    model: nn.Module
    splits: dict[str, AnySplit]  # streamed ones (engine Streamed) only where load_problem allowed
    num_classes: int
    device: torch.device

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(_inputs(next(iter(self.splits.values()))).shape[1:])

    @property
    def param_keys(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()]

    def require(self, names: Sequence[str], key: str = "splits") -> None:
        """A UserError naming config `key` when a split it asks for is not in the data set."""
        unknown = [s for s in names if s not in self.splits]
        if unknown:
            raise UserError(
                f"{key}={list(names)}: {unknown} not in the data set ({', '.join(self.splits)})"
            )


def load_problem(
    model_cfg: ModelConfig,
    dataset_cfg: DatasetConfig,
    device: torch.device | str,
    streamed: bool = False,
) -> Problem:
    """Loads the data set onto `device` and builds the model for its input shape and classes;
    `streamed`: a custom target's DataLoader splits are taken (the surface command)."""
    splits = load_dataset(dataset_cfg, torch.device(device), streamed)
    return problem_on(model_cfg, dataset_cfg, splits)


def _inputs(split: AnySplit) -> torch.Tensor:
    """The inputs of a resident split, or of a streamed one's first batch."""
    return split.inputs if isinstance(split, Split) else split.first().inputs


def problem_on(
    model_cfg: ModelConfig, dataset_cfg: DatasetConfig, splits: dict[str, AnySplit]
) -> Problem:
    """The model for data already loaded (`dataset_cfg` names it), on the data's device: for
    commands that build several models on one data set (the sweep)."""
    first = _inputs(next(iter(splits.values())))
    n_classes = num_classes(dataset_cfg, splits)
    model = build_model(model_cfg, tuple(first.shape[1:]), n_classes).to(first.device)
    return Problem(model, splits, n_classes, first.device)
