"""lh.fit_mpo and lh.mpo_mask (landscape_hpc/api/mpo.py): the same plane and cells as the MPO
command bit for bit, a model defined here against the plain reference loop, resume through
out_dir, and bad arguments as one-line ValueErrors."""

from __future__ import annotations

import dataclasses
import inspect
import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.cli import compose_config
from landscape_hpc.config import DatasetConfig, EngineConfig, FitOptions, ModelConfig, MPOConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.evaluate import evaluate_points_loop
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.files.plane import read_plane
from landscape_hpc.grid import Grid, cell_coords, pattern_to_surface
from landscape_hpc.models import build_model
from landscape_hpc.mpo.command import run_mpo
from landscape_hpc.mpo.convergence import HISTORY_COLUMNS, read_history_csv
from landscape_hpc.mpo.plane_init import fresh_copy

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
TIMELESS = [c for c in HISTORY_COLUMNS if c != "seconds"]
#: a tiny fit: a 4×4 random pattern, few steps, the cells evaluated one by one (pinned)
FIT = {"batch_size": 32, "cells_per_step": 4, "steps": 24, "eval_every": 8, "lr": 3e-3}


def digits(max_samples: int = 200) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    splits = load_dataset(DatasetConfig(max_samples=max_samples))
    return {name: (s.inputs, s.labels) for name, s in splits.items()}


def registry_mlp() -> nn.Module:
    return build_model(ModelConfig(name="mlp", kwargs={"hidden": [16]}), (1, 8, 8), 10)


def small_mask() -> np.ndarray:
    return lh.mpo_mask("random", size=4, fill_prob=0.5, seed=0)


def test_fit_mpo_equals_the_command_bit_for_bit(tmp_path):
    overrides = [
        "model=mlp", "+model.kwargs.hidden=[16]", "dataset.max_samples=200", "mask=random",
        "mask.size=4", "mask.fill_prob=0.5", "mask.seed=0", "engine.strategy=sequential",
        "plot=false", f"out_dir={tmp_path / 'command'}", *(f"{k}={v}" for k, v in FIT.items()),
    ]  # fmt: skip
    metrics = run_mpo(compose_config("mpo", overrides))
    mask = small_mask()
    assert 0 < mask.sum() < mask.size
    kwargs = {**FIT, "engine": {"strategy": "sequential"}, "progress": False}
    res = lh.fit_mpo(registry_mlp(), digits(), mask, **kwargs)
    on_disk = lh.fit_mpo(registry_mlp(), digits(), mask, out_dir=tmp_path / "api", **kwargs)

    command = read_plane(tmp_path / "command" / "plane.pt")
    library = read_plane(tmp_path / "api" / "plane.pt")
    np.testing.assert_array_equal(command["mask"].numpy(), mask)
    for plane in (res.plane, on_disk.plane, library):
        assert plane["scale"] == command["scale"]
        for part in ("origin", "up", "right"):
            assert plane[part].keys() == command[part].keys()
            for key, value in command[part].items():
                assert torch.equal(plane[part][key], value), (part, key)
    with (
        h5py.File(tmp_path / "command" / "surface.h5") as f,
        h5py.File(tmp_path / "api" / "surface.h5") as g,
    ):
        for name in METRICS:
            np.testing.assert_array_equal(res.surface[name].values, f[name][()])
            np.testing.assert_array_equal(g[name][()], f[name][()])
    assert res.metrics["train"] == metrics["train"] and res.metrics["test"] == metrics["test"]
    assert json.loads((tmp_path / "api" / "metrics.json").read_text())["test"] == metrics["test"]
    history = read_history_csv(tmp_path / "command" / "history.csv")
    assert res.history["step"].tolist() == [0, 8, 16, 24]
    columns = [HISTORY_COLUMNS.index(c) for c in TIMELESS]
    np.testing.assert_array_equal(res.history[TIMELESS].to_numpy(), history[:, columns])
    assert res.metrics["steps"] == 24 and res.surface.attrs["steps"] == 24


def notebook_net(seed: int = 0) -> nn.Module:
    """A net with BatchNorm defined here, in a function: nothing importable names it."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)
            self.fc = nn.Linear(3 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))

    torch.manual_seed(seed)
    return Net()


def test_a_model_defined_in_a_function_against_the_plain_loop():
    model, data = notebook_net(), digits(120)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = lh.mpo_mask("builtin", name="square", size=4)
    res = lh.fit_mpo(model, data, mask, **FIT, eval_samples=None, progress=False)
    assert model.training  # the caller's mode comes back, the weights are untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    ds = res.surface
    assert ds.train_loss.dims == ("y", "x") and ds.sizes == {"y": 4, "x": 4}
    np.testing.assert_array_equal(ds["mask"].values, pattern_to_surface(mask))
    np.testing.assert_array_equal(ds["x"].values, cell_coords((4, 4))[0])
    right, up = res.plane["right"], res.plane["up"]
    cos = sum((right[k] * up[k]).sum() for k in up) / (
        sum((v * v).sum() for v in up.values()).sqrt()
        * sum((v * v).sum() for v in right.values()).sqrt()
    )
    assert abs(float(cos)) < 1e-5  # eq. (2): right ⟂ up

    # every cell against the plain reference: one network at a time, BN statistics recomputed
    grid = Grid(*cell_coords(mask.shape))
    subspace = Subspace(res.plane["origin"], res.directions)
    coords = torch.from_numpy(grid.coords(np.arange(grid.size)))
    loop = evaluate_points_loop(
        model, subspace, coords, data, EngineConfig(bn="recompute"), data["train"][0]
    )
    for split in ("train", "test"):
        np.testing.assert_allclose(ds[f"{split}_loss"].values.reshape(-1), loop[split].loss, 1e-5)
        np.testing.assert_allclose(ds[f"{split}_acc"].values.reshape(-1), loop[split].acc)
    # the network of the top-left cell: α = x[0], β = y[-1] (row 0 is the top)
    state = res.cell_state(0, 0)
    point = subspace.point(torch.tensor([grid.x[0], grid.y[-1]]))
    for key, value in point.items():
        torch.testing.assert_close(state[key], value.to(state[key].dtype))
    with pytest.raises(ValueError, match="outside the 4×4 pattern"):
        res.cell_state(4, 0)


def test_fresh_up_and_right_are_the_commands_freshly_built_nets():
    for name in ("mlp", "mpo_cnn_bn"):
        cfg = ModelConfig(name=name)
        fresh = fresh_copy(build_model(cfg, (1, 8, 8), 10), 7).state_dict()
        built = build_model(dataclasses.replace(cfg, init_seed=7), (1, 8, 8), 10).state_dict()
        assert all(torch.equal(fresh[k], v) for k, v in built.items()), name

    class Scaled(nn.Module):  # a parameter no layer's reset_parameters() draws
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.gain = nn.Parameter(torch.ones(10))

        def forward(self, x):
            return self.fc(x.flatten(1)) * self.gain

    with pytest.raises(ValueError, match=r"parameters \['gain'\] belong to modules without"):
        lh.fit_mpo(Scaled(), digits(40), small_mask(), steps=1, progress=False)


def test_a_resumed_fit_equals_an_uninterrupted_one_and_a_finished_one_does_nothing(tmp_path):
    model, data, mask = registry_mlp(), digits(), small_mask()
    kwargs = {**FIT, "checkpoint_every": 8, "early_stop": False, "progress": False}
    lh.fit_mpo(model, data, mask, out_dir=tmp_path, **{**kwargs, "steps": 16})
    resumed = lh.fit_mpo(model, data, mask, out_dir=tmp_path, **{**kwargs, "steps": 32})
    straight = lh.fit_mpo(model, data, mask, **{**kwargs, "steps": 32})
    assert resumed.metrics["steps"] == straight.metrics["steps"] == 32
    for part in ("up", "right", "origin"):
        for key, value in straight.plane[part].items():
            assert torch.equal(resumed.plane[part][key], value), (part, key)
    for name in METRICS:
        np.testing.assert_array_equal(resumed.surface[name].values, straight.surface[name].values)
    np.testing.assert_array_equal(
        resumed.history[TIMELESS].to_numpy(), straight.history[TIMELESS].to_numpy()
    )

    # the same call again: nothing is fitted (the checkpoint stays) or evaluated again (a marker
    # in the surface file survives)
    checkpoint = (tmp_path / "checkpoint.pt").read_bytes()
    with h5py.File(tmp_path / "surface.h5", "r+") as f:
        f["test_acc"][0, 0] = -1.0
    again = lh.fit_mpo(model, data, mask, out_dir=tmp_path, **{**kwargs, "steps": 32})
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint
    assert again.surface.test_acc.values[0, 0] == -1.0
    with pytest.raises(ValueError, match="made by another MPO job"):  # another origin
        lh.fit_mpo(notebook_net(), data, mask, out_dir=tmp_path, **kwargs)


@pytest.mark.parametrize(
    "mask, message",
    [
        (np.array([[0, 2], [1, 0]]), r"mask= holds values other than 0 and 1 \(\[2\]\)"),
        (np.array([[0.0, 0.5], [1.0, 0.0]]), "values other than 0 and 1"),
        (np.zeros(4), r"mask= has shape \(4,\), not \(H, W\)"),
        (np.zeros((2, 2, 2)), r"has shape \(2, 2, 2\)"),
        (np.zeros((1, 5)), r"has shape \(1, 5\)"),
        ([[0, 1], [1]], "not a rectangular array"),
        (np.ones((3, 3)), r"no high-loss \(0\) cells"),
        (torch.zeros(3, 3), r"no low-loss \(1\) cells"),
        ("rong", "mask='rong' is not known"),
    ],
)
def test_a_bad_mask_is_a_one_line_value_error(mask, message):
    with pytest.raises(ValueError, match=message) as err:
        lh.fit_mpo(registry_mlp(), digits(40), mask, steps=1, progress=False)
    assert isinstance(err.value, lh.UserError) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps=0 must be a positive integer"),
        ({"lr": -1.0}, "lr=-1.0 must be positive"),
        ({"plane_init": "glorot"}, "plane_init='glorot' is not known"),
        ({"engine": {"strategy": "fast"}}, "engine.strategy='fast' is not known"),
        ({"engine": {"nope": 1}}, r"engine= has unknown keys \['nope'\]"),
        ({"engine": {"bn": "eval"}}, "engine.bn=eval: Net has BatchNorm"),
        ({"data": {"train": (torch.zeros(4, 1, 8, 8), torch.zeros(4))}}, "lacks the split"),
    ],
)
def test_bad_arguments_are_one_line_value_errors(kwargs, message):
    data = kwargs.pop("data", digits(40))
    with pytest.raises(ValueError, match=message) as err:
        lh.fit_mpo(notebook_net(), data, small_mask(), progress=False, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "random", "fill_prob": 1.5}, "fill_prob=1.5 must lie strictly between"),
        ({"kind": "random", "size": 3, "frame": True}, "frame=true needs size of at least 4×4"),
        ({"kind": "builtin", "name": "moon"}, "name='moon' is not known"),
        ({"kind": "drawn"}, "kind='drawn' is not known"),
        ({"kind": "image", "path": "/nonexistent/cat.png"}, "path=/nonexistent/cat.png: no such"),
    ],
)
def test_mpo_mask_names_its_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lh.mpo_mask(**kwargs)


def test_mpo_mask_draws_what_the_command_draws(tmp_path):
    from landscape_hpc.mpo.patterns import make_mask

    random = ["mask=random", "mask.size=9", "mask.fill_prob=0.3", "mask.seed=4"]
    cfg = compose_config("mpo", [f"out_dir={tmp_path}", *random])
    mask = lh.mpo_mask("random", size=9, fill_prob=0.3, seed=4)
    np.testing.assert_array_equal(mask, make_mask(cfg.mask))
    default = make_mask(compose_config("mpo", [f"out_dir={tmp_path}"]).mask)  # builtin ring
    np.testing.assert_array_equal(lh.mpo_mask(name="ring"), default)
    np.testing.assert_array_equal(lh.api.mpo.as_mask("ring"), default)


def test_defaults_are_the_commands_and_help_documents_every_argument():
    defaults = MPOConfig.__dataclass_fields__
    signature = inspect.signature(lh.fit_mpo).parameters
    objects = ("model", "mask", "engine", "device", "out_dir")  # given as objects, not keys
    shared = [n for n in signature if n in defaults and n not in objects]
    assert {f.name for f in dataclasses.fields(FitOptions)} < set(shared)  # every fit key
    for name in shared:
        assert signature[name].default == defaults[name].default, name
    for function in (lh.fit_mpo, lh.mpo_mask):
        doc = inspect.getdoc(function)
        for parameter in inspect.signature(function).parameters:
            assert f"{parameter}:" in doc, (function.__name__, parameter)
    assert {"fit_mpo", "mpo_mask"} <= set(dir(lh))
