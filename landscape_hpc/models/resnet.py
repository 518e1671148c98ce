"""CIFAR ResNets of depth 6n + 2 (He et al. 2016, sec. 4.2), with and without shortcuts.

These are the nets of Li et al. 2018, sec. 6 ("the effect of network architecture"): resnet20/56/110
and their `_noshort` twins, whose landscapes turn chaotic with depth once the skip connections are
removed. Three stages of n BasicBlocks with 16, 32 and 64 channels; a block is two 3×3 conv + BN
with ReLU, plus a shortcut that is the identity, or a 1×1 conv + BN where the shape changes (as in
tomgoldstein/loss-landscape `cifar10/models/resnet.py`). The state_dict keys follow that file
(`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.shortcut.0`, `linear`, ...) so its checkpoints load.
A global average pooling before the classifier lets any image size work.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn import functional as F

#: channels of the three stages (He et al. 2016, sec. 4.2)
STAGE_WIDTHS: tuple[int, int, int] = (16, 32, 64)


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            # projection shortcut where the block changes resolution or width
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # out-of-place sum: the block must run under torch.func.vmap
        return F.relu(out + self.shortcut(x))


class BasicBlockNoShortcut(nn.Module):
    """The same block without any skip connection (Li et al. 2018, sec. 6)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class CifarResNet(nn.Module):
    """conv3×3(16) → BN → ReLU → 3 stages of n blocks → global average pool → Linear."""

    def __init__(
        self, depth: int, in_channels: int, num_classes: int, shortcuts: bool = True
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        block = BasicBlock if shortcuts else BasicBlockNoShortcut
        first, second, third = STAGE_WIDTHS
        self.conv1 = nn.Conv2d(in_channels, first, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(first)
        self.layer1 = _stage(block, first, first, blocks_per_stage, stride=1)
        self.layer2 = _stage(block, first, second, blocks_per_stage, stride=2)
        self.layer3 = _stage(block, second, third, blocks_per_stage, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(third, num_classes)
        _he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, 64, H/4, W/4)
        return self.linear(self.pool(out).flatten(1))  # (B, classes)


def _stage(
    block: type[BasicBlock | BasicBlockNoShortcut],
    in_planes: int,
    planes: int,
    num_blocks: int,
    stride: int,
) -> nn.Sequential:
    """`num_blocks` blocks; only the first one changes width and (by `stride`) resolution."""
    layers = [block(in_planes, planes, stride)]
    layers += [block(planes, planes, 1) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)


def _he_init(model: nn.Module) -> None:
    """He et al. 2015 normal init for convs; BN starts as the identity (scale 1, shift 0)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def resnet_builder(
    depth: int, shortcuts: bool = True
) -> Callable[[tuple[int, ...], int], CifarResNet]:
    """A registry builder `(input_shape, num_classes) -> CifarResNet` of the given depth."""

    def build(input_shape: tuple[int, ...], num_classes: int) -> CifarResNet:
        return CifarResNet(depth, input_shape[0], num_classes, shortcuts=shortcuts)

    build.__name__ = f"resnet{depth}" + ("" if shortcuts else "_noshort")
    build.__doc__ = f"CIFAR ResNet-{depth}" + ("" if shortcuts else " without shortcuts")
    return build
