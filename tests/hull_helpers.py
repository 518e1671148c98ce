"""Tiny trained MLPs on digits: the optima the tunnel, connector and short-direction tests share
(trained once per session by the `mlp_optima` fixture of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from landscape_hpc.config import DatasetConfig, ModelConfig, TrainConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.models import build_model
from landscape_hpc.train import train

HIDDEN = [8]
MAX_SAMPLES = 300


def mlp_model(hidden: list[int] = HIDDEN, seed: int = 0) -> ModelConfig:
    return ModelConfig(name="mlp", kwargs={"hidden": list(hidden)}, init_seed=seed)


def digits_dataset() -> DatasetConfig:
    return DatasetConfig(name="digits", max_samples=MAX_SAMPLES)


def train_mlp(out: Path, seed: int, hidden: list[int] = HIDDEN) -> str:
    """An MLP trained for 4 epochs from init_seed = seed; the path of its model.pt."""
    splits = load_dataset(digits_dataset())
    model = build_model(mlp_model(hidden, seed), (1, 8, 8), 10)
    cfg = TrainConfig(
        model=mlp_model(hidden, seed),
        dataset=digits_dataset(),
        lr=0.1,
        batch_size=32,
        epochs=4,
        seed=seed,
        save_every=0,
        device="cpu",
    )
    return str(train(model, splits, cfg, out))
