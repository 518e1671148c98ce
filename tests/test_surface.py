"""The surface command end to end: file contract, orientation, resume, refusals, bad input."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import DatasetConfig, EngineConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.evaluate import evaluate_points_loop
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.files.directions import read_directions
from landscape_hpc.models import build_model

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
FAST = ["model=mlp", "dataset.max_samples=60", "grid.x=[-1,1,4]", "grid.y=[-0.5,0.5,3]"]


def make_cfg(out: Path, *overrides: str):
    return compose_config("surface", [f"out={out}", "plot=false", *overrides])


def run(out: Path, *overrides: str) -> Path:
    return compute_surface(make_cfg(out, *overrides))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), **(env_extra or {})}
    return subprocess.run(
        [PYTHON, "-m", "landscape_hpc.surface", f"hydra.run.dir={cwd}/run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_file_layout_orientation_and_values_match_the_plain_loop(tmp_path):
    out = run(tmp_path / "s.h5", *FAST)
    with h5py.File(out, "r") as f:
        x, y = f["xcoordinates"][()], f["ycoordinates"][()]
        assert x.tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1]) and len(y) == 3
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert f[name].shape == (3, 4) and f[name].dtype == np.float64
        assert f["done"].dtype == np.uint8 and f["done"][()].all()
        basis = [
            {k: torch.from_numpy(f[f"directions/{a}/{k}"][()]) for k in f[f"directions/{a}"]}
            for a in "xy"
        ]
        assert all(v.dim() == 2 for v in basis[0].values())  # ignore=biasbn: weights only
        attrs = dict(f.attrs)
        test_loss, train_acc = f["test_loss"][()], f["train_acc"][()]
    assert attrs["dataset"] == "digits" and attrs["n_train"] == 60 and attrs["n_test"] == 60
    assert attrs["io_driver"] in ("mpio", "gather") and "grid:" in attrs["config"]
    assert attrs["version"] and attrs["created"]

    splits = load_dataset(DatasetConfig(max_samples=60))
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = Subspace({k: v.clone() for k, v in model.state_dict().items()}, basis)
    # row = y index, column = x index
    coords = torch.tensor([[x[ix], y[iy]] for iy in range(3) for ix in range(4)])
    data = {"test": tuple(splits["test"]), "train": tuple(splits["train"])}
    ref = evaluate_points_loop(model, sub, coords, data, EngineConfig())
    np.testing.assert_allclose(test_loss.reshape(-1), ref["test"].loss, rtol=1e-5)
    np.testing.assert_allclose(train_acc.reshape(-1), ref["train"].acc, atol=1e-9)
    assert not np.allclose(test_loss, test_loss.T.reshape(3, 4))  # a tilted surface, not flat


def test_resume_computes_only_pending_points_and_keeps_earlier_values(tmp_path):
    out = run(tmp_path / "s.h5", *FAST)
    with h5py.File(out, "r+") as f:
        full = f["test_loss"][()].copy()
        done = f["done"][()]
        done[1:, :] = 0  # rows 1.. pending, as after a kill
        f["done"][...] = done
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            values = f[name][()]
            values[1:, :] = np.nan
            values[0, :] = 1234.5  # marks values that must not be recomputed
            f[name][...] = values
    run(tmp_path / "s.h5", *FAST)
    with h5py.File(out, "r") as f:
        assert f["done"][()].all()
        assert (f["test_loss"][0] == 1234.5).all()
        np.testing.assert_allclose(f["test_loss"][1:], full[1:], rtol=1e-12)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("grid.x=[-2,2,4]", "grid_x"),
        ("directions.seed=3", "directions_sha256"),
        ("model=mpo_cnn", "model"),
        ("dataset.max_samples=50", "n_test"),
        ("engine.loss=mse", "loss"),
        ("engine.bn=recompute", "bn"),
        ("engine.precision=bf16", "precision"),
        ("splits=[test]", "splits"),
        ("model.init_seed=4", "init_seed"),
        ("+model.kwargs.hidden=[16]", "model_kwargs"),
        ("dataset.seed=2", "dataset_seed"),
    ],
)
def test_file_of_another_job_is_refused_and_left_as_it_was(tmp_path, change, named):
    out = run(tmp_path / "s.h5", *FAST)
    before = sha(out)
    with pytest.raises(UserError, match="overwrite=true") as err:
        run(tmp_path / "s.h5", *FAST, change)
    assert named in str(err.value)
    assert sha(out) == before


def test_a_surface_of_a_changed_checkpoint_is_refused(tmp_path):
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    ck = tmp_path / "ck.pt"
    torch.save(model.state_dict(), ck)
    out = run(tmp_path / "s.h5", *FAST, f"model.checkpoint={ck}")
    before = sha(out)
    torch.save({k: v + 1 for k, v in model.state_dict().items()}, ck)  # retrained in place
    with pytest.raises(UserError, match="checkpoint_sha256") as err:
        run(tmp_path / "s.h5", *FAST, f"model.checkpoint={ck}")
    assert "overwrite=true" in str(err.value) and sha(out) == before


def test_a_bf16_surface_records_its_precision_and_error_and_resumes_only_at_bf16(tmp_path, caplog):
    fp32 = run(tmp_path / "fp32.h5", *FAST)
    with caplog.at_level("INFO"):
        out = run(tmp_path / "s.h5", *FAST, "engine.precision=bf16")
    assert "rank 0: engine.precision=bf16: at its first point the loss is" in caplog.text
    with h5py.File(out, "r") as f, h5py.File(fp32, "r") as g:
        assert f.attrs["precision"] == "bf16" and g.attrs["precision"] == "fp32"
        got, want = f["test_loss"][()], g["test_loss"][()]
    # mlp: 3 linears, bound 2·2^-8·3 relative (tests/test_precision.py's bf16_bound)
    assert 0 < np.max(np.abs(got - want) / want) < 2 * 2.0**-8 * 3
    before = sha(out)
    with pytest.raises(UserError, match="precision: file has 'bf16', this run None"):
        run(tmp_path / "s.h5", *FAST)
    assert sha(out) == before
    # a file made before the key (no precision in its fingerprint) resumes at fp32
    with h5py.File(fp32, "r+") as f:
        stored = json.loads(f.attrs["fingerprint"])
        del stored["precision"]
        f.attrs["fingerprint"] = json.dumps(stored, sort_keys=True)
        f["done"][0, 0] = 0
        f["test_loss"][0, 0] = np.nan
    with h5py.File(run(tmp_path / "fp32.h5", *FAST), "r") as f:
        assert f["done"][()].all() and f["test_loss"][0, 0] == pytest.approx(want[0, 0], rel=1e-12)


def test_overwrite_replaces_a_file_of_another_job(tmp_path):
    run(tmp_path / "s.h5", *FAST)
    out = run(tmp_path / "s.h5", *FAST, "grid.x=[-2,2,5]", "overwrite=true")
    with h5py.File(out, "r") as f:
        assert f["test_loss"].shape == (3, 5) and f["done"][()].all()


def test_one_dimensional_surface(tmp_path):
    out = run(
        tmp_path / "s.h5", "model=mlp", "dataset.max_samples=40", "grid.x=[-1,1,7]", "grid.y=null"
    )
    with h5py.File(out, "r") as f:
        assert "ycoordinates" not in f and "directions/y" not in f
        assert f["train_loss"].shape == (7,) and f["done"][()].all()
        assert np.isfinite(f["train_loss"][()]).all()


def _save(model, path):
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def test_model_difference_point_one_is_model2_exactly_bn_buffers_included(tmp_path):
    a = build_model(ModelConfig(name="mpo_cnn_bn", init_seed=0), (1, 8, 8), 10)
    b = build_model(ModelConfig(name="mpo_cnn_bn", init_seed=1), (1, 8, 8), 10)
    with torch.no_grad():  # distinct BN statistics, so the buffers are really interpolated
        for m in b.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    pa, pb = _save(a, tmp_path / "a.pt"), _save(b, tmp_path / "b.pt")
    out = run(
        tmp_path / "s.h5",
        "model=mpo_cnn_bn",
        f"model.checkpoint={pa}",
        "directions.kind=models",
        f"directions.model2={pb}",
        "grid.x=[0,1,2]",
        "grid.y=null",
        "dataset.max_samples=40",
    )
    origin = {k: v.clone() for k, v in a.state_dict().items()}
    with h5py.File(out, "r") as f:
        keys = list(f["directions/x"])
        assert any(k.endswith("running_var") for k in keys)
        loss_at_1 = f["test_loss"][1]
    from landscape_hpc.directions import model_difference

    sub = Subspace(origin, [model_difference(b.state_dict(), origin, "b")])
    at_one = sub.point(torch.tensor([1.0], dtype=torch.float64))
    for k, v in b.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(at_one[k], v), k
    splits = load_dataset(DatasetConfig(max_samples=40))
    with torch.no_grad():
        logits = b.eval()(splits["test"].inputs)
        ref = torch.nn.functional.cross_entropy(logits, splits["test"].labels).item()
    assert loss_at_1 == pytest.approx(ref, rel=1e-5)


def test_states_directions_with_batchnorm(tmp_path):
    out = run(
        tmp_path / "s.h5",
        "model=mpo_cnn_bn",
        "directions.dir_type=states",
        "directions.ignore=none",
        "dataset.max_samples=30",
        "grid.x=[-2,2,5]",
        "grid.y=null",
    )
    with h5py.File(out, "r") as f:
        assert any(k.endswith("running_var") for k in f["directions/x"])
        assert f["done"][()].all()
        got = {s: (f[f"{s}_loss"][()], f[f"{s}_acc"][()]) for s in ("train", "test")}
    # the plain loop on the file's own directions gives the same values
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    origin = {k: v.clone() for k, v in model.state_dict().items()}
    (x_dir,) = read_directions(out, origin, [k for k, _ in model.named_parameters()])
    subspace = Subspace(origin, [x_dir])
    coords = torch.linspace(-2, 2, 5, dtype=torch.float64)[:, None]
    splits = load_dataset(DatasetConfig(name="digits", max_samples=30))
    data = {s: (splits[s].inputs, splits[s].labels) for s in ("train", "test")}
    ref = evaluate_points_loop(model, subspace, coords, data, EngineConfig())
    for s in data:
        np.testing.assert_allclose(got[s][0], ref[s].loss, rtol=1e-5)
        np.testing.assert_allclose(got[s][1], ref[s].acc, rtol=1e-5)
    # the grid reaches running variances the direction would make negative: clamped at 0
    var_keys = [k for k in x_dir if k.endswith("running_var")]
    raw = [origin[k] - 2 * x_dir[k] for k in var_keys] + [
        origin[k] + 2 * x_dir[k] for k in var_keys
    ]
    assert any(bool((v < 0).any()) for v in raw)
    for c in (-2.0, 2.0):
        state = subspace.point(torch.tensor([c], dtype=torch.float64))
        assert all(bool((state[k] >= 0).all()) for k in var_keys)
    assert np.isfinite(got["train"][0]).all()


def test_directions_load_reuses_ours_and_loss_landscape_layout(tmp_path):
    first = run(tmp_path / "a.h5", *FAST, "directions.seed=5")
    again = run(tmp_path / "b.h5", *FAST, f"directions.load={first}")
    with h5py.File(first, "r") as f, h5py.File(again, "r") as g:
        np.testing.assert_array_equal(f["test_loss"][()], g["test_loss"][()])
        keys = list(f["directions/x"])
        dx = {k: f[f"directions/x/{k}"][()] for k in keys}
        dy = {k: f[f"directions/y/{k}"][()] for k in keys}
        ref = f["test_loss"][()]
    # loss-landscape: xdirection/0..N-1 over the model's parameters in order, biases zero
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    legacy = tmp_path / "legacy_dirs.h5"
    with h5py.File(legacy, "w") as h:
        for i, (name, p) in enumerate(model.named_parameters()):
            h[f"xdirection/{i}"] = dx.get(name, np.zeros(tuple(p.shape), np.float32))
            h[f"ydirection/{i}"] = dy.get(name, np.zeros(tuple(p.shape), np.float32))
    out = run(tmp_path / "c.h5", *FAST, f"directions.load={legacy}")
    with h5py.File(out, "r") as f:
        np.testing.assert_allclose(f["test_loss"][()], ref, rtol=1e-6)


def test_a_plane_through_three_nets_hits_each_at_its_corner(tmp_path):
    """directions.kind=models with model2 and model3: x = model2 − model, y = model3 − model, so
    the grid points (0, 0), (1, 0), (0, 1) are the three nets themselves."""
    nets = [build_model(ModelConfig(name="mlp", init_seed=s), (1, 8, 8), 10) for s in (0, 1, 2)]
    paths = [_save(n, tmp_path / f"{i}.pt") for i, n in enumerate(nets)]
    out = run(
        tmp_path / "s.h5",
        "model=mlp",
        f"model.checkpoint={paths[0]}",
        "directions.kind=models",
        f"directions.model2={paths[1]}",
        f"directions.model3={paths[2]}",
        "grid.x=[0,1,2]",
        "grid.y=[0,1,2]",
        "dataset.max_samples=40",
    )
    splits = load_dataset(DatasetConfig(name="digits", max_samples=40))
    x, y = splits["test"].inputs, splits["test"].labels
    with h5py.File(out, "r") as f:
        loss = f["test_loss"][()]  # (y, x)
    for (row, col), net in zip(((0, 0), (0, 1), (1, 0)), nets):
        with torch.no_grad():
            want = float(torch.nn.functional.cross_entropy(net.eval()(x), y).double())
        assert loss[row, col] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (None, "does not exist"),
        (lambda p: p.write_text("not hdf5"), "is not an HDF5 file"),
        (lambda p: h5py.File(p, "w").close(), "holds no directions"),
        (lambda p: _mlp_directions(p, (5, 64)), "shape mismatches"),
        (lambda p: _mlp_directions(p, (32, 64), positional=3), "match neither"),
    ],
)
def test_directions_load_refuses_what_it_cannot_use(tmp_path, make, words):
    path = tmp_path / "dirs.h5"
    if make:
        make(path)
    with pytest.raises(UserError, match=words):
        run(tmp_path / "s.h5", *FAST, f"directions.load={path}")
    assert not (tmp_path / "s.h5").exists()  # refused before a surface file was made


def _mlp_directions(path, shape, positional: int = 0):
    with h5py.File(path, "w") as f:
        if positional:  # loss-landscape's layout with too few tensors for the model
            for i in range(positional):
                f[f"xdirection/{i}"] = np.zeros(shape, np.float32)
        else:
            f["directions/x/layers.1.weight"] = np.zeros(shape, np.float32)


def test_custom_model_and_dataset_through_the_command(tmp_path):
    r = cli(
        "model=custom",
        "model.target=custom_objects.tiny_net",
        "+model.kwargs.width=3",
        "dataset=custom",
        "dataset.target=custom_objects.image_splits",
        "grid.x=[-1,1,3]",
        "grid.y=[-1,1,3]",
        f"out={tmp_path}/c.h5",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f["done"][()].all() and f["train_loss"].shape == (3, 3)
        assert f["directions/x/0.weight"].shape == (3, 1, 3, 3)  # width=3 reached the builder
    assert list(tmp_path.glob("*.png"))  # contour plots next to the file


def _refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    for w in words:
        assert w in r.stderr + r.stdout, (w, r.stderr[-1500:])


BAD_INPUTS = [
    (["model.checkpoint=/nonexistent/ck.pt"], ["model.checkpoint", "/nonexistent/ck.pt"]),
    (["grid.x=[-1,1,0]"], ["grid.x", "num"]),
    (["grid.x=[1,-1,5]"], ["grid.x", "larger than max"]),
    (["grid.x=[a,1,5]"], ["grid.x"]),
    (["model=resnet999"], ["resnet999", "resnet56"]),
    (["dataset=imagenet22k"], ["imagenet22k", "digits"]),
    (["directions.norm=fro"], ["directions.norm", "filter"]),
    (["directions.ignore=bias"], ["directions.ignore", "biasbn"]),
    (["engine.precision=fp16"], ["engine.precision", "bf16"]),
    (["dataset=cifar10", "dataset.root=/nonexistent"], ["dataset.download=true"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_INPUTS)
def test_bad_input_gives_a_message_and_no_traceback(tmp_path, args, words):
    _refused(cli(*FAST, *args, f"out={tmp_path}/s.h5", cwd=tmp_path), *words)
    assert not (tmp_path / "s.h5").exists()


def test_bad_checkpoints_are_refused_with_the_fix(tmp_path):
    other = _save(build_model(ModelConfig(name="mpo_cnn"), (1, 8, 8), 10), tmp_path / "cnn.pt")
    r = cli(*FAST, f"model.checkpoint={other}", f"out={tmp_path}/s.h5", cwd=tmp_path)
    _refused(r, "missing", "unexpected", "model=")


def test_pickled_checkpoint_needs_trust(tmp_path):
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    torch.save({"state_dict": model.state_dict(), "note": Path("x")}, tmp_path / "p.pt")
    r = cli(*FAST, f"model.checkpoint={tmp_path}/p.pt", f"out={tmp_path}/s.h5", cwd=tmp_path)
    _refused(r, "model.trust_checkpoint=true")
    r = cli(
        *FAST,
        f"model.checkpoint={tmp_path}/p.pt",
        "model.trust_checkpoint=true",
        f"out={tmp_path}/s.h5",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-1500:]


def test_other_job_refused_by_the_command_and_unwritable_folder(tmp_path):
    assert cli(*FAST, f"out={tmp_path}/s.h5", cwd=tmp_path).returncode == 0
    before = sha(tmp_path / "s.h5")
    _refused(
        cli(*FAST, "grid.y=[-1,1,5]", f"out={tmp_path}/s.h5", cwd=tmp_path),
        "overwrite=true",
        "grid_y",
    )
    assert sha(tmp_path / "s.h5") == before
    (tmp_path / "afile").write_text("not a folder")
    _refused(cli(*FAST, f"out={tmp_path}/afile/s.h5", cwd=tmp_path), "out=")


def test_mse_loss_and_recomputed_bn_through_the_command_equal_the_plain_loop(tmp_path):
    out = run(
        tmp_path / "s.h5",
        "model=mpo_cnn_bn",
        "engine.loss=mse",
        "engine.bn=recompute",
        "dataset.max_samples=40",
        "grid.x=[-1,1,3]",
        "grid.y=[-1,1,2]",
    )
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    origin = {k: v.clone() for k, v in model.state_dict().items()}
    basis = read_directions(out, origin, [k for k, _ in model.named_parameters()])
    splits = load_dataset(DatasetConfig(name="digits", max_samples=40))
    data = {s: (splits[s].inputs, splits[s].labels) for s in ("train", "test")}
    xx, yy = np.meshgrid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 2))  # row-major over (y, x)
    coords = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1))
    options = EngineConfig(loss="mse", bn="recompute")
    ref = evaluate_points_loop(
        model, Subspace(origin, basis), coords, data, options, splits["train"].inputs
    )
    with h5py.File(out, "r") as f:
        for s in data:
            np.testing.assert_allclose(f[f"{s}_loss"][()].ravel(), ref[s].loss, rtol=1e-5)
            np.testing.assert_allclose(f[f"{s}_acc"][()].ravel(), ref[s].acc, rtol=1e-5)
        assert f[f"{s}_loss"][()].max() < 1.0  # mse of probabilities, not cross-entropy


def test_same_dir_makes_y_the_x_direction(tmp_path):
    grid = ["grid.x=[-1,1,3]", "grid.y=[-1,1,3]"]
    out = run(tmp_path / "s.h5", *FAST, *grid, "directions.same_dir=true")
    with h5py.File(out, "r") as f:
        for k in f["directions/x"]:
            np.testing.assert_array_equal(f[f"directions/x/{k}"][()], f[f"directions/y/{k}"][()])
        loss = f["test_loss"][()]
    # along the anti-diagonal x + y is constant: one point of the line, several of the grid
    np.testing.assert_allclose(loss[0, 2], loss[2, 0], rtol=1e-6)


def test_loss_landscape_plot_scripts_read_our_file_in_their_orientation(tmp_path):
    """loss-landscape's plot_2D.py reads `xcoordinates`, `ycoordinates` and a `<split>_loss`
    array Z, and draws contour(X, Y, Z) with X, Y = meshgrid(x, y): Z[j, i] must be the loss at
    (x_i, y_j). Checked on a non-square grid against the plain loop at two far-apart points."""
    out = run(tmp_path / "s.h5", *FAST, "grid.x=[-1,1,5]", "grid.y=[-0.5,1.5,3]")
    with h5py.File(out, "r") as f:  # their reading, step by step
        x, y = np.array(f["xcoordinates"][:]), np.array(f["ycoordinates"][:])
        X, Y = np.meshgrid(x, y)
        Z = np.array(f["test_loss"][:])
        basis = read_directions(out, *_mlp_origin_and_keys())
    assert Z.shape == X.shape == (3, 5)
    origin, _ = _mlp_origin_and_keys()
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    splits = load_dataset(DatasetConfig(name="digits", max_samples=60))
    data = {"test": (splits["test"].inputs, splits["test"].labels)}
    for j, i in ((0, 4), (2, 1)):
        c = torch.tensor([[X[j, i], Y[j, i]]], dtype=torch.float64)
        ref = evaluate_points_loop(model, Subspace(origin, basis), c, data)["test"].loss[0]
        assert Z[j, i] == pytest.approx(ref, rel=1e-5)


def _mlp_origin_and_keys():
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    return {k: v.clone() for k, v in model.state_dict().items()}, [
        k for k, _ in model.named_parameters()
    ]


def test_a_custom_dataloader_split_is_streamed_through_the_command(tmp_path):
    base = ["model=custom", "model.target=custom_objects.tiny_net", "dataset=custom"]
    base += ["grid.x=[-1,1,3]", "grid.y=[-1,1,3]", "engine.batch_size=16"]
    streamed = run(tmp_path / "l.h5", *base, "dataset.target=custom_objects.loader_splits")
    resident = run(tmp_path / "r.h5", *base, "dataset.target=custom_objects.image_splits")
    with h5py.File(streamed, "r") as a, h5py.File(resident, "r") as b:
        for name in ("train_loss", "train_acc", "test_loss"):
            np.testing.assert_allclose(a[name][()], b[name][()], rtol=1e-6)
        assert a.attrs["n_train"] == 40
