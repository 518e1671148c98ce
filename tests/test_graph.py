"""In-place ReLUs in the engine's private model copies (graph.py): the same bits, and never on
a tensor something else reads."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_hpc.config import ModelConfig
from landscape_hpc.engine.graph import relus_in_place, trace
from landscape_hpc.engine.pointwise import private_copy
from landscape_hpc.models import build_model


@pytest.mark.parametrize("name, relus", [("resnet20", 19), ("vgg9", 8), ("mlp", 2)])
def test_relus_run_in_place_and_the_outputs_keep_their_bits(name, relus):
    model = build_model(ModelConfig(name=name), (3, 16, 16), 10).eval()
    graph_module = trace(copy.deepcopy(model))
    assert relus_in_place(graph_module) == relus
    graph_module.recompile()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    with torch.no_grad():
        assert torch.equal(graph_module(x), model(x))
    assert torch.equal(x, before)  # the input is never written


class _Aliases(nn.Module):
    """ReLUs whose inputs something else reads, or that alias the input."""

    def __init__(self):
        super().__init__()
        self.conv, self.skip, self.act = nn.Conv2d(2, 2, 1), nn.Identity(), nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        a = F.relu(y) + y  # y is read again
        b = F.relu(self.skip(x))  # Identity returns x itself
        c = torch.relu(x.view(x.shape))  # a view of the input
        d = self.act(self.conv(x)) + self.act(x)  # one ReLU module called twice
        return a + b + c + d + F.relu(x)


def test_relus_whose_input_is_read_elsewhere_stay_out_of_place():
    net = _Aliases().eval()
    graph_module = trace(copy.deepcopy(net))
    assert relus_in_place(graph_module) == 0
    x = torch.randn(3, 2, 4, 4)
    before = x.clone()
    with torch.no_grad():
        assert torch.equal(private_copy(net, fold_bn=True, tile_pools=True)[0](x), net(x))
    assert torch.equal(x, before)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = self.conv(x)
        return F.relu(y) if y.sum() > 0 else -y


def test_a_model_fx_cannot_trace_runs_as_it_is():
    assert trace(_Untraceable()) is None
    net, pairs = private_copy(_Untraceable(), fold_bn=True, tile_pools=True)
    assert isinstance(net, _Untraceable) and pairs == []
