"""Directions: filter normalisation, ignore=biasbn, seeds, dir_type, model differences."""

import numpy as np
import pytest
import torch

from landscape_hpc import directions
from landscape_hpc.config import ModelConfig
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model


@pytest.fixture(scope="module")
def bn_net():
    return build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)


def _origin(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_filter_norm_matches_weight_filter_norms(bn_net):
    origin = _origin(bn_net)
    keys = directions.direction_keys(bn_net, "weights")
    (d,) = directions.random_basis(origin, keys, 1, seed=0, norm="filter", ignore="biasbn")
    checked = 0
    for k, v in d.items():
        assert v.dim() > 1
        for i in range(v.shape[0]):
            assert torch.allclose(v[i].norm(), origin[k][i].norm(), rtol=1e-5)
            checked += 1
    assert checked > 100


def test_layer_and_weight_norms(bn_net):
    origin = _origin(bn_net)
    keys = directions.direction_keys(bn_net, "weights")
    (d,) = directions.random_basis(origin, keys, 1, seed=0, norm="layer", ignore="biasbn")
    for k, v in d.items():
        assert torch.allclose(v.norm(), origin[k].norm(), rtol=1e-5)
    raw = directions.random_direction(origin, keys, torch.Generator().manual_seed(0))
    (w,) = directions.random_basis(origin, keys, 1, seed=0, norm="weight", ignore="biasbn")
    k = next(iter(w))
    assert torch.allclose(w[k], raw[k] * origin[k])


def test_ignore_biasbn_zeroes_1d_tensors_and_none_keeps_them(bn_net):
    origin = _origin(bn_net)
    keys = directions.direction_keys(bn_net, "weights")
    one_d = [k for k in keys if origin[k].dim() <= 1]
    assert one_d, "the BN net must have 1-D parameters"
    (d,) = directions.random_basis(origin, keys, 1, 0, "filter", "biasbn")
    assert not any(k in d for k in one_d)
    (d,) = directions.random_basis(origin, keys, 1, 0, "filter", "none")
    # a 1-D tensor under filter normalisation follows the weights themselves (loss-landscape)
    assert all(torch.equal(d[k], origin[k]) for k in one_d)
    (d,) = directions.random_basis(origin, keys, 1, 0, "none", "none")
    assert all(k in d and d[k].abs().sum() > 0 for k in one_d)


def test_seed_determinism_and_x_differs_from_y(bn_net):
    origin = _origin(bn_net)
    keys = directions.direction_keys(bn_net, "weights")
    a = directions.random_basis(origin, keys, 2, 7, "filter", "biasbn")
    b = directions.random_basis(origin, keys, 2, 7, "filter", "biasbn")
    c = directions.random_basis(origin, keys, 2, 8, "filter", "biasbn")
    k = keys[0]
    assert torch.equal(a[0][k], b[0][k]) and torch.equal(a[1][k], b[1][k])
    assert not torch.equal(a[0][k], c[0][k])
    assert not torch.equal(a[0][k], a[1][k])
    same = directions.random_basis(origin, keys, 2, 7, "filter", "biasbn", same_dir=True)
    assert torch.equal(same[0][k], same[1][k])
    one = directions.random_basis(origin, keys, 1, 7, "filter", "biasbn")
    assert torch.equal(one[0][k], a[0][k])  # x of a 1D surface = x of the 2D one


def test_states_covers_bn_buffers_weights_does_not(bn_net):
    w = directions.direction_keys(bn_net, "weights")
    s = directions.direction_keys(bn_net, "states")
    assert not any("running" in k for k in w)
    assert any(k.endswith("running_var") for k in s)
    assert not any(k.endswith("num_batches_tracked") for k in s)


def test_model_difference_includes_buffers_and_rejects_other_architectures(bn_net):
    origin = _origin(bn_net)
    other = build_model(ModelConfig(name="mpo_cnn_bn", init_seed=1), (1, 8, 8), 10)
    target = _origin(other)
    diff = directions.model_difference(target, origin, "b.pt")
    k = next(k for k in diff if k.endswith("running_mean"))
    assert torch.equal(origin[k] + diff[k], target[k])
    small = build_model(ModelConfig(name="mpo_cnn"), (1, 8, 8), 10).state_dict()
    with pytest.raises(UserError, match="architecture"):
        directions.model_difference(small, origin, "c.pt")


@pytest.mark.parametrize(
    ("fn", "args", "key"),
    [
        (directions.normalize_direction, ({}, {}, "fro", "biasbn"), "directions.norm"),
        (directions.normalize_direction, ({}, {}, "filter", "bias"), "directions.ignore"),
    ],
)
def test_unknown_names_list_the_valid_ones(fn, args, key):
    with pytest.raises(UserError, match=key) as err:
        fn(*args)
    assert "valid values" in str(err.value)


def _loss_landscape_files(tmp_path, nx, ny, dir_file_as):
    """A direction file and a surface file in loss-landscape's own layout: xdirection/0..N-1 over
    the model's parameters (biases zero, ignore=biasbn), and a surface of (nx, ny) arrays with
    -1 where not computed and `dir_file` naming the direction file relative to the surface."""
    import h5py

    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    g = torch.Generator().manual_seed(3)
    (tmp_path / "dirs").mkdir(exist_ok=True)
    (tmp_path / "surf").mkdir(exist_ok=True)
    direction_file = tmp_path / "dirs" / "model.h5_weights_xignore=biasbn_xnorm=filter.h5"
    dirs = {}
    with h5py.File(direction_file, "w") as h:
        for i, (name, p) in enumerate(model.named_parameters()):
            for axis in "xy":
                d = torch.randn(p.shape, generator=g) if p.dim() > 1 else torch.zeros(p.shape)
                h[f"{axis}direction/{i}"] = d.numpy()
                dirs[axis, name] = d
    surface = tmp_path / "surf" / f"ll_{nx}x{ny}.h5"
    with h5py.File(surface, "w") as f:
        f["xcoordinates"] = np.linspace(-1, 1, nx)
        f["ycoordinates"] = np.linspace(-1, 1, ny)
        loss = np.full((nx, ny), -1.0)
        loss.ravel()[:5] = np.arange(5) + 1.0
        f["train_loss"], f["train_acc"] = loss, np.where(loss < 0, -1.0, 50.0)
        relative = f"../dirs/{direction_file.name}"
        if dir_file_as == "dataset":
            f["dir_file"] = relative  # what loss-landscape's plot_surface.py writes
        else:
            f.attrs["dir_file"] = relative
    return surface, dirs


@pytest.mark.parametrize("nx, ny, dir_file_as", [(7, 4, "dataset"), (7, 7, "attribute")])
def test_load_follows_a_loss_landscape_surface_file_to_its_dir_file(
    tmp_path, caplog, nx, ny, dir_file_as
):
    import h5py

    from landscape_hpc.cli import compose_config
    from landscape_hpc.commands.surface import compute_surface
    from landscape_hpc.files.surface_read import read_surface

    surface, dirs = _loss_landscape_files(tmp_path, nx, ny, dir_file_as)
    s = read_surface(surface)  # the -1 sentinel reads as not computed
    assert s.n_done == 5 and s.size == nx * ny
    overrides = [
        f"out={tmp_path / 'ours.h5'}",
        "plot=false",
        "model=mlp",
        "dataset.max_samples=30",
        f"directions.load={surface}",
        "grid.x=[-1,1,3]",
        "grid.y=[-1,1,2]",
    ]
    with caplog.at_level("INFO", logger="landscape_hpc.directions.build"):
        out = compute_surface(compose_config("surface", overrides))
    assert "its directions are read from its dir_file" in caplog.text
    with h5py.File(out, "r") as f:
        for (axis, name), d in dirs.items():
            if d.abs().sum() > 0:
                np.testing.assert_array_equal(f[f"directions/{axis}/{name}"][()], d.numpy())


def test_a_missing_dir_file_is_refused_with_the_fix(tmp_path):
    from landscape_hpc.files.directions import linked_direction_file

    surface, _ = _loss_landscape_files(tmp_path, 7, 4, "dataset")
    for p in (tmp_path / "dirs").iterdir():
        p.unlink()
    with pytest.raises(UserError, match="pass directions.load=<that direction file>"):
        linked_direction_file(surface)
