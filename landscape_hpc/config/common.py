"""The options every command shares: the model, the data set, and how points are evaluated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class ModelConfig:
    # registry name (mpo_cnn, mpo_cnn_pool, mpo_cnn6, mpo_cnn_bn, vgg9, resnet20,
    # resnet56_noshort, mlp, gpt_tiny, ...), hf (a transformers model from model.path) or custom
    name: str = MISSING
    # custom only: "package.module.callable" returning an nn.Module
    target: Optional[str] = None
    # hf only: a local folder written by a transformers model's save_pretrained (never a download)
    path: Optional[str] = None
    # keyword arguments passed to the model builder (registry or custom)
    kwargs: dict[str, Any] = field(default_factory=dict)
    # weights to load (state_dict, or a dict holding it under "state_dict" / "model"); None = fresh
    checkpoint: Optional[str] = None
    # allow full unpickling of the checkpoint (only for files you trust)
    trust_checkpoint: bool = False
    # seed of the initial weights when no checkpoint is given
    init_seed: int = 0


@dataclass
class DatasetConfig:
    # digits (embedded), text (embedded), mnist, fashion_mnist, cifar10, synthetic, custom
    name: str = "digits"
    # folder holding torchvision data sets (mnist, fashion_mnist, cifar10)
    root: Optional[str] = None
    # let torchvision download a missing data set into root
    download: bool = False
    # keep a seeded random subset of at most this many samples per split; None = all
    max_samples: Optional[int] = None
    # seed of the digits train/test split, of max_samples subsets and of synthetic tensors
    seed: int = 0
    # digits: fraction of the 1,797 images held out as the test split; text: fraction of the
    # documents held out as the test split, and as many again as the validation split
    test_fraction: float = 0.2
    # synthetic: shape of one input (C, H, W) or (features,)
    shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    # synthetic: number of classes
    num_classes: int = 10
    # synthetic: samples in the train and test splits
    num_train: int = 1000
    num_test: int = 200
    # text: tokens per window (the sequence length the model sees)
    context: int = 64
    # text: use only this many documents (seeded choice, before the split); None = all
    max_documents: Optional[int] = None
    # custom only: "package.module.callable" returning {split: (inputs, labels) or Dataset}
    target: Optional[str] = None
    # keyword arguments for the custom callable
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class EngineConfig:
    """How the evaluation engine (landscape_hpc/engine/evaluate.py) evaluates points; every command
    that evaluates points has one under `engine`."""

    # samples per forward pass
    batch_size: int = 256
    # memory the engine may use for stacked weights and activations of a chunk of points, in MiB
    memory_mb: float = 2048.0
    # BN statistics at each point: eval (the model's running statistics) or recompute (train data)
    bn: str = "eval"
    # ce (cross-entropy), mse (softmax vs one-hot, as loss-landscape), lm (per-token
    # cross-entropy of (B, T, V) logits, labels shifted as HF causal LMs), lm_aligned, or auto
    # (the model's own: lm for gpt_tiny and HF causal LMs, else ce; the surface's default)
    loss: str = "ce"
    # auto (timed), vmap (K points per batched forward), sequential (one point at a time, whole
    # batch) or threads (sequential on every torch thread at once)
    strategy: str = "auto"
    # sequential and threads with bn=eval: each conv -> BN pair run as one conv, its weight and
    # bias folded per point in float64 (a 1e-7 relative change); false runs BN as it is
    fold_bn: bool = True
    # arithmetic of the forwards (landscape_hpc/engine/precision.py): fp32 (float32, TF32 off:
    # PyTorch's default leaves it on for cuDNN convolutions), tf32 (TF32 matmuls and convolutions
    # on Ampere+ GPUs; fp32 on a CPU) or bf16 (autocast to bfloat16); sums stay float64
    precision: str = "fp32"
