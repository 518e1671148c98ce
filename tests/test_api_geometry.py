"""The geometry experiments at the package's face (landscape_hpc/api/geometry.py, curvature.py,
intrinsic_dim.py): each function against its command on the same tiny problem (bit for bit: one
kernel), nets defined in this file against exact answers and the plain reference, bad arguments
as one-line ValueErrors, and help that documents every argument."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import shutil

import numpy as np
import pytest
import torch
from hull_helpers import digits_dataset, mlp_model
from torch import nn

import landscape_hpc as lh
from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import (
    ConnectorConfig,
    DatasetConfig,
    EngineConfig,
    HessianConfig,
    HyperplaneConfig,
    IntrinsicDimConfig,
    ModelConfig,
    TunnelConfig,
    WedgeConfig,
    WedgeHyperplaneConfig,
    WidthConfig,
)
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.files.hessian_maps import read_maps
from landscape_hpc.geometry.connector import run_connector
from landscape_hpc.geometry.curvature import run_map
from landscape_hpc.geometry.intrinsic_dim import run_subspace
from landscape_hpc.geometry.projection import DenseProjection
from landscape_hpc.geometry.tunnel import run_tunnel
from landscape_hpc.geometry.wedge import run_wedge
from landscape_hpc.geometry.width import ray_widths, run_width
from landscape_hpc.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

FUNCTIONS = ("hessian_map", "tunnel", "connector", "tunnel_width", "subspace_training", "wedge")
VMAP = EngineConfig(strategy="vmap")  # pinned: auto's timing could pick another per run


def _pairs(splits) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: (s.inputs, s.labels) for name, s in splits.items()}


def _digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return _pairs(load_dataset(digits_dataset()))


def _trained(path: str) -> nn.Module:
    """The command's net for an optimum: model=mlp with the checkpoint loaded."""
    return build_model(dataclasses.replace(mlp_model(), checkpoint=path), (1, 8, 8), 10)


def tiny_net(seed: int) -> nn.Module:
    """A net defined here, in a function: nothing importable names it."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Linear(3, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.tanh(self.hidden(x)))

    torch.manual_seed(seed)
    return Net()


def _tiny_data(n: int = 48) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 3, generator=g)
    return {"train": (x, (x[:, 0] > 0).long()), "test": (x.flip(0), (x[:, 1] > 0).long())}


def _same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for split, kinds in a.items():
        assert kinds.keys() == b[split].keys()
        for kind, (loss, acc) in kinds.items():
            np.testing.assert_array_equal(b[split][kind][0], loss, err_msg=f"{split} {kind}")
            np.testing.assert_array_equal(b[split][kind][1], acc, err_msg=f"{split} {kind}")


# --- hessian_map ---------------------------------------------------------------------------------

TINY_SURFACE = [
    "model=mlp",
    "+model.kwargs.hidden=[3]",
    "dataset=synthetic",
    "dataset.shape=[3]",
    "dataset.num_classes=3",
    "dataset.num_train=40",
    "grid.x=[-1,1,3]",
    "grid.y=[-1,1,2]",
    "plot=false",
]


def test_hessian_map_equals_the_command_from_a_file_and_from_a_dataset(tmp_path):
    made = compute_surface(compose_config("surface", [f"out={tmp_path / 's.h5'}", *TINY_SURFACE]))
    command_file, api_file = tmp_path / "command.h5", tmp_path / "api.h5"
    shutil.copy(made, command_file)
    shutil.copy(made, api_file)
    settings = dict(lanczos_steps=6, lanczos_tol=0.0)
    run_map(HessianConfig(model=ModelConfig(), dataset=DatasetConfig(), surface=str(command_file),
                          device="cpu", plot=False, **settings))  # fmt: skip
    model = build_model(ModelConfig(name="mlp", kwargs={"hidden": [3]}), (3,), 3)  # init_seed 0
    data = _pairs(load_dataset(DatasetConfig(name="synthetic", shape=[3], num_classes=3,
                                             num_train=40)))  # fmt: skip
    ds = lh.hessian_map(model, data, api_file, progress=False, **settings)
    command = read_maps(command_file)
    np.testing.assert_array_equal(read_maps(api_file).max_eig, command.max_eig)  # one kernel
    np.testing.assert_array_equal(ds.max_eig.values, command.max_eig)
    np.testing.assert_array_equal(ds.min_eig.values, command.min_eig)
    assert ds.max_eig.dims == ("y", "x") and (ds.hessian_done.values == 1).all()
    assert (ds.min_eig.values < ds.max_eig.values).all() and "train_loss" in ds
    # the command's maps in a file are resumed by the library (the same settings): nothing to do
    again = lh.hessian_map(model, data, command_file, progress=False, **settings)
    assert '"points": 6' in again.max_eig.attrs["lanczos"]  # the command's 6 points, no more
    with pytest.raises(lh.UserError, match="made with other settings"):
        lh.hessian_map(model, data, command_file, progress=False, lanczos_steps=5)
    # in memory, from the loaded Dataset: the same numbers, the file untouched
    memory = lh.hessian_map(model, data, lh.load(made), progress=False, **settings)
    np.testing.assert_array_equal(memory.max_eig.values, command.max_eig)
    np.testing.assert_array_equal(memory.min_eig.values, command.min_eig)
    assert "max_eig" not in lh.load(made)


def test_hessian_map_of_a_net_defined_here_equals_the_exact_hessian():
    model, data = tiny_net(0), _tiny_data()
    ds = lh.surface(model, data, x=(-1, 1, 3), y=None, progress=False)
    n = sum(p.numel() for p in model.parameters())  # 26: Lanczos with n steps is exact
    model.train()
    maps = lh.hessian_map(model, data, ds, lanczos_steps=n, lanczos_tol=0, double=True,
                          progress=False)  # fmt: skip
    assert model.training and maps.max_eig.dims == ("x",)
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    reference, (inputs, labels) = copy.deepcopy(model).double(), data["train"]
    for i, a in enumerate(ds.x.values):
        basis = {k: torch.from_numpy(v) for k, v in ds.attrs["basis"][0].items()}
        # the float32 point (biases have no direction: ignore=biasbn), then float64
        state = {k: (v + float(a) * basis.get(k, 0)).double() for k, v in origin.items()}
        loss, theta = flat_loss(reference, state, list(state), inputs.double(), labels)
        exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta))
        scale = float(exact.abs().max())
        assert maps.max_eig.values[i] == pytest.approx(float(exact[-1]), abs=1e-6 * scale)
        assert maps.min_eig.values[i] == pytest.approx(float(exact[0]), abs=1e-6 * scale)
    with torch.no_grad():
        moved = tiny_net(0)
        moved.out.bias += 1
    with pytest.raises(ValueError, match="is not the net surface= was computed around"):
        lh.hessian_map(moved, data, ds, progress=False)


# --- tunnel, connector, width on the session's trained MLPs (tests/hull_helpers.py) --------------


def test_tunnel_equals_the_command(mlp_optima, tmp_path):
    keys = dict(n_segments=3, n_dense=4, chunk_points=4)
    cfg = TunnelConfig(model=mlp_model(), dataset=digits_dataset(), optima=mlp_optima[:2],
                       hyperplane=HyperplaneConfig(lr=0.01, steps=15, batch_size=None),
                       engine=VMAP, device="cpu", out_dir=str(tmp_path), **keys)  # fmt: skip
    command = run_tunnel(cfg)
    net_a, net_b = _trained(mlp_optima[0]), _trained(mlp_optima[1])
    before = {k: v.clone() for k, v in net_a.state_dict().items()}
    api = lh.tunnel([net_a, net_b.state_dict()], _digits(), lr=0.01, steps=15,
                    hyperplane_batch_size=None, strategy="vmap", **keys)  # fmt: skip
    _same_metrics(command.metrics, api.metrics)
    np.testing.assert_array_equal(api.deviations, command.deviations)
    np.testing.assert_array_equal(api.alignment, command.alignment)
    np.testing.assert_array_equal(api.t, command.t)
    assert api.optima == ["optima[0]", "optima[1]"] and api.keys == command.keys
    assert all(torch.equal(before[k], v) for k, v in net_a.state_dict().items())


def test_connector_equals_the_command(mlp_optima, tmp_path):
    keys = dict(resolution=2, dense=2, splits=["train"])
    cfg = ConnectorConfig(model=mlp_model(), dataset=digits_dataset(), optima=mlp_optima,
                          hyperplane=HyperplaneConfig(lr=0.01, steps=15, batch_size=None),
                          engine=VMAP, device="cpu", out_dir=str(tmp_path), **keys)  # fmt: skip
    command = run_connector(cfg)
    nets = [_trained(p) for p in mlp_optima]
    api = lh.connector(nets, _digits(), lr=0.01, steps=15, hyperplane_batch_size=None,
                       strategy="vmap", **keys)  # fmt: skip
    np.testing.assert_array_equal(api.grid, command.grid)
    _same_metrics(command.metrics, api.metrics)
    _same_metrics(command.dense_metrics, api.dense_metrics)
    np.testing.assert_array_equal(api.opt_losses, command.opt_losses)


def test_tunnel_width_equals_the_command(mlp_optima, tmp_path):
    keys = dict(n_directions=3, r_max=12.0, n_distances=7, threshold=0.5, seed=2)
    cfg = WidthConfig(model=mlp_model(), dataset=digits_dataset(), optima=mlp_optima[:2],
                      engine=VMAP, device="cpu", out_dir=str(tmp_path), **keys)  # fmt: skip
    command = run_width(cfg)
    nets = [_trained(p) for p in mlp_optima[:2]]
    api = lh.tunnel_width(nets, _digits(), labels=["a", "b"], strategy="vmap", **keys)
    for name in ("losses", "accs", "levels", "widths", "crossed", "norms", "angles"):
        np.testing.assert_array_equal(getattr(api, name), getattr(command, name), err_msg=name)
    assert api.labels == ["a", "b"] and api.widths.shape == (2, 3)


def test_tunnel_of_nets_defined_here_ends_at_both_and_moves_normal_to_the_path():
    a, b, data = tiny_net(1), tiny_net(2), _tiny_data()
    a.train()
    result = lh.tunnel([a, b], data, n_segments=2, n_dense=3, steps=20, lr=0.05,
                       hyperplane_batch_size=None)  # fmt: skip
    assert a.training  # the caller's mode comes back: only a copy evaluated
    inputs, labels = data["test"]
    a.eval(), b.eval()
    with torch.no_grad():
        ends = [nn.functional.cross_entropy(net(inputs).double(), labels).item() for net in (a, b)]
    loss = result.metrics["test"]["tunnel"][0]
    assert [loss[0], loss[-1]] == pytest.approx(ends, rel=1e-6)
    theta = [torch.cat([p.detach().reshape(-1) for p in net.parameters()]) for net in (a, b)]
    delta = torch.from_numpy(result.deviations[0]).double()  # the midpoint's deviation
    assert float(delta.norm()) > 1e-3  # it moved ...
    normal = (theta[1] - theta[0]).double()
    assert abs(float(delta @ normal)) < 1e-6 * float(delta.norm() * normal.norm())  # ... ⟂ path


def test_tunnel_width_of_a_net_defined_here_equals_the_plain_reference():
    net, data = tiny_net(3), _tiny_data()
    result = lh.tunnel_width([net], data, n_directions=4, r_max=6.0, n_distances=13, seed=5)
    inputs, labels = data["train"]
    state = {k: v.detach() for k, v in net.state_dict().items()}
    loss, theta = flat_loss(net, state, [k for k, _ in net.named_parameters()], inputs, labels)
    widths, crossed, losses = ray_widths(loss, theta, 4, result.distances, 1.0, seed=5)
    np.testing.assert_allclose(result.losses[0], losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.widths[0], widths, rtol=1e-4)
    np.testing.assert_array_equal(result.crossed[0], crossed)
    assert crossed.any()  # the level is reached on some ray: the width is measured


# --- subspace_training and wedge ---------------------------------------------------------------


def test_subspace_training_equals_the_command():
    model_cfg = ModelConfig(name="mlp", kwargs={"hidden": [4]})
    dataset = DatasetConfig(max_samples=120)
    keys = dict(dims=[2, 6], steps=15, lr=0.1)
    command = run_subspace(IntrinsicDimConfig(model=model_cfg, dataset=dataset, device="cpu",
                                              plot=False, **keys))  # fmt: skip
    model = build_model(model_cfg, (1, 8, 8), 10)
    api = lh.subspace_training(model, _pairs(load_dataset(dataset)), **keys)
    assert [r["d"] for r in api] == [2, 6, 64 * 4 + 4 + 4 * 10 + 10]
    for ours, theirs in zip(api, command):
        for key in ("d", "full", "final_loss", "train_acc", "test_acc", "success"):
            assert ours[key] == theirs[key], key


def test_subspace_training_of_a_loss_model_defined_here_succeeds_only_in_the_whole_space():
    class Bowl(nn.Module):
        """loss ½|w|² (per sample, data ignored): a random d-plane through θ0 misses its only
        minimum w = 0 unless d = D (θ0 is drawn from another seed than the plane)."""

        loss_output = True

        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, generator=torch.Generator().manual_seed(9)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.5 * (self.w**2).sum().expand(x.shape[0])  # (B,)

    x = torch.zeros(8, 1)
    rows = lh.subspace_training(Bowl(), (x, torch.zeros(8).long()), dims=[2, 6], steps=300,
                                baseline=False)  # fmt: skip
    assert [(r["d"], r["success"]) for r in rows] == [(2, 0), (6, 1)]
    # in the plane: ½|(I − Π)θ0|², Π the projection onto the plane's directions (seed 0)
    theta0 = Bowl().w.detach().double()
    plane = DenseProjection(6, 2, torch.Generator().manual_seed(0), theta0).basis  # (2, 6)
    residual = theta0 - plane.T @ torch.linalg.solve(plane @ plane.T, plane @ theta0)
    assert rows[0]["final_loss"] == pytest.approx(0.5 * float(residual @ residual), rel=1e-4)
    assert rows[0]["final_loss"] > 0.1 and np.isnan(rows[0]["test_acc"])


def test_wedge_equals_the_command():
    keys = dict(dim=10, n=7, dims=[1, 3, 5], trials=1, steps=60, n_segments=3, n_dense=9)
    hyperplane = WedgeHyperplaneConfig(lr=0.02, steps=40)
    command = run_wedge(WedgeConfig(hyperplane=hyperplane, plot=False, **keys))
    api = lh.wedge(hyperplane_lr=0.02, hyperplane_steps=40, **keys)
    for name in ("dims", "final_loss", "success", "t", "linear_loss", "tunnel_loss", "alignment"):
        np.testing.assert_array_equal(getattr(api, name), getattr(command, name), err_msg=name)
    assert api.tunnel_loss.max() < api.linear_loss.max()


# --- bad arguments, help -----------------------------------------------------------------------


def _bad(name: str):
    a, b, data = tiny_net(1), tiny_net(2), _tiny_data(16)
    ds = lh.surface(a, data, x=(-1, 1, 2), y=None, progress=False)
    other = nn.Linear(3, 2)
    return {
        "tunnel one": lambda: lh.tunnel([a], data),
        "tunnel dict first": lambda: lh.tunnel([a.state_dict(), b], data),
        "tunnel architectures": lambda: lh.tunnel([a, other], data),
        "tunnel lr": lambda: lh.tunnel([a, b], data, lr=-1),
        "tunnel batch": lambda: lh.tunnel([a, b], data, hyperplane_batch_size=0),
        "tunnel strategy": lambda: lh.tunnel([a, b], data, strategy="fast"),
        "tunnel segments": lambda: lh.tunnel([a, b], data, n_segments=1),
        "tunnel splits": lambda: lh.tunnel([a, b], data, splits=["val"]),
        "tunnel short_dirs": lambda: lh.tunnel([a, b], data, short_dirs={"n": 3}),
        "tunnel no train": lambda: lh.tunnel([a, b], {"test": data["test"]}),
        "connector one": lambda: lh.connector([a], data),
        "connector resolution": lambda: lh.connector([a, b], data, resolution=1),
        "width directions": lambda: lh.tunnel_width([a], data, directions="pca"),
        "width r_max": lambda: lh.tunnel_width([a], data, r_max=0),
        "width split": lambda: lh.tunnel_width([a], data, split="val"),
        "subspace dims": lambda: lh.subspace_training(a, data, dims=[]),
        "subspace too big": lambda: lh.subspace_training(a, data, dims=[1000]),
        "subspace lr": lambda: lh.subspace_training(a, data, lr=0),
        "wedge n": lambda: lh.wedge(dim=10, n=10),
        "wedge hyperplane_lr": lambda: lh.wedge(hyperplane_lr=-1),
        "map surface": lambda: lh.hessian_map(a, data, 3),
        "map steps": lambda: lh.hessian_map(a, data, ds, lanczos_steps=1),
        "map split": lambda: lh.hessian_map(a, data, ds, split="val"),
    }[name]


@pytest.mark.parametrize(
    "case, message",
    [
        ("tunnel one", "holds 1 nets; a tunnel joins exactly two"),
        ("tunnel dict first", "optima\\[0\\] is a \\w+; it must be an nn.Module"),
        ("tunnel architectures", "optima\\[1\\] is not of optima\\[0\\]'s architecture"),
        ("tunnel lr", "^lr=-1 must be positive"),
        ("tunnel batch", "^hyperplane_batch_size=0 must be at least 1"),
        ("tunnel strategy", "^strategy='fast' is not known"),
        ("tunnel segments", "^n_segments=1 must be at least 2"),
        ("tunnel splits", "^splits=\\['val'\\]"),
        ("tunnel short_dirs", "^short_dirs= has unknown keys \\['n'\\]"),
        ("tunnel no train", "data has no 'train' split"),
        ("connector one", "an m-connector needs m ≥ 2"),
        ("connector resolution", "^resolution=1 must be at least 2"),
        ("width directions", "^directions='pca' is not known"),
        ("width r_max", "^r_max=0 must be positive"),
        ("width split", "^split=\\['val'\\]"),
        ("subspace dims", "^dims is empty"),
        ("subspace too big", "^dims \\[1000\\] exceed the 26 trained parameters of the model"),
        ("subspace lr", "^lr=0 must be positive"),
        ("wedge n", "^n=10 must lie in"),
        ("wedge hyperplane_lr", "^hyperplane_lr=-1 must be positive"),
        ("map surface", "^surface= is a int"),
        ("map steps", "^lanczos_steps=1 must be at least 2"),
        ("map split", "^split='val': \\['val'\\] not in the data"),
    ],
)
def test_bad_arguments_are_one_clear_value_error(case, message):
    with pytest.raises(ValueError, match=message) as err:
        _bad(case)()
    assert isinstance(err.value, lh.UserError) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_face_lists_each_function_and_its_help_documents_every_argument(name):
    function = getattr(lh, name)
    assert name in dir(lh) and callable(function)
    doc = inspect.getdoc(function)
    assert "Returns:" in doc and "{hull_args}" not in doc
    for parameter in inspect.signature(function).parameters:
        assert f"\n{parameter}: " in "\n" + doc.replace("    ", ""), parameter


def test_a_face_name_stays_the_function_after_its_submodule_is_imported():
    import importlib
    import sys

    importlib.import_module("landscape_hpc.hessian")  # Lanczos: binds nothing over lh.hessian
    importlib.import_module("landscape_hpc.surface")  # the command's `python -m` entry
    assert "landscape_hpc.hessian" in sys.modules and "landscape_hpc.surface" in sys.modules
    assert lh.hessian.__module__ == "landscape_hpc.api.curvature"
    assert lh.surface.__module__ == "landscape_hpc.api.surface"
    assert callable(sys.modules["landscape_hpc.hessian"].lanczos_run)
