"""The `hessian` command's point mode beyond λ_max/λ_min (geometry/curvature_point.py,
spectrum_job.py, curvature_files.py): top-k eigenpairs, the spectral density and per-block
curvature against the explicit Hessian of a small net, the files they write, bad keys, MPI."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.errors import UserError
from landscape_hpc.files.directions import read_direction_file, read_directions
from landscape_hpc.geometry.curvature import run_point
from landscape_hpc.geometry.curvature_files import write_point_files
from landscape_hpc.models import build_model

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
MODEL = ModelConfig(name="mlp", kwargs={"hidden": [8]})  # 64·8 + 8 + 8·10 + 10 = 610 parameters
DATA = DatasetConfig(name="digits", max_samples=120)


def _config(**overrides) -> HessianConfig:
    base = dict(model=MODEL, dataset=DATA, device="cpu", double=True, trace_samples=0)
    return HessianConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def exact():
    """The explicit (P, P) Hessian of the command's problem and the parameters' names/sizes."""
    train = load_dataset(DATA)["train"]
    model = build_model(MODEL, tuple(train.inputs.shape[1:]), 10).double().eval()
    state = {k: v.detach().double() for k, v in model.state_dict().items()}
    keys = [k for k, _ in model.named_parameters()]
    loss, theta = flat_loss(model, state, keys, train.inputs.double(), train.labels)
    return torch.func.hessian(loss)(theta).numpy(), {k: state[k].numel() for k in keys}


def test_top_k_blocks_and_density_equal_the_explicit_hessian(exact, tmp_path):
    hessian, sizes = exact
    values = np.linalg.eigvalsh(hessian)[::-1]
    cfg = _config(k=3, lanczos_tol=1e-9, eigen_steps=400, density=True, n_probes=6,
                  density_steps=30, blocks=["layers"], trace_samples=40)  # fmt: skip
    result = run_point(cfg)
    np.testing.assert_allclose(result.eigenvalues, values[:3], rtol=1e-7)
    assert result.eigen.converged and (result.eigen.residuals < 1e-8 * values[0]).all()
    flat = np.concatenate([v.reshape(-1).numpy() for v in result.eigenvectors[0].values()])
    np.testing.assert_allclose(np.linalg.norm(hessian @ flat - values[0] * flat), 0, atol=1e-7)
    # per block: λ_max of the diagonal block, its trace within 4 standard errors
    assert [b.name for b in result.blocks] == list(
        dict.fromkeys(k.rpartition(".")[0] for k in sizes)
    )
    for block in result.blocks:
        index = block.index.numpy()
        sub = hessian[np.ix_(index, index)]
        assert block.max_eig == pytest.approx(np.linalg.eigvalsh(sub)[-1], rel=1e-6)
        assert block.trace == pytest.approx(np.trace(sub), abs=4 * block.trace_std_error + 1e-12)
    # the density: its SLQ trace equals the first moment of its own nodes; the grid integrates to 1
    d = result.density
    assert d.nodes.shape == (6, 30) and np.trapezoid(d.values, d.grid) == pytest.approx(1, abs=1e-4)
    assert d.nodes.max() == pytest.approx(values[0], rel=1e-6)  # the top node converges first
    files = {p.name: p for p in write_point_files(result, cfg, tmp_path)}
    with open(files["hessian_eigen.csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["eigenvalue"]) for r in rows] == pytest.approx(list(result.eigenvalues))
    with open(files["hessian_slq.csv"]) as f:
        assert len(list(csv.DictReader(f))) == 6 * 30
    for name in ("hessian_density.png", "hessian_blocks.png"):
        assert files[name].stat().st_size > 10_000
    # the eigenvectors file: all three read back, x and y as a surface's axes
    origin = {k: v.double() for k, v in result.eigenvectors[0].items()}
    vectors, attrs = read_direction_file(files["hessian_eigenvectors.h5"], origin)
    assert len(vectors) == 3 and attrs["eigenvalues"] == pytest.approx(list(result.eigenvalues))
    axes = read_directions(files["hessian_eigenvectors.h5"], origin, list(origin))
    assert len(axes) == 2
    for got, want in zip(axes, result.eigenvectors[:2]):
        for key in want:
            torch.testing.assert_close(got[key], want[key].float().double())


def test_the_eigenvectors_file_is_a_surface_s_directions(tmp_path):
    cfg = _config(k=2, lanczos_tol=1e-6, lanczos_steps=5)
    result = run_point(cfg)
    write_point_files(result, _config(k=2, plot=False), tmp_path)
    path = tmp_path / "hessian_eigenvectors.h5"
    out = tmp_path / "s.h5"
    overrides = [f"out={out}", "plot=false", "model=mlp", "+model.kwargs.hidden=[8]",
                 "dataset.max_samples=120", "grid.x=[-0.5,0.5,3]", "grid.y=[-0.5,0.5,3]",
                 f"directions.load={path}"]  # fmt: skip
    compute_surface(compose_config("surface", overrides))
    model = build_model(MODEL, (1, 8, 8), 10)
    origin = {k: v.detach() for k, v in model.state_dict().items()}
    axes = read_directions(out, origin, [k for k, _ in model.named_parameters()])
    for got, want in zip(axes, result.eigenvectors[:2]):
        for key in want:
            torch.testing.assert_close(got[key], want[key].float())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"k": 611}, "k=611 is larger than the model's 610 parameters"),
        ({"k": -1}, "k=-1 must be 0"),
        ({"n_probes": 0, "density": True}, "n_probes=0 must be at least 1"),
        ({"density_steps": 0}, "density_steps=0 must be at least 1"),
        ({"density_sigma": 0.0}, "density_sigma=0.0 must be > 0"),
        ({"blocks": ["conv*"]}, "blocks: pattern 'conv\\*' matches no parameter"),
        ({"eigen_steps": 0}, "eigen_steps=0 must be at least 1"),
    ],
)
def test_bad_keys_are_one_line_each(overrides, message):
    with pytest.raises(UserError, match=message) as err:
        run_point(_config(lanczos_steps=3, **overrides))
    assert "\n" not in str(err.value)


def test_an_unconverged_top_k_run_warns_with_its_residual(caplog):
    result = run_point(_config(k=4, eigen_steps=5, lanczos_tol=1e-8, lanczos_steps=3))
    assert not result.eigen.converged
    assert "top-4 Lanczos run did not converge within eigen_steps=5" in caplog.text
    assert f"{result.eigen.worst_relative_residual():.2g}·|λ_1|" in caplog.text


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not on PATH")
def test_density_probes_and_blocks_spread_over_mpi_workers_equal_the_serial_run(tmp_path):
    keys = ["density=true", "n_probes=4", "density_steps=12", "blocks=[layers]", "k=2",
            "double=true", "trace_samples=8", "lanczos_steps=5", "plot=false"]  # fmt: skip
    serial = run_point(_config(density=True, n_probes=4, density_steps=12, blocks=["layers"],
                               k=2, trace_samples=8, lanczos_steps=5))  # fmt: skip
    done = subprocess.run(
        [
            *("mpirun", "-n", "3", "--oversubscribe", PYTHON, "-m", "landscape_hpc.geometry"),
            *("hessian", f"hydra.run.dir={tmp_path}", "+model.kwargs.hidden=[8]"),
            *("dataset.max_samples=120", "device=cpu", *keys),
        ],
        cwd=tmp_path,
        env={**os.environ, **MPI_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "hessian_slq.csv") as f:
        nodes = np.array([float(r["node"]) for r in csv.DictReader(f)]).reshape(4, 12)
    np.testing.assert_allclose(nodes, serial.density.nodes, rtol=1e-9, atol=1e-12)
    with open(tmp_path / "hessian_blocks.csv") as f:
        blocks = list(csv.DictReader(f))
    got = [float(b["max_eig"]) for b in blocks]
    assert got == pytest.approx([b.max_eig for b in serial.blocks], rel=1e-9)
    with open(tmp_path / "hessian_eigen.csv") as f:
        eig = [float(r["eigenvalue"]) for r in csv.DictReader(f)]
    assert eig == pytest.approx(list(serial.eigenvalues), rel=1e-9)
