"""BN folded into the conv before it (bnfold.py) against the network run as it is."""

import copy

import numpy as np
import pytest
import torch
from engine_helpers import random_plane
from torch import nn

from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.engine.bnfold import Pair
from landscape_hpc.engine.evaluate import evaluate_points, evaluate_points_loop
from landscape_hpc.engine.pointwise import FlatLayout, FlatNet, private_copy
from landscape_hpc.models import build_model


def _bn_calls(net: nn.Module, x: torch.Tensor) -> int:
    """How many BN modules run in one forward of net."""
    calls = []
    hooks = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    return len(calls)


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Running statistics and affine weights away from 0 and 1, so folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            if m.running_mean is None:  # normalised by the batch's statistics
                continue
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.randn(n, generator=g))
                m.bias.data.copy_(torch.randn(n, generator=g))
    return model.eval()


@pytest.mark.parametrize("name, shape", [("mpo_cnn_bn", (1, 8, 8)), ("resnet20", (3, 16, 16))])
def test_every_conv_bn_pair_is_folded_and_the_outputs_stay(name, shape):
    model = _randomise_bn(build_model(ModelConfig(name=name), shape, 10))
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))
    folded, pairs = private_copy(model, fold_bn=True, tile_pools=True)
    bns = _bn_calls(model, x)
    assert bns > 0 and len(pairs) == bns
    assert _bn_calls(folded, x) == 0  # the BN calls are gone (the weights fold per point)
    sub = random_plane(model)
    layout = FlatLayout(sub, channels_last=False)
    net = FlatNet(model, layout, fold_bn=True)
    c = torch.tensor([0.3, -0.6], dtype=torch.float64)
    forward = net.at(c)
    assert _bn_calls(net.net, x) == 0
    plain = copy.deepcopy(model)
    plain.load_state_dict(sub.point(c))
    with torch.no_grad():
        want = plain(x)
        got = forward(x)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_folded_weights_are_formed_in_float64_and_rounded_once():
    model = _randomise_bn(build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10))
    sub = random_plane(model, "states", ignore="none")  # moves the BN statistics and weights too
    c = torch.tensor([0.7, -3.0], dtype=torch.float64)  # far enough to clamp some variances
    assert any((sub.point(c)[k] == 0).any() for k in sub.origin if k.endswith("running_var"))
    state = {k: v.double().clone() for k, v in sub.origin.items()}
    for c_k, basis in zip(c.tolist(), sub.basis):
        for k, b in basis.items():
            state[k] = state[k] + c_k * b.double()
    for channels_last in (False, True):
        net = FlatNet(model, FlatLayout(sub, channels_last), fold_bn=True)
        net.at(c)
        _, pairs = private_copy(model, fold_bn=True, tile_pools=True)
        for pair in pairs:
            w, b = state[f"{pair.conv}.weight"], state.get(f"{pair.conv}.bias")
            gamma, beta = state[f"{pair.norm}.weight"], state[f"{pair.norm}.bias"]
            mean, var = state[f"{pair.norm}.running_mean"], state[f"{pair.norm}.running_var"]
            eps = net.net.get_submodule(pair.norm).eps
            scale = torch.rsqrt(var.clamp_min(0) + eps) * gamma
            want_w = (w * scale.view(-1, 1, 1, 1)).float()
            want_b = (beta + ((0 if b is None else b) - mean) * scale).float()
            conv = net.net.get_submodule(pair.conv)
            assert torch.equal(conv.weight, want_w) and torch.equal(conv.bias, want_b), pair
            if channels_last:
                assert conv.weight.is_contiguous(memory_format=torch.channels_last)


class _ConvUsedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).flatten(1)


class _SharedNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return (self.bn(self.a(x)) + self.bn(self.b(x))).flatten(1)


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return (y if y.sum() > 0 else -y).flatten(1)


def _batch_statistics_net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten()
    )


@pytest.mark.parametrize(
    "make, pairs",
    [
        (_ConvUsedTwice, []),  # the conv's output is needed unnormalised too
        (_SharedNorm, []),  # one BN after two convs
        (_DataDependent, None),  # fx cannot trace it: run as it is
        (_batch_statistics_net, []),  # BN without running statistics normalises by the batch
        (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), [Pair("0", "1")]),
    ],
)
def test_only_what_folds_exactly_is_folded(make, pairs):
    net = _randomise_bn(make())
    folded, got = private_copy(net, fold_bn=True, tile_pools=False)
    assert got == (pairs or [])
    if pairs is None:
        assert not isinstance(folded, torch.fx.GraphModule)
    sub = random_plane(net)
    c = torch.tensor([0.4, 0.8], dtype=torch.float64)
    x = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    forward = FlatNet(net, FlatLayout(sub, channels_last=True), fold_bn=True).at(c)
    net.load_state_dict(sub.point(c))
    with torch.no_grad():
        torch.testing.assert_close(forward(x)[0], net(x), rtol=1e-5, atol=1e-5)


def test_the_engine_folds_by_default_and_both_ways_equal_the_loop():
    model = _randomise_bn(build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10))
    sub = random_plane(model)
    g = torch.Generator().manual_seed(0)
    data = {"t": (torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g))}
    coords = torch.tensor([[0.0, 0.0], [0.5, -0.2], [-0.8, 0.9]], dtype=torch.float64)
    ref = evaluate_points_loop(model, sub, coords, data)["t"]
    got = {}
    for fold in (True, False):
        opts = EngineConfig(strategy="sequential", fold_bn=fold)
        got[fold] = evaluate_points(model, sub, coords, data, opts)["t"]
        np.testing.assert_allclose(got[fold].loss, ref.loss, rtol=1e-6)
        np.testing.assert_allclose(got[fold].acc, ref.acc, atol=100 / 64 + 1e-9)
    assert EngineConfig().fold_bn
    assert not np.array_equal(got[True].loss, got[False].loss)  # the folded net really ran
