"""The loss barrier of linear mode connectivity (connectivity.py; Frankle et al. 2020) on paths
with a known barrier, through `interpolate` and the surface command's directions.kind=models;
perplexity beside a per-token loss."""

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import _command
from landscape_hpc.connectivity import loss_barrier, perplexity

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_the_barrier_of_a_bump_above_a_sloped_chord():
    t = np.linspace(0, 1, 11)
    losses = 2 + 3 * t + 4 * t * (1 - t)  # chord 2 + 3t, a bump of height 1 at t = 0.5
    height, where = loss_barrier(t, losses)
    assert height == pytest.approx(1.0) and where == pytest.approx(0.5)
    wide = np.linspace(-0.5, 1.5, 21)  # points outside [0, 1] do not count
    height, _ = loss_barrier(wide, 2 + 3 * wide + 4 * wide * (1 - wide) - 9 * (wide > 1))
    assert height == pytest.approx(1.0)
    assert loss_barrier(t, 2 + 3 * t)[0] == pytest.approx(0.0)  # linearly connected
    assert np.isnan(loss_barrier(np.linspace(0, 0.9, 10), t[:10])[0])  # no t = 1
    assert np.isnan(loss_barrier(t, np.where(t == 0.5, np.nan, t))[0])  # a point missing
    assert perplexity(np.array([0.0, np.log(7.0)])) == pytest.approx([1.0, 7.0])


class Bowl(nn.Module):
    """A net whose loss is known in closed form: L(θ) = 2 − ‖θ‖² for every sample."""

    loss_output = True

    def __init__(self, theta):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta))

    def forward(self, x):
        return (2 - (self.theta**2).sum()).expand(x.shape[0])  # (B,)


def test_interpolate_reports_the_barrier_of_a_quadratic_path(tmp_path, capsys):
    a, b = Bowl([1.0, 0.0]), Bowl([-1.0, 0.0])  # θ(t) = (1 − 2t, 0): L = 2 − (1 − 2t)²
    data = {"train": torch.zeros(4, 1), "test": torch.zeros(3, 1)}
    ds = lh.interpolate(a, b, data, t=(-0.5, 1.5, 41), out=tmp_path / "line.h5", progress=False)
    for split in ("train", "test"):
        assert ds.attrs[f"barrier_{split}"] == pytest.approx(1.0)  # L(0.5) = 2, chord 1
        assert ds.attrs[f"barrier_t_{split}"] == pytest.approx(0.5)
    with h5py.File(tmp_path / "line.h5") as f:
        assert f.attrs["barrier_train"] == pytest.approx(1.0)
    assert "loss barrier (train): 1 at t = 0.5" in capsys.readouterr().out
    off = lh.interpolate(a, b, data, t=(0.1, 0.9, 5), progress=False)
    assert np.isnan(off.attrs["barrier_train"])  # the grid holds neither end


def test_the_command_writes_the_barrier_of_two_checkpoints(tmp_path):
    from landscape_hpc.config import DatasetConfig, ModelConfig
    from landscape_hpc.data import load_dataset
    from landscape_hpc.models import build_model

    paths = []
    for seed in (0, 1):
        net = build_model(ModelConfig(name="mlp", init_seed=seed), (1, 8, 8), 10)
        paths.append(tmp_path / f"m{seed}.pt")
        torch.save({"state_dict": net.state_dict()}, paths[-1])
    overrides = [
        "model=mlp",
        f"model.checkpoint={paths[0]}",
        "directions.kind=models",
        f"directions.model2={paths[1]}",
        "dataset.max_samples=60",
        "grid.x=[0,1,5]",
        "grid.y=null",
        "engine.strategy=sequential",
        "plot=false",
        f"out={tmp_path / 'line.h5'}",
    ]
    from landscape_hpc.parallel import world_if_none

    _command(compose_config("surface", overrides), world_if_none(None))
    splits = load_dataset(DatasetConfig(max_samples=60))
    data = {name: (s.inputs, s.labels) for name, s in splits.items()}
    a = build_model(ModelConfig(name="mlp", init_seed=0), (1, 8, 8), 10)
    b = build_model(ModelConfig(name="mlp", init_seed=1), (1, 8, 8), 10)
    ds = lh.interpolate(a, b, data, t=(0, 1, 5), strategy="sequential", progress=False)
    with h5py.File(tmp_path / "line.h5") as f:
        for split in ("train", "test"):
            assert f.attrs[f"barrier_{split}"] == pytest.approx(ds.attrs[f"barrier_{split}"])
            losses = f[f"{split}_loss"][()]
            chord = np.linspace(losses[0], losses[-1], 5)
            assert f.attrs[f"barrier_{split}"] == pytest.approx((losses - chord).max())
        assert "train_ppl" not in f  # ce: no perplexity
