"""PCA of a training trajectory end to end: the real `train` command writes the checkpoints, the
surface command computes the surface along PC1/PC2 and stores the ratios and the projected path,
the plot command draws it; bad input gives a message."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import ModelConfig
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model

plot = importlib.import_module("landscape_hpc.plot")  # the command (lh.plot: the function)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
DATA = ["model=mlp", "dataset.max_samples=120"]
EPOCHS, DROP = 5, 3  # lr drops after epoch 3: checkpoint 4 is the first at the lower rate
GRID = ["grid.x=[-2,8,6]", "grid.y=[-3,3,5]"]


def _command(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real training run: checkpoints/epoch_0000..0005.pt with a learning-rate drop."""
    out = tmp_path_factory.mktemp("train")
    r = _command(
        "landscape_hpc.train",
        *DATA,
        f"epochs={EPOCHS}",
        "save_every=1",
        "lr=0.1",
        f"lr_drops=[{DROP}]",
        "batch_size=32",
        "device=cpu",
        f"hydra.run.dir={out}",
        cwd=out,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def surface(out: Path, *overrides: str) -> Path:
    cfg = compose_config("surface", [f"out={out}", "plot=false", *DATA, *overrides])
    return compute_surface(cfg)


def _checkpoints(run_dir: Path) -> list[dict]:
    paths = sorted((run_dir / "checkpoints").glob("*.pt"))
    return [torch.load(p, weights_only=True) for p in paths]


def test_pca_surface_stores_the_sklearn_directions_ratios_and_projected_path(run_dir, tmp_path):
    out = surface(
        tmp_path / "s.h5", "directions.kind=pca", f"directions.trajectory={run_dir}", *GRID
    )
    ckpts = _checkpoints(run_dir)
    weights = [k for k, v in ckpts[-1]["state_dict"].items() if v.dim() > 1]  # ignore=biasbn
    rows = np.stack(
        [
            np.concatenate(
                [(c["state_dict"][k] - ckpts[-1]["state_dict"][k]).reshape(-1) for k in weights]
            )
            for c in ckpts
        ]
    ).astype(np.float64)
    ref = PCA(n_components=2).fit(rows)
    with h5py.File(out, "r") as f:
        ratio = f.attrs["explained_variance_ratio"]
        t = {name: f["trajectory"][name][()] for name in f["trajectory"]}
        dirs = [
            np.concatenate([f[f"directions/{a}/{k}"][()].reshape(-1) for k in weights])
            for a in "xy"
        ]
        assert sorted(f["directions/x"]) == sorted(weights)  # no biases
        assert f["done"][()].all() and np.isfinite(f["train_loss"][()]).all()
        # loss-landscape's plot_2D.py names point at the same data
        np.testing.assert_array_equal(f["proj_xcoord"][()], t["x"])
        np.testing.assert_array_equal(f["explained_variance_ratio_"][()], ratio)
        assert f.attrs["checkpoint"].endswith(f"epoch_{EPOCHS:04d}.pt")  # origin: last one
    np.testing.assert_allclose(ratio, ref.explained_variance_ratio_, rtol=1e-5)
    assert ratio[0] > ratio[1] > 0 and ratio.sum() <= 1 + 1e-9
    for mine, theirs in zip(dirs, ref.components_):
        np.testing.assert_allclose(mine, theirs, atol=1e-5)  # same signs as sklearn too
    np.testing.assert_allclose(np.stack([t["x"], t["y"]], 1), rows @ ref.components_.T, atol=1e-4)
    assert t["x"].dtype == t["y"].dtype == t["lr"].dtype == np.float64
    assert t["epoch"].tolist() == list(range(EPOCHS + 1))
    assert (t["x"][-1], t["y"][-1]) == (0.0, 0.0)  # the final checkpoint is the origin
    assert np.abs(t["x"][0]) > 0.1  # the start is far from it
    assert plot.lr_drop_indices(t["lr"]).tolist() == [DROP + 1]
    np.testing.assert_allclose(t["lr"][: DROP + 1], 0.1)


def test_plot_command_draws_the_stored_path_with_pc_labels(run_dir, tmp_path):
    out = surface(
        tmp_path / "s.h5", "directions.kind=pca", f"directions.trajectory={run_dir}", *GRID
    )
    assert plot.main([str(out), "--kind", "contour", "--out", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "s_loss_2dcontour.png").stat().st_size > 0
    s = plot.read_surface(out)
    fig, ax = plt.subplots()
    plot.contour(ax, s.x, s.y, s.metrics["train_loss"])
    path, drops = plot.trajectory(ax, s.trajectory["x"], s.trajectory["y"], s.trajectory["lr"])
    plot.pc_labels(ax, s.explained_variance_ratio)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(path.get_xdata(), f["trajectory/x"][()])
        np.testing.assert_array_equal(path.get_ydata(), f["trajectory/y"][()])
        np.testing.assert_array_equal(drops.get_xdata(), f["trajectory/x"][[DROP + 1]])
        r = f.attrs["explained_variance_ratio"]
    assert ax.get_xlabel() == f"PC1: {100 * r[0]:.1f}%"
    assert ax.get_ylabel() == f"PC2: {100 * r[1]:.1f}%"
    plt.close(fig)


def test_one_dimensional_pca_uses_pc1_and_directions_reload_with_their_path(run_dir, tmp_path):
    traj = f"directions.trajectory={run_dir}"
    two = surface(tmp_path / "2d.h5", "directions.kind=pca", traj, *GRID)
    one = surface(tmp_path / "1d.h5", "directions.kind=pca", traj, "grid.x=[-2,8,6]", "grid.y=null")
    origin = f"model.checkpoint={run_dir}/checkpoints/epoch_{EPOCHS:04d}.pt"
    again = surface(tmp_path / "re.h5", f"directions.load={two}", origin, *GRID)
    with h5py.File(one, "r") as f, h5py.File(two, "r") as g, h5py.File(again, "r") as h:
        assert "directions/y" not in f and "trajectory/y" not in f
        for k in f["directions/x"]:
            np.testing.assert_array_equal(f[f"directions/x/{k}"][()], g[f"directions/x/{k}"][()])
        np.testing.assert_array_equal(f["trajectory/x"][()], g["trajectory/x"][()])
        assert f.attrs["explained_variance_ratio"].tolist() == [
            g.attrs["explained_variance_ratio"][0]
        ]
        np.testing.assert_allclose(f["train_loss"][()], g["train_loss"][()][2], rtol=1e-6)  # y=0
        np.testing.assert_array_equal(h["trajectory/y"][()], g["trajectory/y"][()])
        np.testing.assert_array_equal(h["test_loss"][()], g["test_loss"][()])


def test_another_trajectory_is_another_job(run_dir, tmp_path):
    args = ["directions.kind=pca", *GRID, f"model.checkpoint={run_dir}/model.pt"]
    out = surface(tmp_path / "s.h5", *args, f"directions.trajectory={run_dir}")
    before = out.read_bytes()
    surface(tmp_path / "s.h5", *args, f"directions.trajectory={run_dir}")  # resumes: same job
    shorter = f"directions.trajectory='{run_dir}/checkpoints/epoch_000[1-5].pt'"  # a glob
    with pytest.raises(UserError, match="trajectory_sha256") as err:
        surface(tmp_path / "s.h5", *args, shorter)
    assert "overwrite=true" in str(err.value)
    assert out.read_bytes() == before


def _save_states(folder: Path, model: torch.nn.Module, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * (i + 1))
        torch.save({"state_dict": model.state_dict(), "epoch": i}, folder / f"epoch_{i}.pt")
    return folder


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d, run: [], ["directions.trajectory=<folder"]),
        (lambda d, run: [f"directions.trajectory={d.mkdir() or d}"], ["holds no checkpoints"]),
        (
            lambda d, run: [f"directions.trajectory='{run}/checkpoints/epoch_000[01].pt'"],
            ["at least 3 checkpoints", "save_every"],
        ),
        (
            lambda d, run: [
                "directions.trajectory="
                + str(_save_states(d, build_model(ModelConfig(name="mpo_cnn"), (1, 8, 8), 10), 3)),
                f"model.checkpoint={run}/model.pt",
            ],
            ["does not have the architecture", "missing keys", "model="],
        ),
        (
            lambda d, run: [f"directions.trajectory={run}", "directions.projection=ortho"],
            ["directions.projection", "lstsq"],
        ),
    ],
    ids=["no-trajectory", "empty-folder", "two-checkpoints", "other-architecture", "projection"],
)
def test_bad_pca_input_is_a_message(run_dir, tmp_path, make, words):
    with pytest.raises(UserError) as err:
        surface(tmp_path / "s.h5", "directions.kind=pca", *GRID, *make(tmp_path / "t", run_dir))
    for w in words:
        assert w in str(err.value)
    assert not (tmp_path / "s.h5").exists()


def test_command_prints_the_error_without_traceback(tmp_path):
    empty = tmp_path / "run_without_checkpoints"
    empty.mkdir()
    r = _command(
        "landscape_hpc.surface",
        *DATA,
        "directions.kind=pca",
        f"directions.trajectory={empty}",
        f"out={tmp_path}/s.h5",  # beside the trajectory: inside it is refused (paths.py)
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: directions.trajectory={empty} holds no checkpoints" in r.stderr


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not on PATH (openmpi-bin)")
def test_pca_under_mpi_gives_every_rank_the_directions_of_one_process(run_dir, tmp_path):
    """Rank 0 computes the PCA and broadcasts it: three ranks write the surface one process
    writes, directions and projected path bit for bit, values to the engine's precision."""
    args = [*DATA, *GRID, "directions.kind=pca", f"directions.trajectory={run_dir}", "plot=false"]
    one = surface(tmp_path / "one.h5", *args[2:])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1"}
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    r = subprocess.run(
        ["mpirun", "-n", "3", "--oversubscribe", PYTHON, "-m", "landscape_hpc.surface", *args,
         f"out={tmp_path / 'three.h5'}", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    with h5py.File(one, "r") as f, h5py.File(tmp_path / "three.h5", "r") as g:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            if name.startswith(("directions/", "trajectory/")) or name.endswith("coordinates"):
                np.testing.assert_array_equal(f[name][()], g[name][()], err_msg=name)
            elif name.endswith(("_loss", "_acc")):
                np.testing.assert_allclose(f[name][()], g[name][()], rtol=1e-6, err_msg=name)
        assert g["done"][()].all()
