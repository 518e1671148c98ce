"""Training in random hyperplanes (landscape_hpc/geometry/intrinsic_dim.py)."""

import copy
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from landscape_hpc.config import DatasetConfig, IntrinsicDimConfig, ModelConfig
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.intrinsic_dim import d_int, run_subspace
from landscape_hpc.geometry.projection import (
    DenseProjection,
    SparseProjection,
    train_in_subspace,
)
from landscape_hpc.models.nwedge import wedge_distance

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
# the wedge ignores its inputs: the smallest synthetic data set (no scikit-learn import)
WEDGE = [
    *("model=wedge", "model.kwargs.dim=12", "model.kwargs.n=4"),
    *("dataset=synthetic", "dataset.shape=[1]", "dataset.num_train=2", "dataset.num_test=2"),
]


def test_wedge_training_succeeds_exactly_from_d_equal_D_minus_n():
    """Fort & Jastrzebski sec. 3: a random d-plane meets an n-wedge in D dimensions iff
    d >= D - n, so training in it reaches zero loss from there on and not below."""
    dim, n = 12, 4
    theta0 = torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    final = {
        d: train_in_subspace(lambda t: wedge_distance(t, n), theta0, d, lr=0.1).final_loss
        for d in (5, 7, 8, 9, 11)
    }
    assert all(final[d] > 0.1 for d in (5, 7)), final
    assert all(final[d] < 1e-3 for d in (8, 9, 11)), final


@pytest.mark.parametrize("projection", [DenseProjection, SparseProjection])
def test_projections_have_unit_columns_and_sparse_rows(projection):
    like = torch.zeros((), dtype=torch.float64)
    p = projection(500, 7, torch.Generator().manual_seed(3), like)
    matrix = torch.stack([p(e) for e in torch.eye(7, dtype=torch.float64)], dim=1)  # (P, d)
    torch.testing.assert_close(matrix.norm(dim=0), torch.ones(7, dtype=torch.float64))
    c = torch.randn(7, dtype=torch.float64)
    torch.testing.assert_close(p(c), matrix @ c)
    if projection is SparseProjection:
        assert ((matrix != 0).sum(dim=1) == 4).all() and len(p.values) == 500 * 4
        # every column is hit about equally often (Floyd's sampling is uniform)
        hits = (matrix != 0).sum(dim=0).double()
        assert (hits - 500 * 4 / 7).abs().max() < 60
    else:
        assert (matrix != 0).all()


@pytest.mark.parametrize("sparse", [False, True])
def test_training_reaches_the_least_squares_optimum_of_a_quadratic(sparse):
    """loss = |θ - target|²: the optimum in the plane θ0 + P·c is the least-squares solution."""
    g = torch.Generator().manual_seed(1)
    theta0, target = torch.randn(40, generator=g, dtype=torch.float64), torch.zeros(40)
    target = target.double()
    result = train_in_subspace(
        lambda t: (t - target).pow(2).sum(), theta0, 6, sparse=sparse, steps=400, lr=0.1, seed=5
    )
    projection = (SparseProjection if sparse else DenseProjection)(
        40, 6, torch.Generator().manual_seed(5), theta0
    )
    matrix = torch.stack([projection(e) for e in torch.eye(6, dtype=torch.float64)], dim=1)
    best_c = torch.linalg.lstsq(matrix, target - theta0).solution
    best = float((theta0 + matrix @ best_c - target).pow(2).sum())
    assert result.final_loss == pytest.approx(best, rel=1e-4)
    assert result.final_loss < 0.9 * float((theta0 - target).pow(2).sum())
    torch.testing.assert_close(result.theta, theta0 + matrix @ result.c)
    assert len(result.losses) == 400 and result.losses[0] == pytest.approx(
        float((theta0 - target).pow(2).sum())
    )


def test_d_larger_than_the_parameter_count_is_refused():
    with pytest.raises(UserError, match="d=11"):
        train_in_subspace(lambda t: t.sum(), torch.zeros(10), 11)


def test_classifier_gets_better_with_more_dimensions():
    cfg = IntrinsicDimConfig(
        model=ModelConfig(name="mlp", kwargs={"hidden": [16]}),
        dataset=DatasetConfig(max_samples=300),
        dims=[1, 60],
        steps=150,
        device="cpu",
    )
    rows = run_subspace(cfg)
    n_params = 64 * 16 + 16 + 16 * 10 + 10
    assert [(r["d"], r["full"]) for r in rows] == [(1, 0), (60, 0), (n_params, 1)]
    low, high, full = rows
    assert high["final_loss"] < low["final_loss"] - 0.5
    assert high["train_acc"] > low["train_acc"] + 30 and 0 <= high["test_acc"] <= 100
    assert low["success"] == "" and high["rank"] == 0
    # the baseline trains every parameter: at least as good as any subspace
    assert full["final_loss"] < high["final_loss"] and full["test_acc"] > 80
    assert d_int(rows) == (60 if high["test_acc"] >= 0.9 * full["test_acc"] else None)


def test_d_int90_is_the_smallest_d_reaching_90_percent_of_the_full_models_accuracy():
    rows = [
        {"d": 1, "test_acc": 10.0, "full": 0},
        {"d": 10, "test_acc": 71.9, "full": 0},
        {"d": 20, "test_acc": 72.0, "full": 0},  # 90% of 80
        {"d": 50, "test_acc": 79.0, "full": 0},
        {"d": 900, "test_acc": 80.0, "full": 1},
    ]
    assert d_int(rows) == 20
    assert d_int(rows, fraction=0.99) is None  # no d of the grid reaches 79.2
    assert d_int(rows[:4]) is None  # no baseline
    assert d_int([*rows[:4], {"d": 900, "test_acc": float("nan"), "full": 1}]) is None


def test_bn_nets_train_on_batch_statistics_inside_the_subspace():
    """Li et al. train BN nets in train mode: the subspace loss at θ0 is the train-mode loss
    (each chunk normalised by its own statistics), not the eval-mode one of stored statistics."""
    from landscape_hpc.geometry.intrinsic_dim import setup_job

    cfg = IntrinsicDimConfig(
        model=ModelConfig(name="mpo_cnn_bn"),
        dataset=DatasetConfig(max_samples=64),
        dims=[2],
        batch_size=1024,  # one chunk: the whole split's statistics
        device="cpu",
    )
    job = setup_job(cfg, torch.device("cpu"))
    x, y = job.problem.splits["train"].inputs, job.problem.splits["train"].labels
    model = job.problem.model
    with torch.no_grad():
        train_mode = torch.nn.functional.cross_entropy(copy.deepcopy(model).train()(x), y)
        eval_mode = torch.nn.functional.cross_entropy(copy.deepcopy(model).eval()(x), y)
    with torch.no_grad():
        got = job.loss_fn()(job.theta0())
    assert float(got) == pytest.approx(float(train_mode), rel=1e-5)
    assert abs(float(train_mode) - float(eval_mode)) > 1e-3  # the two modes differ here
    row = job.run(2)
    assert 0 <= row["test_acc"] <= 100 and row["full"] == 0


def _command(tmp_path: Path, *args: str, ranks: int = 0) -> subprocess.CompletedProcess:
    launch = ["mpirun", "-n", str(ranks), "--oversubscribe"] if ranks else []
    return subprocess.run(
        [*launch, PYTHON, "-m", "landscape_hpc.geometry", "subspace", *args],
        cwd=tmp_path,
        env={**os.environ, **MPI_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not on PATH")
def test_command_spreads_dims_over_mpi_workers_and_writes_csv_png_summary(tmp_path):
    run_dir = tmp_path / "three"
    done = _command(tmp_path, f"hydra.run.dir={run_dir}", *WEDGE, "dims=[6,8,9]", ranks=3)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(run_dir / "results.csv")
    full = rows.pop()  # the baseline: all 12 coordinates trained
    assert (full["d"], full["full"], full["success"]) == ("12", "1", "1")
    assert [(r["d"], r["success"]) for r in rows] == [("6", "0"), ("8", "1"), ("9", "1")]
    assert {r["rank"] for r in rows} <= {"1", "2"}  # the master only hands out work
    assert (run_dir / "accuracy_vs_d.png").stat().st_size > 10_000
    assert "first success (loss < 0.05): d=8" in done.stdout and "D - n = 8" in done.stdout
    # the number the serial maths gives (the wedge model's θ0 is its init_seed=0 draw)
    theta0 = torch.randn(12, generator=torch.Generator().manual_seed(0))
    serial = train_in_subspace(lambda t: wedge_distance(t, 4), theta0, 6, lr=0.1).final_loss
    assert float(rows[0]["final_loss"]) == pytest.approx(serial, rel=1e-4)


def test_bad_dims_exit_with_a_message(tmp_path):
    done = _command(tmp_path, f"hydra.run.dir={tmp_path}/bad", *WEDGE, "dims=[3,20]")
    assert done.returncode == 2
    assert "dims [20] exceed the 12 trained parameters" in done.stderr
    assert "Traceback" not in done.stderr
