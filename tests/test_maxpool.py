"""Tiled max pools (maxpool.py) against nn.MaxPool2d, bit for bit."""

import pytest
import torch
from torch import nn

from landscape_hpc.config import ModelConfig
from landscape_hpc.engine.maxpool import TiledMaxPool2d, tile_max_pools
from landscape_hpc.engine.pointwise import private_copy
from landscape_hpc.models import build_model


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("kernel", [2, 3, (2, 3)])
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 5, 7, 9), (3, 6, 6)])
def test_tiled_pool_gives_max_pool2d_bits(kernel, shape, ceil_mode):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x.view(-1)[::7] = float("nan")  # NaN propagates in both
    x.view(-1)[1::11] = float("-inf")
    pool = nn.Sequential(nn.MaxPool2d(kernel, ceil_mode=ceil_mode))
    want = pool(x)
    assert tile_max_pools(pool) == 1 and isinstance(pool[0], TiledMaxPool2d)
    got = pool(x)
    assert got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(2, stride=1),  # overlapping windows
        nn.MaxPool2d(2, padding=1),
        nn.MaxPool2d(2, dilation=2),
        nn.MaxPool2d(2, return_indices=True),
        nn.AvgPool2d(2),
    ],
)
def test_pools_whose_windows_do_not_tile_are_kept(pool):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), pool)
    assert tile_max_pools(net) == 0 and net[1] is pool


def test_the_engine_tiles_the_pools_of_its_nchw_cpu_copies_only():
    model = build_model(ModelConfig(name="vgg9"), (3, 16, 16), 10)

    def tiled(net):
        return sum(isinstance(m, TiledMaxPool2d) for m in net.modules())

    assert tiled(private_copy(model, fold_bn=True, tile_pools=True)[0]) == 3
    assert tiled(private_copy(model, fold_bn=True, tile_pools=False)[0]) == 0
    assert tiled(model) == 0  # the caller's model is not touched
