"""The n-wedge toy landscape (models/nwedge.py) and the engine's loss-output path."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.func import vmap

from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.engine.evaluate import evaluate_points, evaluate_points_loop
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model
from landscape_hpc.models.nwedge import wedge_distance

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable


def brute_force_distance(theta: torch.Tensor, n: int) -> torch.Tensor:
    """min over every set S of n free coordinates of the distance to {θ : θ_i = 0, i ∉ S}."""
    dim = theta.shape[-1]
    best = torch.full(theta.shape[:-1], float("inf"), dtype=theta.dtype)
    for free in itertools.combinations(range(dim), n):
        fixed = [i for i in range(dim) if i not in free]
        dist = theta[..., fixed].pow(2).sum(-1).sqrt()
        best = torch.minimum(best, dist)
    return best


@pytest.mark.parametrize("dim", [1, 5, 7])
def test_wedge_distance_matches_the_brute_force_minimum_over_all_wedges(dim):
    g = torch.Generator().manual_seed(dim)
    theta = torch.randn(4, 3, dim, generator=g, dtype=torch.float64)  # (..., D) batch
    theta[0, 0, 0] = 0.0  # already on some wedges
    for n in range(dim + 1):
        got = wedge_distance(theta, n)
        assert got.shape == (4, 3)
        torch.testing.assert_close(got, brute_force_distance(theta, n), rtol=1e-12, atol=1e-12)
    assert torch.all(wedge_distance(theta, dim) == 0)
    torch.testing.assert_close(wedge_distance(theta, 0), theta.norm(dim=-1))


def test_wedge_distance_gradient_and_vmap():
    theta = torch.tensor([3.0, -0.5, 2.0, 0.1, -4.0], dtype=torch.float64, requires_grad=True)
    wedge_distance(theta, 2).backward()  # free: -4 and 3; constrained: -0.5, 2, 0.1
    constrained = torch.tensor([0.0, -0.5, 2.0, 0.1, 0.0], dtype=torch.float64)
    torch.testing.assert_close(theta.grad, constrained / constrained.norm())
    on_wedge = torch.tensor([1.0, 0.0, 0.0], requires_grad=True)
    wedge_distance(on_wedge, 1).backward()
    assert torch.equal(on_wedge.grad, torch.zeros(3))  # 0, not NaN, at a minimum
    batch = torch.randn(6, 5)
    torch.testing.assert_close(
        vmap(lambda t: wedge_distance(t, 2))(batch), wedge_distance(batch, 2)
    )


def test_builder_checks_its_kwargs():
    model = build_model(ModelConfig(name="wedge", kwargs={"dim": 4, "n": 1}), (1, 8, 8), 10)
    assert model.theta.shape == (4,) and model.loss_output
    out = model(torch.zeros(3, 1, 8, 8))
    assert out.shape == (3,) and torch.all(out == wedge_distance(model.theta, 1))
    with pytest.raises(UserError, match="model.kwargs.n"):
        build_model(ModelConfig(name="wedge", kwargs={"dim": 4, "n": 5}), (2,), 2)
    with pytest.raises(UserError, match="model.kwargs.dim"):
        build_model(ModelConfig(name="wedge", kwargs={"dim": 0, "n": 0}), (2,), 2)


def _wedge_subspace(dim=6, n=2):
    model = build_model(ModelConfig(name="wedge", kwargs={"dim": dim, "n": n}), (2,), 3)
    origin = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    basis = [{"theta": torch.randn(dim, generator=g)} for _ in range(2)]
    return model, Subspace(origin, basis)


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_engine_equals_the_loop_and_the_distance_on_the_wedge(strategy):
    model, sub = _wedge_subspace()
    coords = torch.tensor([[0.0, 0.0], [0.5, -1.0], [-2.0, 0.3], [1.0, 1.0]], dtype=torch.float64)
    x = torch.randn(10, 2)
    y = torch.randint(0, 3, (10,))
    data = {"train": (x, y), "test": (x[:3], y[:3])}
    opts = EngineConfig(batch_size=4, strategy=strategy)
    got = evaluate_points(model, sub, coords, data, opts)
    ref = evaluate_points_loop(model, sub, coords, data, opts)
    want = np.array([float(wedge_distance(sub.point(c)["theta"], 2)) for c in coords])
    for split in data:
        np.testing.assert_allclose(got[split].loss, ref[split].loss, rtol=1e-6)
        np.testing.assert_allclose(got[split].loss, want, rtol=1e-6)
        assert np.isnan(got[split].acc).all() and np.isnan(ref[split].acc).all()
    assert len(set(np.round(want, 6))) == 4  # the points differ


def test_flat_loss_of_a_loss_output_model_is_its_output():
    model, sub = _wedge_subspace(dim=5, n=3)
    state = sub.origin
    loss, theta = flat_loss(model, state, ["theta"], torch.zeros(7, 2), torch.zeros(7))
    probe = torch.randn(5)
    torch.testing.assert_close(loss(probe), wedge_distance(probe, 3))
    torch.testing.assert_close(loss(theta), wedge_distance(state["theta"], 3))


def test_surface_command_on_the_wedge_stores_the_distance(tmp_path):
    out = tmp_path / "wedge.h5"
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "landscape_hpc.surface",
            f"hydra.run.dir={tmp_path}/run",
            "model=wedge",
            "model.kwargs.dim=6",
            "model.kwargs.n=2",
            "dataset=synthetic",
            "dataset.shape=[2]",
            "dataset.num_train=8",
            "dataset.num_test=4",
            "directions.ignore=none",
            "grid.x=[-1,1,4]",
            "grid.y=[-1,1,3]",
            f"out={out}",
            "plot=false",
        ],
        cwd=tmp_path,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(out, "r") as f:
        x, y = f["xcoordinates"][()], f["ycoordinates"][()]
        dx = torch.from_numpy(f["directions/x/theta"][()]).double()
        dy = torch.from_numpy(f["directions/y/theta"][()]).double()
        train_loss, test_loss = f["train_loss"][()], f["test_loss"][()]
        acc, finished = f["train_acc"][()], f["done"][()]
    model = build_model(ModelConfig(name="wedge", kwargs={"dim": 6, "n": 2}), (2,), 10)
    theta0 = model.theta.detach().double()
    want = np.array(
        [[float(wedge_distance(theta0 + xi * dx + yi * dy, 2)) for xi in x] for yi in y]
    )  # (ny, nx): row = y
    np.testing.assert_allclose(train_loss, want, rtol=1e-5)
    np.testing.assert_allclose(test_loss, want, rtol=1e-5)
    assert np.isnan(acc).all() and finished.all()
