"""The small convolutional nets of the MPO experiments (Skorokhodov & Burtsev 2019, appendix B).

`mpo_cnn`: three 3×3 conv layers with 8, 32 and 64 channels, each followed by ReLU, then an
adaptive average pooling to 4×4 and a two-layer head (1024 → 128 → classes).
`mpo_cnn_bn`: the same with six conv layers (8, 8, 32, 32, 64, 64), each conv → BatchNorm → ReLU,
the pair of nets the paper compares to show what batch normalisation does to the landscape.
Spatial size is kept by padding 1 and no pooling, so any image size works.
"""

from __future__ import annotations

from torch import Tensor, nn

#: conv channels of the plain net and of the batch-normalised one (appendix B)
MPO_CHANNELS: tuple[int, ...] = (8, 32, 64)
MPO_BN_CHANNELS: tuple[int, ...] = (8, 8, 32, 32, 64, 64)

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
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            # the conv bias is redundant in front of BN's shift
            layers.append(nn.Conv2d(previous, width, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU())
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((POOLED_SIZE, POOLED_SIZE))
        self.classifier = nn.Sequential(
            nn.Linear(previous * POOLED_SIZE * POOLED_SIZE, HIDDEN_WIDTH),
            nn.ReLU(),
            nn.Linear(HIDDEN_WIDTH, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.features(x))  # (B, 64, 4, 4)
        return self.classifier(out.flatten(1))  # (B, classes)


def mpo_cnn(input_shape: tuple[int, ...], num_classes: int) -> MPOConvNet:
    """The plain conv net of MPO appendix B, for images of shape (C, H, W)."""
    return MPOConvNet(input_shape[0], num_classes, MPO_CHANNELS, batch_norm=False)


def mpo_cnn_bn(input_shape: tuple[int, ...], num_classes: int) -> MPOConvNet:
    """The six-layer batch-normalised conv net of MPO appendix B, for images (C, H, W)."""
    return MPOConvNet(input_shape[0], num_classes, MPO_BN_CHANNELS, batch_norm=True)
