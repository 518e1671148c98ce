"""Stochastic weight averaging (landscape_hpc/swa.py, lh.swa_average): the average is the hand
average of the snapshots' state dicts; with BatchNorm its running statistics are recomputed at
the average, equal to a manual train-mode pass and to torch.optim.swa_utils.update_bn; the
snapshots stay untouched; mismatched snapshots are refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

import landscape_hpc as lh
from landscape_hpc.errors import UserError
from landscape_hpc.swa import average_states

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    net.train()
    with torch.no_grad():  # running statistics of its own, unlike the average's
        for _ in range(3):
            net(torch.randn(16, 5) * (1 + seed))
    return net.eval()


def _data(n: int = 50):
    g = torch.Generator().manual_seed(9)
    x = 2.0 * torch.randn(n, 5, generator=g) + 0.5
    return {"train": (x, torch.randint(0, 3, (n,), generator=g))}


def test_the_average_is_the_hand_average_of_three_state_dicts():
    nets = [_mlp(s) for s in (1, 2, 3)]
    before = [copy.deepcopy(n.state_dict()) for n in nets]
    avg = lh.swa_average(nets)
    got = avg.state_dict()
    for key in got:
        hand = (before[0][key] + before[1][key] + before[2][key]) / 3
        torch.testing.assert_close(got[key], hand, rtol=1e-6, atol=1e-7)
        assert not torch.equal(got[key], before[0][key])  # the average is none of them
    for net, state in zip(nets, before):  # the snapshots are not modified
        for key, value in net.state_dict().items():
            assert torch.equal(value, state[key])
    # state dicts after the first net are taken too, and give the same average
    again = lh.swa_average([nets[0], before[1], before[2]])
    for key, value in again.state_dict().items():
        assert torch.equal(value, got[key])


def test_bn_statistics_are_recomputed_at_the_average_as_a_manual_pass():
    nets = [_bn_net(s) for s in (1, 2, 3)]
    data = _data()
    avg = lh.swa_average(nets, data, batch_size=16)
    states = [n.state_dict() for n in nets]
    # the parameters: the hand average
    for key in ("0.weight", "1.weight", "1.bias", "3.bias"):
        torch.testing.assert_close(avg.state_dict()[key], sum(s[key] for s in states) / 3)
    # the statistics: a manual pass at the hand-averaged weights, momentum=None, batches of 16
    manual = copy.deepcopy(nets[0])
    manual.load_state_dict(average_states(states))
    bn = manual[1]
    bn.reset_running_stats()
    bn.momentum = None
    manual.train()
    with torch.no_grad():
        for start in range(0, 50, 16):
            manual(data["train"][0][start : start + 16])
    got, want = avg[1], manual[1]
    torch.testing.assert_close(got.running_mean, want.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.running_var, want.running_var, rtol=1e-5, atol=1e-6)
    # and torch's own SWA helper, on a loader of the same batches
    ref = copy.deepcopy(nets[0])
    ref.load_state_dict(average_states(states))
    update_bn(DataLoader(TensorDataset(data["train"][0]), batch_size=16), ref)
    torch.testing.assert_close(got.running_mean, ref[1].running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.running_var, ref[1].running_var, rtol=1e-5, atol=1e-6)
    # not the averaged snapshots' statistics
    mean_of_means = sum(s["1.running_mean"] for s in states) / 3
    assert (got.running_mean - mean_of_means).abs().max() > 0.1


def test_mismatched_or_missing_inputs_are_refused():
    with pytest.raises(UserError, match="at least two"):
        lh.swa_average([_mlp(1)])
    with pytest.raises(TypeError):
        lh.swa_average(_mlp(1))
    other = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(UserError, match="snapshots differ"):
        lh.swa_average([_mlp(1), other])
    with pytest.raises(UserError, match="BatchNorm"):
        lh.swa_average([_bn_net(1), _bn_net(2)])
    with pytest.raises(ValueError):
        average_states([])
