"""Weight matching (landscape_hpc/align.py, lh.align): a net permuted at random is recovered
exactly, the permuted net computes the same function, unsupported modules are refused, and the
matching objective never decreases."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.align import (
    apply_permutation,
    check_spec,
    matching_objective,
    permutation_spec,
    weight_matching,
)
from landscape_hpc.config import DatasetConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model
from landscape_hpc.models.mlp import mlp
from landscape_hpc.models.mpo_cnn import MPOConvNet
from landscape_hpc.models.resnet import CifarResNet
from landscape_hpc.models.vgg import VGG

#: name -> (a net, the shape of one input sample)
NETS = {
    "mlp": (lambda: mlp((1, 6, 6), 5, hidden=(16, 12)), (1, 6, 6)),
    "mpo_cnn_bn": (lambda: MPOConvNet(3, 5, channels=(4, 6), batch_norm=True), (3, 8, 8)),
    "vgg_bn": (lambda: VGG(3, 5, layers=(4, "M", 6, "M")), (3, 8, 8)),
    "resnet20": (lambda: CifarResNet(20, 3, 5), (3, 8, 8)),
    "resnet8_noshort": (lambda: CifarResNet(8, 3, 5, shortcuts=False), (3, 8, 8)),
}


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """Every float entry random (BN scales, shifts and running statistics included), so that a
    permutation forgotten anywhere changes the function; weights at He scale, so that even
    resnet20's outputs stay of order 1 (float rounding small against the tolerance)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            state[key] = value
        elif value.dim() >= 2:  # (out, in, ...): He scale
            state[key] = torch.randn(value.shape, generator=g) * (2 / value[0].numel()) ** 0.5
        elif key.endswith(("running_var", "weight")):  # BN variances and scales
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:  # biases, BN shifts, running means
            state[key] = torch.randn(value.shape, generator=g) * 0.2
    model.load_state_dict(state)
    return model.eval()


def _random_perms(spec, state, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randperm(n, generator=g) for p, n in check_spec(spec, state).items()}


@pytest.mark.parametrize("name", list(NETS))
def test_matching_recovers_a_randomly_permuted_net_exactly(name):
    build, shape = NETS[name]
    net_a = _randomised(build(), seed=1)
    spec = permutation_spec(net_a)
    state_a = net_a.state_dict()
    state_b = apply_permutation(spec, _random_perms(spec, state_a, seed=2), state_a)
    assert any(not torch.equal(state_a[k], state_b[k]) for k in state_a)  # B is not A
    net_b = build().eval()
    net_b.load_state_dict(state_b)
    x = torch.randn(7, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out_a, out_b = net_a(x), net_b(x)
    torch.testing.assert_close(out_b, out_a, rtol=1e-5, atol=1e-5)  # B = π(A): A's function

    perms = weight_matching(spec, state_a, state_b, max_iter=50, seed=0)
    recovered = apply_permutation(spec, perms, state_b)
    assert all(torch.equal(recovered[k], state_a[k]) for k in state_a)

    aligned = lh.align(net_a, net_b, inputs=x)  # checks the function itself, too
    with torch.no_grad():
        torch.testing.assert_close(aligned(x), out_b, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(aligned.state_dict()[k], state_a[k]) for k in state_a)
    assert all(torch.equal(net_b.state_dict()[k], state_b[k]) for k in state_b)  # B unchanged
    found = aligned.alignment
    assert found.objective_after > found.objective_before


@pytest.mark.parametrize(
    "name", ["mlp", "mpo_cnn", "mpo_cnn6", "mpo_cnn_bn", "vgg9", "resnet20", "resnet20_noshort"]
)
def test_a_random_permutation_of_a_registry_net_keeps_its_function(name):
    net = _randomised(build_model(ModelConfig(name=name), (3, 8, 8), 5), seed=7)
    spec = permutation_spec(net)
    twin = build_model(ModelConfig(name=name), (3, 8, 8), 5)
    twin.load_state_dict(
        apply_permutation(spec, _random_perms(spec, net.state_dict(), 8), net.state_dict())
    )
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(twin(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, shape, named", [("wedge", (2,), "Wedge"), ("gpt_tiny", (8,), "Embedding")]
)
def test_registry_nets_align_cannot_permute_are_refused(name, shape, named):
    net = build_model(ModelConfig(name=name), shape, 16)
    with pytest.raises(UserError, match=f"{named}.*cannot be permuted; align supports Linear"):
        permutation_spec(net)


def test_resnet_spec_shares_the_stream_and_permutes_shortcuts():
    axes = permutation_spec(CifarResNet(20, 3, 5)).axes_to_perm
    stream = axes["conv1.weight"][0]
    for key in ("bn1.running_mean", "layer1.0.conv1.weight", "layer1.2.bn2.bias"):
        assert stream in axes[key]
    assert axes["layer1.2.conv2.weight"][0] == stream
    assert axes["layer1.0.conv1.weight"][0] != stream  # the inner units: a group of their own
    new = axes["layer2.0.shortcut.0.weight"]
    assert new[0] not in (None, stream) and new[1] == stream
    assert axes["layer2.0.conv2.weight"][0] == axes["layer2.0.bn2.running_var"][0] == new[0]
    assert axes["layer2.1.conv2.weight"][0] == new[0]
    assert axes["linear.weight"][0] is None and axes["linear.bias"] == (None,)
    assert axes["layer3.2.bn2.num_batches_tracked"] == ()


def test_a_flatten_permutes_the_next_linear_in_blocks_of_the_spatial_size():
    net = _randomised(MPOConvNet(3, 5, channels=(4, 6), batch_norm=False), seed=4)
    spec = permutation_spec(net)
    group = spec.axes_to_perm["features.2.weight"][0]
    assert spec.axes_to_perm["classifier.0.weight"] == (
        spec.axes_to_perm["classifier.0.bias"][0],
        group,
    )
    perm = torch.tensor([5, 0, 4, 1, 3, 2])
    perms = {p: torch.arange(n) for p, n in check_spec(spec, net.state_dict()).items()}
    perms[group] = perm
    permuted = apply_permutation(spec, perms, net.state_dict())["classifier.0.weight"]
    before = net.state_dict()["classifier.0.weight"].reshape(-1, 6, 16)  # (out, C, 4·4)
    assert torch.equal(permuted.reshape(-1, 6, 16), before[:, perm])


@pytest.mark.parametrize(
    "net, named",
    [
        (nn.Sequential(nn.Linear(4, 8), nn.LSTM(8, 8)), "LSTM"),
        (nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU()), "groups=2"),
        (nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)), "LayerNorm"),
    ],
)
def test_an_unsupported_module_is_refused_by_name(net, named):
    with pytest.raises(UserError, match=named) as err:
        permutation_spec(net)
    assert "supports Linear, Conv2d" in str(err.value)
    with pytest.raises(UserError, match=named):
        lh.align(net, net)


class _HiddenSkip(nn.Module):
    """A residual sum in forward that the modules' registration order does not show."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.head(h + torch.relu(self.fc2(h)))


def test_inputs_catch_a_forward_that_is_not_the_chain():
    torch.manual_seed(0)
    a, b = _HiddenSkip(), _HiddenSkip()
    x = torch.randn(5, 4)
    lh.align(a, b)  # no inputs: nothing to see the skip by
    with pytest.raises(UserError, match="another function"):
        lh.align(a, b, inputs=x)


def test_the_objective_never_decreases_on_independent_nets():
    net_a = _randomised(mlp((10,), 3, hidden=(24, 24, 24)), seed=5)
    net_b = _randomised(mlp((10,), 3, hidden=(24, 24, 24)), seed=6)
    spec = permutation_spec(net_a)
    state_a, state_b = net_a.state_dict(), net_b.state_dict()
    identity = {p: torch.arange(n) for p, n in check_spec(spec, state_a).items()}
    # max_iter=k runs the first k passes of the same search (the same seed, the same order)
    values = [matching_objective(spec, identity, state_a, state_b)]
    values += [
        matching_objective(
            spec, weight_matching(spec, state_a, state_b, k, seed=0), state_a, state_b
        )
        for k in range(1, 7)
    ]
    assert all(later >= earlier - 1e-9 for earlier, later in zip(values, values[1:])), values
    assert values[1] > values[0] and values[-1] > values[0]


def test_restarts_keep_the_best_of_the_runs_seeds():
    """restarts=k is the run of the highest objective among seeds seed..seed+k-1, each the
    single run of its seed."""
    net_a = _randomised(mlp((10,), 3, hidden=(24, 24, 24)), seed=5)
    net_b = _randomised(mlp((10,), 3, hidden=(24, 24, 24)), seed=6)
    singles = [lh.align(net_a, net_b, seed=s).alignment.objective_after for s in range(4)]
    best = lh.align(net_a, net_b, seed=0, restarts=4).alignment.objective_after
    assert best == max(singles)
    assert len(set(singles)) > 1  # the seeds' runs do end apart here: the choice matters
    with pytest.raises(UserError, match="restarts=0"):
        lh.align(net_a, net_b, restarts=0)


def test_align_refuses_nets_of_two_architectures():
    with pytest.raises(UserError, match="architecture"):
        lh.align(mlp((4,), 3, hidden=(8,)), mlp((4,), 3, hidden=(6,)))


def test_help_documents_every_argument():
    import importlib
    import sys

    importlib.import_module("landscape_hpc.align")  # the maths: binds nothing over lh.align
    assert "align" in dir(lh) and lh.align.__module__ == "landscape_hpc.api.align"
    assert callable(sys.modules["landscape_hpc.align"].weight_matching)
    doc = inspect.getdoc(lh.align)
    for parameter in inspect.signature(lh.align).parameters:
        assert f"{parameter}:" in doc, parameter


def _trained_mlp(seed: int, data) -> nn.Module:
    """A tiny mlp trained on digits by full-batch Adam from init seed `seed`."""
    torch.manual_seed(seed)
    net = mlp((1, 8, 8), 10, hidden=(32, 32))
    inputs, labels = data["train"]
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(net(inputs), labels).backward()
        optimiser.step()
    return net.eval()


def test_alignment_lowers_the_barrier_between_two_trained_nets():
    splits = load_dataset(DatasetConfig(name="digits", max_samples=400))
    data = {"train": (splits["train"].inputs, splits["train"].labels)}
    a, b = _trained_mlp(1, data), _trained_mlp(2, data)
    before = lh.interpolate(a, b, data, t=(0, 1, 11), progress=False)
    aligned = lh.align(a, b)
    after = lh.interpolate(a, aligned, data, t=(0, 1, 11), progress=False)
    # the end nets compute the same functions: the same end losses
    assert after.train_loss.values[-1] == pytest.approx(before.train_loss.values[-1], rel=1e-5)
    assert before.attrs["barrier_train"] > 0.1
    assert after.attrs["barrier_train"] < 0.5 * before.attrs["barrier_train"]


def test_weight_matching_refuses_states_of_two_shapes():
    wide, narrow = mlp((4,), 3, hidden=(8,)), mlp((4,), 3, hidden=(6,))
    spec = permutation_spec(wide)
    with pytest.raises(UserError, match="architecture: shapes"):
        weight_matching(spec, wide.state_dict(), narrow.state_dict())
