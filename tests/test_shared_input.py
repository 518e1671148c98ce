"""The first Linear of K points as one product on the shared batch (engine/shared_input.py):
where it applies, against per-point F.linear and the plain loop; where it must not."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_helpers import random_plane
from torch import nn

from landscape_hpc.config import EngineConfig
from landscape_hpc.engine.evaluate import Evaluator, evaluate_points, evaluate_points_loop
from landscape_hpc.engine.memory import CPU_PASS_BYTES, _activation_sizes, points_per_pass
from landscape_hpc.engine.shared_input import first_linear
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.params import combine

COORDS = torch.tensor([[0.0, 0.0, 0.0], [0.4, -0.3, 2.0], [-1.0, 0.7, -0.5]], dtype=torch.float64)


def _mlp(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32, bias=bias), nn.ReLU(), nn.Linear(32, 10)
    ).eval()


def _subspace(
    model: nn.Module, dims: int = 3, skip: tuple[str, ...] = (), dtype=torch.float32
) -> Subspace:
    """dims Gaussian directions moving every tensor (biases too) but those in `skip`."""
    g = torch.Generator().manual_seed(1)
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    basis = [
        {
            k: torch.randn(v.shape, generator=g, dtype=dtype)
            for k, v in origin.items()
            if k not in skip
        }
        for _ in range(dims)
    ]
    return Subspace(origin, basis)


def _data(n: int = 70):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("bias", [True, False])
def test_first_layer_outputs_are_each_points_own_linear(bias):
    model = _mlp(bias)
    sub = _subspace(model)
    first = first_linear(model, sub)
    assert first is not None and first.weight == "1.weight"
    assert first.bias == ("1.bias" if bias else None)
    x, _ = _data()
    got = first.outputs(sub, COORDS, x)  # (K, B, 32)
    for k, c in enumerate(COORDS):
        state = combine(sub.origin, sub.basis, c)
        want = F.linear(x.flatten(1), state["1.weight"], state.get("1.bias"))
        torch.testing.assert_close(got[k], want, rtol=1e-5, atol=1e-5)
    # the rest of the network no longer holds the first layer
    assert "1.weight" not in first.rest.state_dict() and "3.weight" in first.rest.state_dict()


@pytest.mark.parametrize(
    "skip, dtype",
    [((), torch.float32), (("1.bias",), torch.float32), (("3.weight", "3.bias"), torch.float32)]
    + [((), torch.float64)],  # float64 directions (a plane through three nets) on float32 nets
)
def test_vmap_with_the_shared_first_layer_matches_the_loop(skip, dtype):
    model = _mlp()
    sub = _subspace(model, skip=skip, dtype=dtype)
    x, y = _data()
    data = {"train": (x, y), "test": (x[:33], y[:33])}
    opts = EngineConfig(strategy="vmap", batch_size=32)
    evaluator = Evaluator(model, sub, data, opts)
    got = evaluator(COORDS)
    assert next(iter(evaluator._runners.values())).rest is not None  # the path under test ran
    want = evaluate_points_loop(model, sub, COORDS, data, opts)
    for split in want:
        np.testing.assert_allclose(got[split].loss, want[split].loss, rtol=1e-5)
        np.testing.assert_array_equal(got[split].acc, want[split].acc)


class _Residual(nn.Module):
    """The input read twice: not a plain chain into the first Linear."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc(x) + x


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        return self.fc(self.fc(x.flatten(1)))


@pytest.mark.parametrize(
    "model",
    [
        _Residual(),
        _Twice(),
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10)),
        nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(64, 10)),
    ],
    ids=["input-read-twice", "linear-called-twice", "conv-first", "dropout-before"],
)
def test_it_does_not_apply_where_the_algebra_does_not_hold(model):
    assert first_linear(model, _subspace(model)) is None
    x, y = _data()
    opts = EngineConfig(strategy="vmap", batch_size=32)
    sub = _subspace(model)
    got = evaluate_points(model, sub, COORDS, {"t": (x, y)}, opts)
    want = evaluate_points_loop(model, sub, COORDS, {"t": (x, y)}, opts)
    np.testing.assert_allclose(got["t"].loss, want["t"].loss, rtol=1e-5)


def test_not_where_the_first_layer_does_not_move():
    model = _mlp()
    assert first_linear(model, _subspace(model, skip=("1.weight",))) is None


def test_a_cpu_pass_keeps_its_largest_activation_within_the_cap():
    model = _mlp()
    sub = random_plane(model)
    sample = torch.zeros(1, 8, 8)
    largest = max(_activation_sizes(model, sample))  # 64 floats: the flattened input
    for batch in (16, 256, 4096):
        per_pass = points_per_pass(model, sub, sample, batch, memory_mb=2048.0)
        assert per_pass == max(1, CPU_PASS_BYTES // (largest * batch))
    assert points_per_pass(model, sub, sample, 256, memory_mb=0.1) == 1  # the budget still binds
