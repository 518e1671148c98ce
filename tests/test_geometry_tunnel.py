"""Tunnels and m-connectors (Fort & Jastrzebski 2019, sec. 4.2-4.3): the hyperplane projection,
the tunnel on the n-wedge toy model, the commands on tiny trained MLPs, one process and
`mpirun -n 3`, and the messages for bad input."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hull_helpers import HIDDEN, MAX_SAMPLES, train_mlp
from hull_helpers import digits_dataset as _dataset
from hull_helpers import mlp_model as _model
from mpi_helpers import MPI_ROOT_ENV, REPO, mpirun_available, python

from landscape_hpc.config import (
    ConnectorConfig,
    HyperplaneConfig,
    TunnelConfig,
)
from landscape_hpc.errors import UserError
from landscape_hpc.geometry import hyperplane as hp
from landscape_hpc.geometry.connector import run_connector, summarize_connector, write_connector
from landscape_hpc.geometry.tunnel import TunnelResult, run_tunnel, summarize_tunnel, write_tunnel
from landscape_hpc.models.nwedge import wedge_distance

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _quadratic(p: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(p, p, generator=g, dtype=torch.float64)
    hessian = a @ a.T / p + 0.1 * torch.eye(p, dtype=torch.float64)
    centre = torch.randn(p, generator=g, dtype=torch.float64)
    return lambda theta: 0.5 * (theta - centre) @ hessian @ (theta - centre)


# --- maths ---------------------------------------------------------------------------------------


def test_projection_is_the_orthogonal_projector() -> None:
    g = torch.Generator().manual_seed(1)
    vectors = torch.randn(3, 12, generator=g, dtype=torch.float64)
    normals = hp.orthonormal_rows(torch.cat([vectors, vectors[:1] + vectors[1:2]]))  # rank 3
    assert normals.shape == (3, 12)
    torch.testing.assert_close(normals @ normals.T, torch.eye(3, dtype=torch.float64))
    v = torch.randn(5, 12, generator=g, dtype=torch.float64)
    projector = torch.eye(12, dtype=torch.float64) - vectors.T @ torch.linalg.pinv(vectors.T)
    torch.testing.assert_close(hp.project_out(v, normals), v @ projector)


@pytest.mark.parametrize(("m", "optimizer"), [(2, "adam"), (3, "sgd")])
def test_optimised_points_stay_on_their_hyperplanes(m: int, optimizer: str) -> None:
    loss = _quadratic(30)
    g = torch.Generator().manual_seed(2)
    optima = torch.randn(m, 30, generator=g, dtype=torch.float64)
    weights = torch.full((m,), 1.0 / m, dtype=torch.float64)
    start = weights @ optima
    options = hp.HyperplaneOptions(optimizer=optimizer, lr=0.05, steps=200)
    result = hp.optimise_hull_point(loss, optima, weights, options)
    moved = result.theta - start
    assert moved.norm() > 0.5  # it really moved ...
    for j in range(1, m):  # ... only orthogonally to the hull: θ·(θ_j − θ_1) is unchanged
        direction = optima[j] - optima[0]
        assert abs(float(moved @ direction)) < 1e-9 * float(direction.norm())
    assert result.losses[-1] < 0.5 * result.losses[0]


def test_hat_weights_and_simplex_grid() -> None:
    knots = hp.segment_positions(4)
    t = np.linspace(0, 1, 13)
    hats = hp.hat_weights(t, knots)
    np.testing.assert_allclose(hats.sum(axis=1), 1.0)
    np.testing.assert_allclose(hats @ knots, t)
    grid = hp.simplex_grid(3, 4)
    assert grid.shape == (15, 3)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert {tuple(row) for row in grid[:3]} == {tuple(row) for row in np.eye(3)}  # vertices first
    assert len({tuple(row) for row in grid}) == 15


def test_tunnel_on_the_wedge_is_below_the_linear_path() -> None:
    """The issue's test: two minima on different n-wedges; their linear path climbs, the tunnel
    through the optimised hyperplane points stays lower."""
    dim, n = 20, 10
    loss = lambda theta: wedge_distance(theta, n)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    a, b = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    a[:n] = torch.randn(n, generator=g, dtype=torch.float64)  # free on the first n coordinates
    b[n:] = torch.randn(n, generator=g, dtype=torch.float64)  # free on the last n
    assert float(loss(a)) == 0.0 and float(loss(b)) == 0.0
    options = hp.HyperplaneOptions(lr=0.01, steps=200)
    deviations = hp.tunnel_deviations(loss, a, b, 8, options)
    assert deviations.shape == (7, dim)
    np.testing.assert_allclose((deviations @ (b - a)).numpy(), 0.0, atol=1e-9)
    t = np.linspace(0, 1, 101)
    linear, tunnel = hp.path_losses(loss, a, b, deviations, t)
    assert linear.max() > 0.3
    assert tunnel.max() < 0.6 * linear.max()
    assert tunnel.mean() < 0.5 * linear.mean()
    # the optimised points themselves lie (almost) on a wedge
    on_points = np.isin(t, hp.segment_positions(8)[1:-1])
    assert tunnel[on_points].max() < 0.02
    assert tunnel[0] == linear[0] == 0.0 and tunnel[-1] == linear[-1] == 0.0


# --- the commands on tiny trained nets -----------------------------------------------------------


@pytest.fixture(scope="module")
def optima(mlp_optima: list[str]) -> list[str]:
    return mlp_optima


def _tunnel_cfg(paths: list[str], out: Path) -> TunnelConfig:
    values = dict(
        model=_model(),
        dataset=_dataset(),
        optima=paths,
        n_segments=4,
        n_dense=5,
        hyperplane=HyperplaneConfig(lr=0.01, steps=60, batch_size=None),
        chunk_points=4,
        device="cpu",
        out_dir=str(out),
    )
    return TunnelConfig(**values)


@pytest.fixture(scope="module")
def tunnel_result(optima: list[str], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tunnel")
    result = run_tunnel(_tunnel_cfg(optima[:2], out))
    write_tunnel(result, out)
    return result, out


def test_tunnel_between_trained_nets(tunnel_result) -> None:
    result, out = tunnel_result
    np.testing.assert_allclose(result.points, [0, 0.25, 0.5, 0.75, 1])
    for split in ("train", "test"):
        linear, tunnel = result.metrics[split]["linear"], result.metrics[split]["tunnel"]
        # the ends are the optima themselves on both paths
        np.testing.assert_allclose(tunnel[0][[0, -1]], linear[0][[0, -1]], rtol=1e-6)
    linear_loss, tunnel_loss = (
        result.metrics["train"]["linear"][0],
        result.metrics["train"]["tunnel"][0],
    )
    assert tunnel_loss.max() < linear_loss.max()
    assert result.metrics["train"]["tunnel"][1].min() > result.metrics["train"]["linear"][1].min()
    assert result.alignment.shape == (3, 3)
    np.testing.assert_allclose(np.diagonal(result.alignment), 1.0)
    assert (np.abs(result.alignment) <= 1 + 1e-9).all()
    table = np.genfromtxt(out / "tunnel.csv", delimiter=",", names=True)
    np.testing.assert_allclose(table["train_loss_tunnel"], tunnel_loss)
    saved = torch.load(out / "tunnel_points.pt", weights_only=True)
    assert saved["deviations"].shape == (3, result.deviations.shape[1])


def test_connector_of_three_nets_is_below_the_linear_simplex(
    optima: list[str], tmp_path: Path
) -> None:
    cfg = ConnectorConfig(
        model=_model(),
        dataset=_dataset(),
        optima=optima,
        resolution=2,
        hyperplane=HyperplaneConfig(lr=0.01, steps=60, batch_size=None),
        splits=["train"],
        device="cpu",
        out_dir=str(tmp_path),
    )
    result = run_connector(cfg)
    assert result.grid.shape == (6, 3)  # 3 optima + 3 edge midpoints
    linear, connector = (
        result.metrics["train"]["linear"][0],
        result.metrics["train"]["connector"][0],
    )
    np.testing.assert_allclose(connector[:3], linear[:3], rtol=1e-6)  # the optima
    assert connector.max() < linear.max()
    assert (connector[3:] < linear[3:]).all()
    # the whole polytope, on a grid 4 times finer (resolution 8: 45 points)
    assert result.dense_grid.shape == (45, 3)
    dense_linear, dense_connector = (
        result.dense_metrics["train"][k][0] for k in ("linear", "connector")
    )
    at_grid = [int(np.flatnonzero((result.dense_grid == g).all(axis=1))[0]) for g in result.grid]
    np.testing.assert_allclose(dense_connector[at_grid], connector, rtol=1e-5)  # the same points
    np.testing.assert_allclose(dense_linear[at_grid], linear, rtol=1e-5)
    assert dense_connector.max() >= connector.max() - 1e-6  # the grid is part of the polytope
    assert dense_connector.max() < dense_linear.max()
    files = write_connector(result, tmp_path)
    dense_rows = np.genfromtxt(files[1], delimiter=",", names=True)
    np.testing.assert_allclose(dense_rows["train_loss_connector"], dense_connector, rtol=1e-6)
    assert "over 45 points of the finer grid" in summarize_connector(result)


@pytest.mark.parametrize(("m", "resolution"), [(2, 4), (3, 4), (4, 3)])
def test_simplex_interpolation_is_piecewise_linear_on_the_grid(m: int, resolution: int) -> None:
    grid = hp.simplex_grid(m, resolution)
    rng = np.random.default_rng(0)
    points = np.concatenate([hp.simplex_grid(m, 4 * resolution), rng.dirichlet(np.ones(m), 40)])
    w = hp.simplex_interpolation(points, grid, resolution)
    assert (w >= 0).all() and ((w > 0).sum(axis=1) <= m).all()  # one small simplex each
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(w @ grid, points, atol=1e-12)  # linear functions exactly
    np.testing.assert_array_equal(
        hp.simplex_interpolation(grid, grid, resolution), np.eye(len(grid))
    )
    # the vertices a point uses are neighbours: one grid step apart at most
    for row in w:
        used = grid[row > 0] * resolution
        assert np.abs(used[:, None] - used[None]).max() <= 1 + 1e-9


def test_optima_of_different_architectures_are_refused(optima: list[str], tmp_path: Path) -> None:
    other = train_mlp(tmp_path / "wide", 1, hidden=[6])
    with pytest.raises(UserError, match="are of different architectures") as caught:
        run_tunnel(_tunnel_cfg([optima[0], other], tmp_path))
    assert optima[0] in str(caught.value) and other in str(caught.value)
    assert "layers.1.weight" in str(caught.value)  # the shape mismatch is named


def test_connector_needs_two_optima(optima: list[str], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"m-connector needs m ≥ 2 optima"):
        run_connector(
            ConnectorConfig(model=_model(), dataset=_dataset(), optima=optima[:1], device="cpu")
        )
    with pytest.raises(UserError, match="a tunnel joins exactly two"):
        run_tunnel(_tunnel_cfg(optima, tmp_path))  # three


def _command(ranks: int | None, args: list[str]) -> subprocess.CompletedProcess:
    launch = [] if ranks is None else ["mpirun", "-n", str(ranks), "--oversubscribe"]
    argv = ["timeout", "-k", "10", "240", *launch, python(), "-m", "landscape_hpc.geometry", *args]
    env = os.environ | MPI_ROOT_ENV | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_command_exits_2_with_a_message_for_one_optimum(optima: list[str], tmp_path: Path) -> None:
    done = _command(None, ["connector", f"optima=[{optima[0]}]", f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 2, done.stderr
    assert "error: optima lists 1 checkpoint(s); an m-connector needs m ≥ 2" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.skipif(not mpirun_available(), reason="mpirun is not on PATH")
def test_mpirun_three_ranks_gives_the_serial_tunnel(
    optima: list[str], tunnel_result, tmp_path: Path
) -> None:
    serial, _ = tunnel_result
    args = [
        "tunnel",
        f"optima=[{optima[0]},{optima[1]}]",
        f"+model.kwargs.hidden=[{HIDDEN[0]}]",
        f"dataset.max_samples={MAX_SAMPLES}",
        "n_segments=4",
        "n_dense=5",
        "hyperplane.lr=0.01",
        "hyperplane.steps=60",
        "hyperplane.batch_size=null",
        "chunk_points=4",
        "device=cpu",
        f"hydra.run.dir={tmp_path}",
    ]
    done = _command(3, args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "train: linear max loss" in done.stdout
    table = np.genfromtxt(tmp_path / "tunnel.csv", delimiter=",", names=True)
    for split in ("train", "test"):
        for path in ("linear", "tunnel"):
            loss, acc = serial.metrics[split][path]
            np.testing.assert_allclose(table[f"{split}_loss_{path}"], loss, rtol=1e-4)
            np.testing.assert_allclose(table[f"{split}_acc_{path}"], acc, atol=1e-9)
    assert (tmp_path / "tunnel.png").stat().st_size > 10_000


def test_the_tunnel_summary_reports_the_barriers():
    t = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    nan = np.full(5, np.nan)
    metrics = {"train": {"linear": (np.array([1.0, 2.0, 4.0, 2.5, 3.0]), nan),
                         "tunnel": (np.array([1.0, 1.5, 2.0, 2.5, 3.0]), nan)}}  # fmt: skip
    points = np.array([0.0, 0.5, 1.0])
    result = TunnelResult(["a", "b"], t, points, metrics, np.ones((1, 1)), np.ones((1, 3)),
                          np.ones((1, 2)), ["w"])  # fmt: skip
    line = [x for x in summarize_tunnel(result).splitlines() if "loss barrier" in x]
    assert line == ["  loss barrier (train): linear 2 at t=0.5; tunnel 0 at t=0"]


def test_the_tunnel_summary_scores_two_blocks_against_a_band():
    k = 6  # optimised points: a two-block cosine matrix, the second block from point 2
    align = np.full((k, k), 0.05)
    align[:2, :2], align[2:, 2:] = 0.9, 0.8
    np.fill_diagonal(align, 1.0)
    t = np.linspace(0, 1, k + 2)
    loss, nan = np.linspace(1.0, 2.0, k + 2), np.full(k + 2, np.nan)
    metrics = {"train": {"linear": (loss, nan), "tunnel": (loss, nan)}}
    result = TunnelResult(["a", "b"], t, t, metrics, align, np.ones((k, 3)),
                          np.ones((k, 2)), ["w"])  # fmt: skip
    line = [x for x in summarize_tunnel(result).splitlines() if "alignment structure" in x]
    assert len(line) == 1 and "split before point 2" in line[0]
    assert "two blocks fits better" in line[0]
