"""Short directions along tunnels and connectors (Fort & Jastrzebski 2019, fig. 4): the known
answer on quadratics, the engine path against the plain reference at the tunnel's points, the
commands end to end (one process and `mpirun -n 3`), and the refusals of bad keys."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hull_helpers import HIDDEN, MAX_SAMPLES
from hull_helpers import digits_dataset as _dataset
from hull_helpers import mlp_model as _model
from mpi_helpers import MPI_ROOT_ENV, REPO, mpirun_available, python

from landscape_hpc.config import (
    HyperplaneConfig,
    ShortDirsConfig,
    TunnelConfig,
)
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.errors import UserError
from landscape_hpc.geometry import short_dirs
from landscape_hpc.geometry.hyperplane import stream_seed
from landscape_hpc.geometry.tunnel import run_tunnel, summarize_tunnel, write_tunnel
from landscape_hpc.geometry.width import random_unit_direction
from landscape_hpc.models import build_model, load_state_dict_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

SHORT = dict(n_directions=4, r_max=20.0, n_distances=11, threshold=1.0, short=5.0, seed=3)


# --- the maths on quadratics ----------------------------------------------------------------------


def _quadratic(p: int = 10):
    """L(θ) = ½ θᵀHθ, H diagonal with eigenvalues from 1e-3 to 1e2: random directions see very
    different curvatures dᵀHd, so some are short and some long."""
    h = torch.logspace(-3, 2, p, dtype=torch.float64)
    return h, lambda theta: 0.5 * (h * theta * theta).sum()


def _exact(h: torch.Tensor, theta0: torch.Tensor, n: int, threshold: float, seed: int):
    """Where L(θ0 + r·d_j) = L(θ0) + threshold: ½ r² dᵀHd + r gᵀd = threshold, g = Hθ0."""
    out = []
    for j in range(n):
        d = random_unit_direction(len(h), stream_seed(seed, j), torch.float64)
        a, b = float((h * d * d).sum()), float((h * theta0) @ d)
        out.append((-b + np.sqrt(b * b + 2 * a * threshold)) / a)
    return np.array(out)


@pytest.mark.parametrize("at_minimum", [True, False])
def test_quadratic_distances_and_short_count_are_the_analytic_ones(at_minimum: bool) -> None:
    h, loss = _quadratic()
    theta0 = torch.zeros(10, dtype=torch.float64)
    if not at_minimum:  # off the minimum: the level is the point's own loss + threshold
        theta0 = 0.3 * torch.randn(10, generator=torch.Generator().manual_seed(1)).double()
    n, threshold, r_max = 40, 0.5, 0.7
    exact = _exact(h, theta0, n, threshold, seed=7)
    if at_minimum:  # sqrt(2·threshold / dᵀHd)
        ds = [random_unit_direction(10, stream_seed(7, j), torch.float64) for j in range(n)]
        want = [np.sqrt(2 * threshold / float((h * d * d).sum())) for d in ds]
        np.testing.assert_allclose(exact, want, rtol=1e-12)
    # `short` in the middle of the widest gap between the sorted distances below r_max
    inside = np.sort(exact[exact < r_max])
    gap = int(np.argmax(np.diff(inside)))
    short = float(inside[gap : gap + 2].mean())
    distances = np.linspace(0.0, r_max, 3001)
    found = short_dirs.short_directions(loss, theta0, n, distances, threshold, short, seed=7)
    crossed = exact <= r_max
    assert 0 < crossed.sum() < n  # the grid is long enough for some, not for all
    np.testing.assert_array_equal(found.crossed, crossed)
    np.testing.assert_allclose(found.distance[crossed], exact[crossed], atol=2e-3)
    np.testing.assert_allclose(found.distance[~crossed], r_max)  # a lower bound
    want_short = int((exact < short).sum())
    assert 0 < want_short < crossed.sum()  # a count that can be wrong both ways
    assert found.n_short == want_short
    np.testing.assert_array_equal(found.short, exact < short)
    assert found.level == pytest.approx(float(loss(theta0)) + threshold)


def test_a_direction_is_short_only_when_it_crossed_below_short() -> None:
    r = np.array([0.0, 1.0, 2.0, 3.0])
    losses = np.array([[1.0, 1.2, 3.0, 9.0], [1.0, 1.1, 1.2, 1.3], [1.0, 2.5, 3.0, 3.0]])
    found = short_dirs.measure_point(r, losses, 1.0, 1.0, short=1.5)
    np.testing.assert_allclose(found.distance, [1.0 + 0.8 / 1.8, 3.0, 2.0 / 3.0])
    np.testing.assert_array_equal(found.crossed, [True, False, True])
    np.testing.assert_array_equal(found.short, [True, False, True])
    assert found.n_short == 2 and found.level == 2.0
    # short = r_max: a direction that never crossed is still not short
    assert not short_dirs.measure_point(r, losses, 1.0, 1.0, short=3.0).short[1]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("n_directions", -1, "short_dirs.n_directions=-1 must be ≥ 0"),
        ("r_max", 0.0, "short_dirs.r_max=0.0 must be positive"),
        ("n_distances", 1, "short_dirs.n_distances=1 must be at least 2"),
        ("short", 0.0, "short_dirs.short=0.0 must be in (0, r_max=20.0]"),
        ("short", 25.0, "short_dirs.short=25.0 must be in (0, r_max=20.0]"),
        ("threshold", -1.0, "short_dirs.threshold=-1.0 must be positive"),
        ("split", "val", "short_dirs.split=val is not one of splits=['train', 'test']"),
        ("radius", "median", "short_dirs.radius='median' is not known; valid values: fixed,"),
    ],
)
def test_bad_keys_are_refused_in_one_line(key: str, value, message: str) -> None:
    cfg = ShortDirsConfig(**({"n_directions": 2} | {key: value}))
    with pytest.raises(UserError) as caught:
        short_dirs.check_config(cfg, ["train", "test"])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_the_linear_centre_rule_checks_its_quantile_not_short() -> None:
    centre = dict(n_directions=2, radius="linear_centre", r_max=5.0)  # short=10 > r_max: unused
    short_dirs.check_config(ShortDirsConfig(**centre), ["train"])
    with pytest.raises(UserError, match=r"short_dirs.quantile=1.0 must lie in \(0, 1\)"):
        short_dirs.check_config(ShortDirsConfig(**centre, quantile=1.0), ["train"])


# --- the tunnel on tiny trained nets --------------------------------------------------------------


@pytest.fixture(scope="module")
def optima(mlp_optima: list[str]) -> list[str]:
    return mlp_optima


def _hull_args(**short) -> list[str]:
    """The keys tunnel and connector share below, short_dirs.* from SHORT updated by `short`."""
    return [
        f"+model.kwargs.hidden=[{HIDDEN[0]}]",
        f"dataset.max_samples={MAX_SAMPLES}",
        "hyperplane.lr=0.01",
        "hyperplane.steps=60",
        "hyperplane.batch_size=null",
        "device=cpu",
        *(f"short_dirs.{k}={v}" for k, v in (SHORT | short).items()),
    ]


@pytest.fixture(scope="module")
def tunnel(optima: list[str], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("tunnel")
    cfg = TunnelConfig(
        model=_model(),
        dataset=_dataset(),
        optima=optima[:2],
        n_segments=4,
        n_dense=5,
        hyperplane=HyperplaneConfig(lr=0.01, steps=60, batch_size=None),
        device="cpu",
        out_dir=str(out),
        short_dirs=ShortDirsConfig(**SHORT),
    )
    chunk, short_dirs.CHUNK = short_dirs.CHUNK, 3  # 4 directions in two tasks: 3 + 1
    try:
        result = run_tunnel(cfg)
    finally:
        short_dirs.CHUNK = chunk
    return result, write_tunnel(result, out), out


def test_tunnel_short_dirs_match_the_flat_reference_at_every_point(optima, tunnel) -> None:
    result, _, _ = tunnel
    found = result.short_dirs
    assert {k: len(v) for k, v in found.points.items()} == {"optimum": 2, "linear": 3, "tunnel": 3}
    model = build_model(_model(), (1, 8, 8), 10)
    keys = [name for name, _ in model.named_parameters()]
    states = [load_state_dict_file(p, False, "optima") for p in optima[:2]]
    train = load_dataset(_dataset())["train"]
    loss, theta_a = flat_loss(model, states[0], keys, train.inputs, train.labels)
    theta_b = torch.cat([states[1][k].reshape(-1) for k in keys])
    inner = result.points[1:-1]
    where = {
        "optimum": [(0.0, None), (1.0, None)],
        "linear": [(t, None) for t in inner],
        "tunnel": [(t, k) for k, t in enumerate(inner)],
    }
    for kind, points in where.items():
        for i, (t, k) in enumerate(points):
            theta = theta_a.double() + t * (theta_b.double() - theta_a.double())
            if k is not None:
                theta = theta + torch.from_numpy(result.deviations[k]).double()
            want = short_dirs.short_directions(
                loss, theta.float(), 4, found.distances, 1.0, 5.0, seed=3
            )
            got = found.points[kind][i]
            np.testing.assert_allclose(got.losses, want.losses, rtol=1e-4, atol=1e-6)
            np.testing.assert_array_equal(got.crossed, want.crossed)
            np.testing.assert_allclose(got.distance, want.distance, rtol=1e-4)
            assert got.n_short == want.n_short
            # the point is the tunnel's own: its loss is the one the path evaluation reports
            path = result.metrics["train"]["linear" if k is None else "tunnel"][0]
            at = int(np.flatnonzero(np.isclose(result.t, t))[0])
            assert got.losses[0, 0] == pytest.approx(path[at], rel=1e-5)


def test_the_linear_centre_rule_takes_the_median_at_t_half(tunnel) -> None:
    result, _, _ = tunnel
    found = result.short_dirs
    losses = {k: np.stack([p.losses for p in v]) for k, v in found.points.items()}
    inner = result.points[1:-1]  # t = 0.25, 0.5, 0.75: the centre is the second
    points = {k: np.zeros((len(v), 2)) for k, v in found.points.items()}
    points["linear"][:, 0] = inner
    assert short_dirs.centre_index(points["linear"], 2) == 1
    cfg = ShortDirsConfig(**(SHORT | dict(radius="linear_centre", quantile=0.5)))
    got = short_dirs.measure_all(cfg, found.distances, losses, points, 2)
    at_centre = found.points["linear"][1]
    assert got.short == float(np.quantile(at_centre.distance, 0.5, method="lower"))
    assert got.short != SHORT["short"] and "quantile" in got.rule
    for kind, rows in got.points.items():
        for p, q in zip(rows, found.points[kind]):
            np.testing.assert_array_equal(p.distance, q.distance)  # the rule moves only `short`
            np.testing.assert_array_equal(p.short, p.crossed & (p.distance < got.short))
    assert "quantile of the distances at the linear point (0.5)" in short_dirs.summarize(got)


def test_tunnel_writes_the_short_dirs_table(tunnel) -> None:
    result, files, out = tunnel
    assert out / "short_dirs.csv" in files
    table = _table(out / "short_dirs.csv")
    assert len(table) == (2 + 3 + 3) * 4  # points × directions
    assert table.dtype.names == (
        "where", "point", "t", "direction", "distance", "crossed", "short", "loss_at_point",
        "level", "max_loss",
    )  # fmt: skip
    tunnel_rows = table[table["where"] == "tunnel"]
    np.testing.assert_allclose(np.unique(tunnel_rows["t"]), [0.25, 0.5, 0.75])
    counts = [tunnel_rows[tunnel_rows["point"] == i]["short"].sum() for i in range(3)]
    np.testing.assert_array_equal(counts, result.short_dirs.counts("tunnel"))
    assert (table["short"] <= table["crossed"]).all()
    assert (table["distance"][table["short"] == 1] < 5.0).all()
    summary = summarize_tunnel(result)
    assert "short directions (4 random unit directions per point" in summary
    assert "tunnel: short per point" in summary and "linear: short per point" in summary
    png = short_dirs.plot(result.short_dirs, {"optimum": np.array([0.0, 1.0]),
        "linear": result.points[1:-1], "tunnel": result.points[1:-1]}, "t", out)  # fmt: skip
    assert png.stat().st_size > 10_000


def _table(path: Path) -> np.ndarray:
    return np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding=None)


def _command(ranks: int | None, args: list[str]) -> subprocess.CompletedProcess:
    launch = [] if ranks is None else ["mpirun", "-n", str(ranks), "--oversubscribe"]
    argv = ["timeout", "-k", "10", "300", *launch, python(), "-m", "landscape_hpc.geometry", *args]
    env = os.environ | MPI_ROOT_ENV | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_connector_command_writes_short_dirs_csv_and_png(optima, tmp_path: Path) -> None:
    args = [
        "connector",
        f"optima=[{','.join(optima)}]",
        "resolution=2",
        "dense=0",
        "splits=[train]",
        *_hull_args(n_directions=3),
        f"hydra.run.dir={tmp_path}",
    ]
    done = _command(None, args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "connector: short per point" in done.stdout
    table = _table(tmp_path / "short_dirs.csv")
    assert len(table) == (3 + 3 + 3) * 3  # (optima + linear + connector points) × directions
    assert {"lambda_1", "lambda_2", "lambda_3"} <= set(table.dtype.names)
    optimum_rows = table[table["where"] == "optimum"]
    np.testing.assert_allclose(optimum_rows["lambda_1"][::3], [1, 0, 0])
    assert (tmp_path / "short_dirs.png").stat().st_size > 10_000


def test_a_bad_key_ends_the_command_with_one_error_line(optima, tmp_path: Path) -> None:
    args = ["tunnel", f"optima=[{optima[0]},{optima[1]}]", "short_dirs.n_distances=1"]
    done = _command(None, [*args, f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: short_dirs.n_distances=1 must be at least 2"], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.skipif(not mpirun_available(), reason="mpirun is not on PATH")
def test_mpirun_three_ranks_gives_the_serial_short_dirs(optima, tunnel, tmp_path: Path) -> None:
    _, _, serial = tunnel
    args = ["tunnel", f"optima=[{optima[0]},{optima[1]}]", "n_segments=4", "n_dense=5"]
    args += _hull_args()
    done = _command(3, [*args, "plot=false", f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    want = _table(serial / "short_dirs.csv")
    got = _table(tmp_path / "short_dirs.csv")
    assert got.dtype.names == want.dtype.names and len(got) == len(want)
    for name in want.dtype.names:
        if want[name].dtype.kind == "f":
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_off_by_default(optima, tmp_path: Path) -> None:
    cfg = TunnelConfig(
        model=_model(),
        dataset=_dataset(),
        optima=optima[:2],
        n_segments=2,
        n_dense=3,
        hyperplane=HyperplaneConfig(lr=0.01, steps=2, batch_size=None),
        splits=["train"],
        device="cpu",
        out_dir=str(tmp_path),
    )
    assert dataclasses.asdict(cfg)["short_dirs"]["n_directions"] == 0
    result = run_tunnel(cfg)
    assert result.short_dirs is None
    assert not any(p.name.startswith("short_dirs") for p in write_tunnel(result, tmp_path))
