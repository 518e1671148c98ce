"""The n-wedge toy experiments (Fort & Jastrzebski 2019, sec. 3): random hyperplanes succeed
from d = D − n on, and the tunnel between two wedges is below their linear path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_hpc.config import ModelConfig, WedgeConfig, WedgeHyperplaneConfig
from landscape_hpc.geometry.wedge import (
    run_wedge,
    summarize_wedge,
    wedge_optima,
    write_wedge,
)
from landscape_hpc.models import build_model
from landscape_hpc.models.nwedge import wedge_distance

DIM, N = 12, 8  # D − n = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_optima_lie_on_two_wedges_joined_by_a_high_loss_line() -> None:
    a, b = wedge_optima(DIM, N, seed=0)
    assert float(wedge_distance(a, N)) == 0.0 and float(wedge_distance(b, N)) == 0.0
    assert (a[N:] == 0).all() and (b[: DIM - N] == 0).all()
    assert float(wedge_distance((a + b) / 2, N)) > 0.1


@pytest.fixture(scope="module")
def result():
    cfg = WedgeConfig(
        dim=DIM,
        n=N,
        dims=[1, 2, 4, 5, 8],
        trials=2,
        steps=300,
        lr=0.05,
        n_segments=6,
        n_dense=61,
        hyperplane=WedgeHyperplaneConfig(lr=0.01, steps=200),
    )
    return run_wedge(cfg)


def test_random_hyperplanes_succeed_from_d_equal_to_D_minus_n(result) -> None:
    assert (result.success == (result.dims >= DIM - N)).all(), result.final_loss
    assert result.final_loss[result.dims <= 2].min() > 0.01  # far from a wedge, not a near miss
    summary = summarize_wedge(result, DIM, N, 1e-3)
    assert "in every run from d = 4 on (theory: d ≥ D − n = 4)" in summary


def test_wedge_tunnel_is_below_the_linear_path(result) -> None:
    assert result.tunnel_loss.max() < result.linear_loss.max()
    assert result.tunnel_loss.mean() < 0.5 * result.linear_loss.mean()
    assert result.alignment.shape == (5, 5)


def test_written_optima_are_minima_of_model_wedge(result, tmp_path: Path) -> None:
    files = write_wedge(result, tmp_path)
    assert [f.name for f in files] == [
        "wedge_subspace.csv",
        "wedge_tunnel.csv",
        "wedge_a.pt",
        "wedge_b.pt",
    ]
    for name in ("wedge_a.pt", "wedge_b.pt"):
        cfg = ModelConfig(
            name="wedge", kwargs={"dim": DIM, "n": N}, checkpoint=str(tmp_path / name)
        )
        with torch.no_grad():
            assert float(build_model(cfg, (1,), 1)(torch.zeros(3, 1)).max()) == 0.0
    table = np.genfromtxt(tmp_path / "wedge_subspace.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(table["success"], result.success.astype(float))
