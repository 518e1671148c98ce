"""`python -m landscape_hpc.train`: a net trained on a data set, with its checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from landscape_hpc.config.common import DatasetConfig, ModelConfig


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # auto (the model's own: lm for gpt_tiny and HF causal LMs, else ce), ce, mse, lm, lm_aligned
    loss: str = "auto"
    # sgd (with momentum) or adam
    optimizer: str = "sgd"
    # learning rate
    lr: float = 0.1
    # SGD momentum
    momentum: float = 0.9
    # L2 weight decay
    weight_decay: float = 5e-4
    # epochs after which the learning rate is multiplied by lr_gamma
    lr_drops: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    # samples per optimisation step
    batch_size: int = 128
    # passes over the training split (with target_train_loss: the most)
    epochs: int = 10
    # stop after the first epoch whose train loss (the whole split, eval mode) is at most this
    # (None: run all epochs); nets trained to one target are matched in training loss
    target_train_loss: Optional[float] = None
    # seed of initial weights (unless model.init_seed differs), shuffling and dropout
    seed: int = 0
    # save a checkpoint every this many epochs (0 = only the final one)
    save_every: int = 1
    # folder for checkpoints/epoch_XXXX.pt and model.pt
    out_dir: str = "${hydra:runtime.output_dir}"
    # auto, cpu, cuda, ...
    device: str = "auto"
