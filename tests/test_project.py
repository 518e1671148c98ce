"""Several paths on one plane (api/project.py, `plot --trajectory`): other training runs'
checkpoints projected on a PCA surface's directions equal directions.pca.project of the same
checkpoints (and an independent float64 projection); the surface's own run lands on its stored
path; the PNG and HTML draw every run with a legend; bad input is one line."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import landscape_hpc as lh
from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.directions import pca

plot = importlib.import_module("landscape_hpc.plot")  # the command (lh.plot: the function)
plot_paths = importlib.import_module("landscape_hpc.plot_paths")

DATA = ["model=mlp", "dataset.max_samples=120"]


def _train(out: Path, *args: str) -> Path:
    r = subprocess.run(
        [sys.executable, "-m", "landscape_hpc.train", *DATA, "epochs=4", "save_every=1"]
        + ["batch_size=32", "device=cpu", f"hydra.run.dir={out}", *args],
        cwd=out,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three real training runs: the plane's (lr 0.1), another learning rate, another seed."""
    made = {}
    arms = {"a": ["lr=0.1", "lr_drops=[2]"], "slow": ["lr=0.03"], "seed1": ["seed=1"]}
    for name, args in arms.items():
        made[name] = _train(tmp_path_factory.mktemp(name), *args)
    return made


@pytest.fixture(scope="module")
def plane(runs, tmp_path_factory) -> Path:
    """The PCA surface of run a (its origin: a's last checkpoint, named in the file)."""
    out = tmp_path_factory.mktemp("plane") / "pca.h5"
    overrides = ["directions.kind=pca", f"directions.trajectory={runs['a']}"]
    overrides += ["grid.x=[-3,3,7]", "grid.y=[-2,2,5]", f"out={out}", "plot=false"]
    return compute_surface(compose_config("surface", [*DATA, *overrides]))


def _states(run: Path) -> list[dict]:
    paths = pca.find_checkpoints(str(run))
    return [torch.load(p, weights_only=True)["state_dict"] for p in paths]


def _basis(plane: Path) -> list[dict]:
    with h5py.File(plane) as f:
        return [
            {k: torch.from_numpy(g[k][()]) for k in g}
            for g in (f["directions/x"], f["directions/y"])
        ]


def test_projected_paths_equal_pca_project_of_the_same_checkpoints(runs, plane):
    projected = lh.project(plane, runs=[runs["slow"], runs["seed1"]])
    assert list(projected) == [runs["slow"].name, runs["seed1"].name]
    basis = _basis(plane)
    keys = sorted(basis[0])
    with h5py.File(plane) as f:
        origin = torch.load(f.attrs["checkpoint"], weights_only=True)["state_dict"]
    axes = torch.stack([torch.cat([d[k].reshape(-1) for k in keys]) for d in basis])
    for name in ("slow", "seed1"):
        states = _states(runs[name])
        m = pca.difference_matrix(states, origin, keys)
        got = projected[runs[name].name]
        np.testing.assert_array_equal(got.coords, pca.project(m, axes, "cos"))
        # independently, in float64: ⟨θ_i − origin, d⟩ / ‖d‖ per direction
        diffs = np.stack(
            [
                np.concatenate([(s[k] - origin[k]).double().reshape(-1).numpy() for k in keys])
                for s in states
            ]
        )
        a = axes.double().numpy()
        np.testing.assert_allclose(got.coords, diffs @ a.T / np.linalg.norm(a, axis=1), rtol=1e-5)
        assert got.coords.shape == (5, 2) and got.epochs.tolist() == [0, 1, 2, 3, 4]
        assert np.isfinite(got.lrs).all()  # the checkpoints say their learning rate
    # the seed-1 run starts elsewhere: its path differs from the slow one's
    assert not np.allclose(
        projected[runs["slow"].name].coords, projected[runs["seed1"].name].coords
    )


def test_the_plane_s_own_run_lands_on_its_stored_path(runs, plane):
    (own,) = lh.project(plane, runs={"own": runs["a"]}).values()
    with h5py.File(plane) as f:
        stored = np.column_stack([f["trajectory/x"][()], f["trajectory/y"][()]])
    np.testing.assert_allclose(own.coords, stored, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(own.coords[-1], [0.0, 0.0])  # the origin is a's last


def test_in_memory_runs_and_origin(runs, plane):
    ds = lh.load(plane)
    with h5py.File(plane) as f:
        origin = torch.load(f.attrs["checkpoint"], weights_only=True)["state_dict"]
    states = _states(runs["slow"])
    from_memory = lh.project(ds, runs={"slow": states}, origin=origin)["slow"]
    from_folder = lh.project(plane, runs=[runs["slow"]])[runs["slow"].name]
    np.testing.assert_array_equal(from_memory.coords, from_folder.coords)
    ds.attrs.pop("checkpoint")
    with pytest.raises(ValueError, match="pass origin="):
        lh.project(ds, runs=[states])
    with pytest.raises(
        ValueError, match=r"runs\[0\] holds 1 checkpoint\(s\); a path needs at least 2"
    ):
        lh.project(ds, runs=[states[:1]], origin=origin)
    with pytest.raises(TypeError, match="list of run folders"):
        lh.project(plane, runs=str(runs["slow"]))


def test_the_png_draws_every_run_with_a_legend(runs, plane, tmp_path, monkeypatch):
    drawn, real = [], plot_paths.other_paths
    monkeypatch.setattr(plot_paths, "other_paths", lambda ax, p: drawn.append((ax, real(ax, p))))
    args = [str(plane), "--kind", "contour", "--metric", "train_loss", "--out", str(tmp_path)]
    args += ["--trajectory", str(runs["slow"]), "--trajectory", str(runs["seed1"])]
    assert plot.main(args) == 0
    assert (tmp_path / "pca_loss_2dcontour.png").stat().st_size > 0
    expected = lh.project(plane, runs=[runs["slow"], runs["seed1"]])
    ((ax, lines),) = drawn
    assert [line.get_label() for line in lines] == list(expected)
    for line, p in zip(lines, expected.values()):
        np.testing.assert_array_equal(line.get_xdata(), p.coords[:, 0])
        np.testing.assert_array_equal(line.get_ydata(), p.coords[:, 1])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"trajectory", runs["slow"].name, runs["seed1"].name} <= set(legend)


def test_the_html_draws_every_run_with_a_legend(runs, plane, tmp_path):
    pytest.importorskip("plotly", reason='the [html] extra: pip install "landscape_hpc[html]"')
    from landscape_hpc import plot_html

    args = [str(plane), "--kind", "html", "--out", str(tmp_path), "--trajectory", str(runs["slow"])]
    assert plot.main(args) == 0
    fig = plot_html.figure_json((tmp_path / "pca_surface.html").read_text())
    (trace,) = [t for t in fig["data"] if t.get("name") == runs["slow"].name]
    p = lh.project(plane, runs=[runs["slow"]])[runs["slow"].name]
    np.testing.assert_array_equal(trace["x"], p.coords[:, 0])
    np.testing.assert_array_equal(trace["y"], p.coords[:, 1])
    assert {"trajectory", runs["slow"].name} <= {t.get("name") for t in fig["data"]}


def _one_checkpoint(runs, tmp_path):
    folder = tmp_path / "short"
    folder.mkdir()
    (folder / "epoch_0000.pt").write_bytes(
        (runs["slow"] / "checkpoints" / "epoch_0000.pt").read_bytes()
    )
    return folder


def test_bad_runs_are_one_line_and_write_nothing(runs, plane, tmp_path, capsys):
    short = _one_checkpoint(runs, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (short, "--trajectory=" + str(short) + " holds 1 checkpoint(s); a path needs at least 2"),
        (empty, "holds no checkpoints"),
    ]
    for run, words in cases:
        args = [
            str(plane),
            "--kind",
            "contour",
            "--out",
            str(tmp_path / "o"),
            "--trajectory",
            str(run),
        ]
        assert plot.main(args) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("error:") and words in line, line
        assert not list((tmp_path / "o").glob("*.png"))
