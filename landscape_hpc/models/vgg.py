"""VGG-9 of Li et al. 2018 (appendix A.5): the first 7 conv layers of VGG-16 with BN, 2 FC layers.

Layout and state_dict keys follow tomgoldstein/loss-landscape `cifar10/models/vgg.py`
(`features.<i>`, `fc.0`, `fc.1`, `classifier`), so its VGG-9 checkpoints load: 3×3 convs with
bias, each followed by BatchNorm and ReLU, 2×2 max-pooling after each stage, then
Linear(256·4·4, 256) → BatchNorm1d → ReLU → Linear(256, classes). An adaptive average pooling to
4×4 before the head (the identity on 32×32 CIFAR images) lets 8×8 and 28×28 images work too.
"""

from __future__ import annotations

from torch import Tensor, nn

#: conv widths, "M" = 2×2 max-pool: VGG-16's first 7 conv layers (appendix A.5)
VGG9_LAYERS: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")

#: spatial size the head sees: 32×32 CIFAR images after three poolings
POOLED_SIZE = 4


class VGG(nn.Module):
    """Conv stages from `layers`, adaptive pool to 4×4, FC → BN → ReLU → FC."""

    def __init__(
        self, in_channels: int, num_classes: int, layers: tuple[int | str, ...] = VGG9_LAYERS
    ) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        previous = in_channels
        for layer in layers:
            if layer == "M":
                # ceil_mode keeps odd sizes (7×7 from 28×28 inputs) from losing a row
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                width = int(layer)
                modules += [
                    nn.Conv2d(previous, width, kernel_size=3, padding=1),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                previous = width
        self.features = nn.Sequential(*modules)
        self.pool = nn.AdaptiveAvgPool2d((POOLED_SIZE, POOLED_SIZE))
        # the hidden FC width equals the last conv width, as in loss-landscape's VGG
        self.fc = nn.Sequential(
            nn.Linear(previous * POOLED_SIZE * POOLED_SIZE, previous),
            nn.BatchNorm1d(previous),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.features(x))  # (B, 256, 4, 4)
        return self.classifier(self.fc(out.flatten(1)))  # (B, classes)


def vgg9(input_shape: tuple[int, ...], num_classes: int) -> VGG:
    """VGG-9 (Li et al. 2018, appendix A.5) for images of shape (C, H, W)."""
    return VGG(input_shape[0], num_classes, VGG9_LAYERS)
