"""Max pooling over windows that tile the input, as an element-wise maximum of strided slices.

PyTorch's CPU max_pool2d on contiguous (NCHW) tensors is 5-7 times slower than the maximum of
the k² slices x[..., i::k, j::k] (measured on 8×8 to 32×32 maps, docs/benchmarks.md); on
channels-last tensors its own kernel is as fast or faster. The engine's one-point-at-a-time
strategies swap the pools of their private model copies when they run NCHW. The values are the
same bits: a maximum is exact, and NaN propagates in both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[-1])


class TiledMaxPool2d(nn.Module):
    """nn.MaxPool2d(k, stride=k) without padding or dilation."""

    def __init__(self, kernel_size: tuple[int, int], ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.ceil_mode = kernel_size, ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        h, w = x.shape[-2], x.shape[-1]
        if self.ceil_mode and (h % kh or w % kw):  # partial windows: -inf pads, never wins
            x = F.pad(x, (0, -w % kw, 0, -h % kh), value=float("-inf"))
        elif h % kh or w % kw:  # the floor mode's windows
            x = x[..., : h // kh * kh, : w // kw * kw]
        out = x[..., 0::kh, 0::kw]
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    out = out.maximum(x[..., i::kh, j::kw])
        return out


def tiling_pays(channels_last: bool, device: torch.device) -> bool:
    """Whether a copy that runs in this layout on this device should tile its max pools: NCHW
    on a CPU (measured above; GPU pooling is not measured)."""
    return not channels_last and device.type == "cpu"


def tileable(pool: nn.Module) -> bool:
    """Whether `pool` is a max pool whose windows tile its input (what TiledMaxPool2d does)."""
    return (
        type(pool) is nn.MaxPool2d
        and _pair(pool.kernel_size) == _pair(pool.stride or pool.kernel_size)
        and _pair(pool.padding) == (0, 0)
        and _pair(pool.dilation) == (1, 1)
        and not pool.return_indices
    )


def tile_max_pools(net: nn.Module) -> int:
    """Every tileable nn.MaxPool2d of `net` replaced in place by a TiledMaxPool2d; how many."""
    swaps = [
        (owner, name, child)
        for owner in net.modules()
        for name, child in owner.named_children()
        if tileable(child)
    ]
    for owner, name, child in swaps:
        setattr(owner, name, TiledMaxPool2d(_pair(child.kernel_size), child.ceil_mode))
    return len(swaps)
