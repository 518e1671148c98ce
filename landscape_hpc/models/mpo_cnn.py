"""The small convolutional nets of the MPO experiments (Skorokhodov & Burtsev 2019, appendix B).

Which net belongs to which experiment:

- `mpo_cnn`: three 3×3 conv layers (8, 32, 64 channels) with ReLU: the paper's net for fitting
  *pictures* (section 4.1) and the default of `python -m landscape_hpc.mpo`.
- `mpo_cnn6` and `mpo_cnn_bn`: the BN experiment's *one* architecture (section 4.2, appendix B),
  six 3×3 conv layers (8, 8, 32, 32, 64, 64), once without and once with BatchNorm after every
  conv (conv → BN → ReLU). The pair is identical but for BN: the same conv weight shapes, the
  same head. The BN net drops the conv biases, which BN's shift makes redundant (the paper's
  code, loss-patterns, keeps them: directions along them change nothing in front of BN). The BN
  sweep compares exactly these two.

- `mpo_cnn_pool`: the pictures net as the authors' code builds it (loss-patterns,
  `ConvModel` of the icon runs: conv → ReLU → MaxPool2d(2, 2) per conv, 8/32/64 channels, no
  adaptive pooling, flatten → 128 → classes): on 28×28 images 28 → 14 → 7 → 3, a head of
  64 · 3 · 3 = 576 inputs as theirs; on 8×8 digits 64 · 1 · 1. Images need at least 8×8.

The others: spatial size kept by padding 1 and no pooling, then an adaptive average pooling to
4×4 and a two-layer head (64 · 4 · 4 = 1024 → 128 → classes), so any image size works.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from landscape_hpc.errors import UserError

#: conv channels of the pictures net (section 4.1) and of the BN experiment's net (section 4.2)
MPO_CHANNELS: tuple[int, ...] = (8, 32, 64)
MPO_DEEP_CHANNELS: tuple[int, ...] = (8, 8, 32, 32, 64, 64)

#: spatial size after the adaptive pooling: the head sees 64 × 4 × 4 = 1024 features
POOLED_SIZE = 4
HIDDEN_WIDTH = 128


class MPOConvNet(nn.Module):
    """Conv body (3×3, pad 1, optional BN, ReLU) → AdaptiveAvgPool2d(4×4) → 1024 → 128 → classes."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: tuple[int, ...] = MPO_CHANNELS,
        batch_norm: bool = False,
        max_pool: Optional[tuple[int, int]] = None,
    ) -> None:
        """`max_pool`: (H, W) of the input images for a MaxPool2d(2, 2) after every conv and a
        head on the flattened map (the authors' pictures net); None: no max-pool, an adaptive
        average pooling to 4×4 in front of the head."""
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            # the conv bias is redundant in front of BN's shift
            layers.append(nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            if max_pool is not None:
                layers.append(nn.MaxPool2d(2, 2))
            previous = width
        self.features = nn.Sequential(*layers)
        if max_pool is None:
            self.pool: nn.Module = nn.AdaptiveAvgPool2d((POOLED_SIZE, POOLED_SIZE))
            features = previous * POOLED_SIZE * POOLED_SIZE
        else:
            self.pool = nn.Identity()
            shrink = 2 ** len(channels)  # each max-pool halves the map (floor)
            features = previous * (max_pool[0] // shrink) * (max_pool[1] // shrink)
        self.classifier = nn.Sequential(
            nn.Linear(features, HIDDEN_WIDTH),
            nn.ReLU(),
            nn.Linear(HIDDEN_WIDTH, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.features(x))  # (B, 64, 4, 4); max-pooled: (B, 64, H/8, W/8)
        return self.classifier(out.flatten(1))  # (B, classes)


def mpo_cnn(input_shape: tuple[int, ...], num_classes: int) -> MPOConvNet:
    """The three-conv net the paper fits pictures with (section 4.1), images (C, H, W)."""
    return MPOConvNet(input_shape[0], num_classes, MPO_CHANNELS, batch_norm=False)


def mpo_cnn6(input_shape: tuple[int, ...], num_classes: int) -> MPOConvNet:
    """The BN experiment's six-conv net without BN (section 4.2, appendix B), images (C, H, W)."""
    return MPOConvNet(input_shape[0], num_classes, MPO_DEEP_CHANNELS, batch_norm=False)


def mpo_cnn_bn(input_shape: tuple[int, ...], num_classes: int) -> MPOConvNet:
    """The BN experiment's six-conv net with BN after every conv (section 4.2, appendix B)."""
    return MPOConvNet(input_shape[0], num_classes, MPO_DEEP_CHANNELS, batch_norm=True)


def mpo_cnn_pool(input_shape: tuple[int, ...], num_classes: int) -> MPOConvNet:
    """The pictures net as the authors' code builds it: a max-pool after each of the three
    convs, the head on the flattened map (64 · 3 · 3 = 576 on 28×28), images (C, H, W) ≥ 8×8."""
    h, w = int(input_shape[-2]), int(input_shape[-1])
    shrink = 2 ** len(MPO_CHANNELS)
    if min(h, w) < shrink:
        raise UserError(
            f"model=mpo_cnn_pool halves the image {len(MPO_CHANNELS)} times and needs at least "
            f"{shrink}×{shrink} pixels, got {h}×{w}; use mpo_cnn (adaptive pooling) instead"
        )
    return MPOConvNet(input_shape[0], num_classes, MPO_CHANNELS, max_pool=(h, w))
