"""The library at the package's face (landscape_hpc/api/): a model and data that exist only in
this file, against the surface command, the plain loop and exact answers."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import DatasetConfig, EngineConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.evaluate import evaluate_points_loop
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.files.surface_read import read_surface
from landscape_hpc.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def digits(max_samples: int = 80) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    splits = load_dataset(DatasetConfig(max_samples=max_samples))
    return {name: (s.inputs, s.labels) for name, s in splits.items()}


def notebook_net(seed: int = 0, bn: bool = False) -> nn.Module:
    """A net defined here, in a function: nothing importable names it."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
            self.fc = nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))

    torch.manual_seed(seed)
    return Net()


def test_the_api_equals_the_command_on_the_same_problem(tmp_path):
    overrides = [
        "model=mlp",
        "dataset.max_samples=80",
        "grid.x=[-1,1,4]",
        "grid.y=[-0.5,0.5,3]",
        "engine.strategy=vmap",
        "plot=false",
        f"out={tmp_path / 'command.h5'}",
    ]
    command_file = compute_surface(compose_config("surface", overrides))
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)  # init_seed 0, as the command
    ds = lh.surface(
        model, digits(), x=(-1, 1, 4), y=(-0.5, 0.5, 3), strategy="vmap", out=tmp_path / "api.h5"
    )
    command, api = read_surface(command_file), read_surface(tmp_path / "api.h5")
    assert api.metrics.keys() == command.metrics.keys()
    for name, values in command.metrics.items():
        np.testing.assert_array_equal(api.metrics[name], values)  # bit for bit, strategy pinned
        np.testing.assert_array_equal(ds[name].values, values)
    with h5py.File(command_file) as a, h5py.File(tmp_path / "api.h5") as b:
        for axis in ("x", "y"):
            keys = sorted(a[f"directions/{axis}"])
            assert keys == sorted(b[f"directions/{axis}"])
            for key in keys:
                np.testing.assert_array_equal(
                    a[f"directions/{axis}/{key}"][()], b[f"directions/{axis}/{key}"][()]
                )


def test_precision_is_the_commands_and_is_written_alike(tmp_path):
    overrides = [
        "model=mlp",
        "dataset.max_samples=80",
        "grid.x=[-1,1,3]",
        "grid.y=null",
        "engine.strategy=sequential",
        "engine.precision=bf16",
        "plot=false",
        f"out={tmp_path / 'command.h5'}",
    ]
    command_file = compute_surface(compose_config("surface", overrides))
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    args = dict(x=(-1, 1, 3), y=None, strategy="sequential", progress=False)
    lh.surface(model, digits(), **args, precision="bf16", out=tmp_path / "api.h5")
    fp32 = lh.surface(model, digits(), **args)
    command, api = read_surface(command_file), read_surface(tmp_path / "api.h5")
    with h5py.File(command_file) as a, h5py.File(tmp_path / "api.h5") as b:
        assert a.attrs["precision"] == b.attrs["precision"] == "bf16"
    for name, values in command.metrics.items():
        np.testing.assert_array_equal(api.metrics[name], values)  # the same kernel, bf16
    # bf16 is not fp32: had the keyword been dropped, the values would be fp32's
    assert not np.array_equal(api.metrics["train_loss"], fp32["train_loss"].values)
    assert fp32.attrs["precision"] == "fp32"


def test_a_model_defined_in_a_function_against_the_plain_loop():
    model, data = notebook_net(), digits()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    ds = lh.surface(model, data, x=(-1, 1, 3), y=(-1, 1, 3), seed=3, progress=False)
    assert ds.train_loss.dims == ("y", "x") and ds.sizes == {"y": 3, "x": 3}
    assert model.training  # the caller's mode comes back
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    basis = lh.random_directions(model, 2, seed=3)
    origin = {k: v.clone() for k, v in model.state_dict().items()}
    coords = torch.tensor([[x, y] for y in (-1.0, 0.0, 1.0) for x in (-1.0, 0.0, 1.0)])
    loop = evaluate_points_loop(model, Subspace(origin, basis), coords, data, EngineConfig())
    for split in ("train", "test"):
        np.testing.assert_allclose(ds[f"{split}_loss"].values.reshape(-1), loop[split].loss, 1e-6)
        np.testing.assert_allclose(ds[f"{split}_acc"].values.reshape(-1), loop[split].acc)
    assert ds.attrs["directions_seed"] == 3 and ds.attrs["loss"] == "ce"


def test_save_and_load_round_trip_and_a_saved_surface_resumes(tmp_path):
    model, data = notebook_net(1), digits()
    ds = lh.surface(model, data, x=(-1, 1, 4), y=None, progress=False)
    assert ds.train_loss.dims == ("x",)
    path = lh.save(ds, tmp_path / "s.h5")
    back = lh.load(path)
    for name in ("train_loss", "train_acc", "test_loss", "test_acc", "done"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert [sorted(d) for d in back.attrs["basis"]] == [sorted(d) for d in ds.attrs["basis"]]
    for key, value in ds.attrs["basis"][0].items():
        np.testing.assert_array_equal(back.attrs["basis"][0][key], value)
    # the saved file carries the job's fingerprint: the same call with out= resumes it, no work
    with h5py.File(path, "r+") as f:  # forget two points: only they are recomputed
        f["done"][1:3] = 0
        f["train_loss"][1:3] = np.nan
    again = lh.surface(model, data, x=(-1, 1, 4), y=None, out=path, progress=False)
    np.testing.assert_array_equal(again.train_loss.values, ds.train_loss.values)
    with pytest.raises(lh.UserError, match="made for another job"):
        lh.surface(model, data, x=(-1, 1, 5), y=None, out=path, progress=False)


def test_interpolate_ends_at_both_models_bn_statistics_included():
    data = digits()
    a, b = notebook_net(0, bn=True), notebook_net(1, bn=True)
    for net, seed in ((a, 2), (b, 3)):  # BN statistics unlike the defaults, and unlike each other
        torch.manual_seed(seed)
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2)
    line = lh.interpolate(a, b, data, t=(0, 1, 2), progress=False)
    for end, net in zip((0, 1), (a, b)):
        net.eval()
        with torch.no_grad():
            inputs, labels = data["test"]
            expected = nn.functional.cross_entropy(net(inputs).double(), labels).item()
        assert line.test_loss.values[end] == pytest.approx(expected, rel=1e-6)
    assert line.attrs["directions"] == "interpolation"


@pytest.mark.parametrize("strategy", ["vmap", "sequential", "auto"])
def test_a_bn_net_in_train_mode_is_measured_as_in_eval_mode_and_left_untouched(strategy):
    """bn="eval" means the running statistics, whatever mode the caller's net is in: the surface
    of a train-mode BN net equals its eval-mode surface, and no forward (the memory probe's
    included) moves its running statistics or leaves it in another mode."""
    net = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    g = torch.Generator().manual_seed(0)
    data = {"train": (torch.randn(24, 1, 8, 8, generator=g), torch.randint(0, 10, (24,)))}
    kw = dict(x=(-1, 1, 3), y=(-1, 1, 3), strategy=strategy, progress=False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trained = lh.surface(net.train(), data, **kw)
    assert net.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    evaluated = lh.surface(net.eval(), data, **kw)
    np.testing.assert_array_equal(trained.train_loss.values, evaluated.train_loss.values)


def test_hessian_equals_the_exact_eigenvalues_of_a_small_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    inputs, labels = torch.randn(32, 3, dtype=torch.float64), torch.randint(0, 2, (32,))
    n = sum(p.numel() for p in model.parameters())  # 26: Lanczos with n steps is exact
    result = lh.hessian(model, (inputs, labels), lanczos_steps=n, lanczos_tol=0, double=True,
                        trace_samples=0)  # fmt: skip
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]

    def loss(theta):
        parts = torch.split(theta, [int(torch.Size(s).numel()) for s in shapes])
        state = {k: p.view(s) for k, p, s in zip(names, parts, shapes)}
        out = torch.func.functional_call(model, state, (inputs,))
        return nn.functional.cross_entropy(out, labels)

    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta))
    assert result.max_eig == pytest.approx(float(exact[-1]), rel=1e-8, abs=1e-10)
    assert result.min_eig == pytest.approx(float(exact[0]), rel=1e-8, abs=1e-10)
    assert np.isnan(result.trace)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"splits": ["val"]}, r"splits=\['val'\]: \['val'\] to evaluate"),
        ({"x": (1, -1, 3)}, "x=.*min 1.0 is larger than max"),
        ({"bn": "train"}, "bn='train' is not known"),
        ({"strategy": "fast"}, "strategy='fast' is not known"),
        ({"directions": [{"nope.weight": torch.zeros(1)}]}, "directions\\[0\\] does not fit"),
        ({"directions": "pca"}, "directions='pca' is not known"),
        ({"bn": "recompute", "bn_split": "val"}, "bn_split='val' is not a split"),
        ({"precision": "fp16"}, "precision='fp16' is not known"),
        ({"data_parallel": 2}, r"data_parallel=2 needs the worker count \(1: .*mpirun -n 3 "),
        ({"data_parallel": 0}, "data_parallel=0 must be a whole number >= 1"),
    ],
)
def test_bad_arguments_are_one_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        lh.surface(notebook_net(), digits(40), **{"x": (-1, 1, 2), "y": None, **kwargs})
    assert isinstance(err.value, lh.UserError) and "\n" not in str(err.value)


def test_interpolate_refuses_direction_arguments():
    with pytest.raises(TypeError, match="no seed="):
        lh.interpolate(notebook_net(0), notebook_net(1), digits(40), seed=1)


def test_the_face_lists_its_functions_and_documents_every_argument():
    import inspect

    for name in ("surface", "interpolate", "save", "load", "hessian", "random_directions"):
        assert name in dir(lh) and callable(getattr(lh, name))
    for keyword in ("precision", "data_parallel"):  # interpolate passes them on to surface
        assert keyword in inspect.getdoc(lh.interpolate)
    doc = inspect.getdoc(lh.surface)
    for parameter in inspect.signature(lh.surface).parameters:
        assert f"{parameter}:" in doc or f"{parameter}," in doc, parameter


def test_bn_recompute_from_a_streamed_training_split_equals_the_resident_one():
    model, data = notebook_net(2, bn=True), digits()
    inputs, labels = data["train"]
    pairs = torch.utils.data.TensorDataset(inputs, labels)
    # BN statistics are averaged over batches, so the stream is cut as the resident split is
    loader = torch.utils.data.DataLoader(pairs, batch_size=256)
    streamed = {"train": loader, "test": data["test"]}
    args = dict(x=(-1, 1, 3), y=None, bn="recompute", strategy="vmap", progress=False)
    resident = lh.surface(model, data, **args)
    from_stream = lh.surface(model, streamed, **args)
    for name in ("train_loss", "test_loss", "train_acc", "test_acc"):
        np.testing.assert_allclose(from_stream[name].values, resident[name].values, rtol=1e-6)
