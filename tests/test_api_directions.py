"""lh.pca_directions (landscape_hpc/api/directions.py): the surface command's PCA directions and
projected path bit for bit, from states held in memory; the notebook path (the directions into
lh.surface, the path over its contour); bad trajectories as one-line ValueErrors."""

from __future__ import annotations

import inspect
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import DatasetConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

DATA = ["model=mlp", "dataset.max_samples=120"]
GRID = ["grid.x=[-2,2,3]", "grid.y=[-1,1,3]"]


def digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    splits = load_dataset(DatasetConfig(max_samples=120))
    return {name: (s.inputs, s.labels) for name, s in splits.items()}


def sgd_trajectory(n: int = 5) -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """The registry mlp trained by a few steps of full-batch SGD: its state after each step."""
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    inputs, labels = digits()["train"]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    for _ in range(n - 1):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return model, states


def save(states: list[dict], folder: Path) -> Path:
    """The states as `python -m landscape_hpc.train save_every=1` writes its checkpoints."""
    (folder / "checkpoints").mkdir(parents=True)
    for i, state in enumerate(states):
        torch.save({"state_dict": state, "epoch": i}, folder / "checkpoints" / f"epoch_{i:04d}.pt")
    return folder


def test_pca_directions_equal_the_commands_and_the_surface_follows(tmp_path):
    model, states = sgd_trajectory()
    run = save(states, tmp_path / "run")
    overrides = [
        *DATA, *GRID, "directions.kind=pca", f"directions.trajectory={run}",
        "engine.strategy=vmap", "plot=false", f"out={tmp_path / 'command.h5'}",
    ]  # fmt: skip
    command = compute_surface(compose_config("surface", overrides))

    dirs, path = lh.pca_directions(states, model)
    keys = [k for k, v in states[-1].items() if v.dim() > 1]  # ignore="biasbn"
    with h5py.File(command) as f:
        for axis, direction in zip("xy", dirs):
            assert sorted(direction) == sorted(f[f"directions/{axis}"]) == sorted(keys)
            for key, value in direction.items():
                np.testing.assert_array_equal(value.numpy(), f[f"directions/{axis}/{key}"][()])
        np.testing.assert_array_equal(path.coords[:, 0], f["trajectory/x"][()])
        np.testing.assert_array_equal(path.coords[:, 1], f["trajectory/y"][()])
        np.testing.assert_array_equal(
            path.explained_variance_ratio, f.attrs["explained_variance_ratio"]
        )
        np.testing.assert_array_equal(path.epochs, f["trajectory/epoch"][()])
        values = {name: f[name][()] for name in ("train_loss", "test_acc")}
    assert path.coords.shape == (5, 2) and tuple(path.coords[-1]) == (0.0, 0.0)  # the origin
    assert path.explained_variance_ratio[0] > path.explained_variance_ratio[1] > 0

    # the notebook path: the model at the last state, the directions into lh.surface
    model.load_state_dict(states[-1])
    ds = lh.surface(
        model, digits(), x=(-2, 2, 3), y=(-1, 1, 3), directions=dirs, strategy="vmap",
        progress=False,
    )  # fmt: skip
    for name, expected in values.items():
        np.testing.assert_array_equal(ds[name].values, expected)

    # the same from the models themselves, or from state dicts alone (no buffers in an mlp)
    nets = []
    for state in states:
        net = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
        net.load_state_dict(state)
        nets.append(net)
    for other, other_path in (lh.pca_directions(nets), lh.pca_directions(states)):
        for mine, theirs in zip(other, dirs):
            assert (
                all(torch.equal(mine[k], theirs[k]) for k in theirs)
                and mine.keys() == theirs.keys()
            )
        np.testing.assert_array_equal(other_path.coords, path.coords)


def test_one_direction_and_the_whole_state_and_lstsq():
    model, states = sgd_trajectory(4)
    one, path = lh.pca_directions(states, model, n=1)
    two, _ = lh.pca_directions(states, model)
    assert len(one) == 1 and path.coords.shape == (4, 1)
    assert all(torch.equal(one[0][k], two[0][k]) for k in two[0])
    every, _ = lh.pca_directions(states, model, ignore="none")
    assert sorted(every[0]) == sorted(k for k, _ in model.named_parameters())  # biases too
    _, squares = lh.pca_directions(states, model, projection="lstsq")
    # the PCA axes are orthogonal: least squares in their span is the scalar projection
    np.testing.assert_allclose(
        squares.coords, lh.pca_directions(states, model)[1].coords, atol=1e-5
    )


def _renamed(states: list[dict]) -> list[dict]:
    first = {("w" if k == "layers.1.weight" else k): v for k, v in states[0].items()}
    return [first, *states[1:]]


@pytest.mark.parametrize(
    "make, kwargs, message",
    [
        (lambda s: [], {}, r"trajectory= holds 0 state\(s\); the PCA of a path needs at least 3"),
        (lambda s: s[:1], {}, r"holds 1 state\(s\)"),
        (lambda s: s[:2], {}, r"holds 2 state\(s\)"),
        (lambda s: s[0], {}, "trajectory= is a dict; give a list"),
        (
            _renamed,
            {},
            r"trajectory\[0\] does not match trajectory\[-1\] \(the origin\): "
            r"missing keys \['layers.1.weight'\], unexpected keys \['w'\]",
        ),
        (lambda s: [*s[:2], {"layers.1.weight": torch.zeros(3)}], {}, r"trajectory\[0\] does not"),
        (lambda s: [*s, "model.pt"], {}, r"trajectory\[4\] is a str"),
        (lambda s: s, {"n": 3}, "n=3: PCA directions are 1"),
        (lambda s: s, {"projection": "ortho"}, "projection='ortho' is not known"),
        (lambda s: s, {"ignore": "bn"}, "ignore='bn' is not known"),
        (lambda s: s, {"ignore": "none"}, 'ignore="none" needs model='),
        (lambda s: s, {"model": nn.Linear(64, 10)}, "model= does not match trajectory"),
    ],
)
def test_a_bad_trajectory_is_a_one_line_value_error(make, kwargs, message):
    _, states = sgd_trajectory(4)
    with pytest.raises(ValueError, match=message) as err:
        lh.pca_directions(make(states), **kwargs)
    assert isinstance(err.value, lh.UserError) and "\n" not in str(err.value)


def test_help_documents_every_argument():
    doc = inspect.getdoc(lh.pca_directions)
    for parameter in inspect.signature(lh.pca_directions).parameters:
        assert f"{parameter}:" in doc, parameter
    assert "pca_directions" in dir(lh)
