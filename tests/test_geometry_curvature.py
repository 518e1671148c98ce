"""Hessian eigenvalues at a point and over a surface grid (landscape_hpc/geometry/curvature.py)."""

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from mpi_helpers import OutputWatch, progress, surface_env
from torch import nn

from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.curvature import run_map, run_point, summarize_map, write_point
from landscape_hpc.geometry.figures import plot_maps
from landscape_hpc.models import build_model

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
TINY_DATA = ["dataset=synthetic", "dataset.shape=[3]", "dataset.num_classes=3"]
TINY = ["model=mlp", "+model.kwargs.hidden=[3]", *TINY_DATA, "dataset.num_train=40"]
TINY_PARAMS = 3 * 3 + 3 + 3 * 3 + 3  # Linear(3, 3) and Linear(3, 3)


class LeastSquares(nn.Module):
    """A quadratic landscape: per-sample loss ½(x·w − Σx)², so H = XᵀX / N exactly."""

    loss_output = True

    def __init__(self, features: int = 4) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x @ self.w - x.sum(-1)) ** 2  # (B,)


def _config(**overrides) -> HessianConfig:
    base = dict(model=ModelConfig(name="mlp"), dataset=DatasetConfig(), device="cpu")
    return HessianConfig(**{**base, **overrides})


def test_quadratic_model_eigenvalues_are_exact_and_the_trace_close():
    data = DatasetConfig(name="synthetic", shape=[4], num_train=30)
    model = ModelConfig(name="custom", target="test_geometry_curvature.LeastSquares")
    cfg = _config(model=model, dataset=data, lanczos_steps=4, double=True, trace_samples=300)
    result = run_point(cfg)
    x = load_dataset(data)["train"].inputs.double()  # (30, 4)
    h = x.T @ x / len(x)
    exact = torch.linalg.eigvalsh(h)
    assert result.max_eig == pytest.approx(float(exact[-1]), rel=1e-10)
    assert result.min_eig == pytest.approx(float(exact[0]), rel=1e-8)
    # Hutchinson with Rademacher probes: variance 2·Σ_{i≠j} H_ij² per probe; allow 4 std errors
    off_diagonal = h - torch.diag(torch.diag(h))
    std_error = float((2 * off_diagonal.pow(2).sum() / cfg.trace_samples).sqrt())
    assert result.trace == pytest.approx(float(torch.trace(h)), abs=4 * std_error)
    assert result.trace != pytest.approx(float(torch.trace(h)), abs=1e-9)  # an estimate
    assert result.num_params == 4 and result.num_samples == 30


def _surface(out: Path) -> Path:
    overrides = [f"out={out}", "plot=false", *TINY, "grid.x=[-1,1,3]", "grid.y=[-1,1,3]"]
    return compute_surface(compose_config("surface", overrides))


@pytest.fixture(scope="module")
def surface_file(tmp_path_factory) -> Path:
    return _surface(tmp_path_factory.mktemp("surface") / "s.h5")


@pytest.fixture()
def surface(surface_file, tmp_path) -> Path:
    copy = tmp_path / "s.h5"
    shutil.copy(surface_file, copy)
    return copy


def _datasets(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None
        )
    return out


def _exact_extremes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ny, nx) largest and smallest eigenvalues of the exact Hessian at each grid point."""
    model = build_model(ModelConfig(name="mlp", kwargs={"hidden": [3]}), (3,), 3).double()
    split = load_dataset(DatasetConfig(name="synthetic", shape=[3], num_classes=3, num_train=40))
    inputs, labels = split["train"].inputs.double(), split["train"].labels
    origin = {k: v.double() for k, v in model.state_dict().items()}
    data = _datasets(path)
    x, y = data["xcoordinates"], data["ycoordinates"]
    hi, lo = np.zeros((len(y), len(x))), np.zeros((len(y), len(x)))
    for iy, cy in enumerate(y):
        for ix, cx in enumerate(x):
            state = dict(origin)
            for axis, c in (("x", cx), ("y", cy)):
                for key in data:
                    if key.startswith(f"directions/{axis}/"):
                        name = key.split("/", 2)[2]
                        state[name] = state[name] + c * torch.from_numpy(data[key]).double()
            loss, theta = flat_loss(model, state, list(state), inputs, labels)
            eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta))
            hi[iy, ix], lo[iy, ix] = float(eig[-1]), float(eig[0])
    return hi, lo


def test_map_over_a_3x3_surface_equals_the_exact_hessian_and_keeps_the_rest(surface):
    before = _datasets(surface)
    # lanczos_tol=0: every one of the TINY_PARAMS steps, so the Ritz values are the eigenvalues
    cfg = _config(surface=str(surface), lanczos_steps=TINY_PARAMS, lanczos_tol=0.0, double=True)
    info = run_map(cfg)
    assert info["points"] == 9 and info["num_params"] == TINY_PARAMS
    after = _datasets(surface)
    assert sorted(after) == sorted([*before, "max_eig", "min_eig", "hessian_done"])
    assert after["hessian_done"].dtype == np.uint8 and (after["hessian_done"] == 1).all()
    for name, values in before.items():
        np.testing.assert_array_equal(after[name], values, err_msg=name)
    hi, lo = _exact_extremes(surface)
    # the map builds each point's weights in float32 (as the surface did), the reference in float64
    scale = np.abs(hi).max()
    np.testing.assert_allclose(after["max_eig"], hi, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(after["min_eig"], lo, rtol=0, atol=1e-6 * scale)
    assert (lo < 0).any() and not np.allclose(hi, hi[0, 0])  # a curved map, not a constant
    png = plot_maps(surface, surface.with_name("map.png"))
    assert png.stat().st_size > 20_000


def test_map_resumes_only_missing_points_and_refuses_other_settings(surface):
    cfg = _config(surface=str(surface), lanczos_steps=8)
    run_map(cfg)
    with h5py.File(surface, "r+") as f:
        full = f["max_eig"][()]
        f["max_eig"][0, 0] = 1234.5  # a value that must not be recomputed
        f["min_eig"][2, 1] = np.nan  # one pending point: not done
        f["hessian_done"][2, 1] = 0
    info = run_map(cfg)
    assert info["points"] == 1
    after = _datasets(surface)
    assert after["max_eig"][0, 0] == 1234.5
    np.testing.assert_allclose(after["max_eig"][2, 1], full[2, 1], rtol=1e-12)
    digest = hashlib.sha256(surface.read_bytes()).hexdigest()
    with pytest.raises(UserError, match="lanczos_steps: file has 8, this run 12"):
        run_map(_config(surface=str(surface), lanczos_steps=12))
    assert hashlib.sha256(surface.read_bytes()).hexdigest() == digest
    info = run_map(_config(surface=str(surface), lanczos_steps=12, overwrite=True))
    assert info["points"] == 9 and _datasets(surface)["max_eig"][0, 0] != 1234.5


def test_a_diverged_point_stays_done_and_maps_without_a_done_mask_resume(surface):
    cfg = _config(surface=str(surface), lanczos_steps=8)
    run_map(cfg)
    full = _datasets(surface)
    with h5py.File(surface, "r+") as f:
        f["max_eig"][1, 1] = f["min_eig"][1, 1] = np.nan  # computed, diverged: done stays 1
    info = run_map(cfg)
    assert info["points"] == 0
    after = _datasets(surface)
    assert np.isnan(after["max_eig"][1, 1]) and after["hessian_done"][1, 1] == 1
    assert "9 of 9 done in all (1 diverged: NaN eigenvalues)" in summarize_map(surface, info)
    # maps written before the done mask: a point is done where neither eigenvalue is NaN
    with h5py.File(surface, "r+") as f:
        del f["hessian_done"]
        f["max_eig"][0, 0] = 1234.5  # done: must not be recomputed
        f["min_eig"][2, 1] = np.nan  # not done
    info = run_map(cfg)
    assert info["points"] == 2  # [1, 1] (NaN) and [2, 1]
    after = _datasets(surface)
    assert (after["hessian_done"] == 1).all() and after["max_eig"][0, 0] == 1234.5
    for name in ("max_eig", "min_eig"):
        for index in ((1, 1), (2, 1)):
            np.testing.assert_allclose(after[name][index], full[name][index], rtol=1e-12)


def test_a_file_that_is_not_a_surface_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run_map(_config(surface=str(tmp_path / "missing.h5")))
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["xcoordinates"] = np.zeros(3)
    with pytest.raises(UserError, match="no `config` attribute"):
        run_map(_config(surface=str(tmp_path / "plain.h5")))


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not on PATH")
def test_map_over_mpi_workers_equals_the_serial_map(surface, tmp_path):
    serial_copy = tmp_path / "serial.h5"
    shutil.copy(surface, serial_copy)
    run_map(_config(surface=str(serial_copy), lanczos_steps=TINY_PARAMS, double=True))
    done = subprocess.run(
        [
            *("mpirun", "-n", "3", "--oversubscribe", PYTHON, "-m", "landscape_hpc.geometry"),
            *("hessian", f"hydra.run.dir={tmp_path}/run", f"surface={surface}"),
            *(f"lanczos_steps={TINY_PARAMS}", "double=true"),
        ],
        cwd=tmp_path,
        env={**os.environ, **MPI_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    spread, serial = _datasets(surface), _datasets(serial_copy)
    for name in ("max_eig", "min_eig"):
        np.testing.assert_allclose(spread[name], serial[name], rtol=1e-10, err_msg=name)
    assert "9 points computed now, 9 of 9 done in all" in done.stdout
    assert surface.with_name("s_hessian.png").stat().st_size > 20_000


def test_lanczos_report_in_the_maps_and_old_settings_refused_with_the_fix(surface, caplog):
    import json

    run_map(_config(surface=str(surface), lanczos_steps=3, lanczos_tol=1e-12))
    with h5py.File(surface, "r") as f:
        settings = json.loads(f["max_eig"].attrs["hessian"])
        report = json.loads(f["max_eig"].attrs["lanczos"])
    assert settings["lanczos_tol"] == 1e-12 and settings["lanczos_steps"] == 3
    assert report["points"] == 9 and report["iterations_max"] == 3
    assert report["not_converged"] == 9 and len(report["not_converged_points"]) == 9
    assert "Lanczos did not converge at 9 of 9 points" in caplog.text
    # maps made before lanczos_tol existed: their settings lack it (a fixed number of steps)
    with h5py.File(surface, "r+") as f:
        del settings["lanczos_tol"]
        f["max_eig"].attrs["hessian"] = json.dumps(settings)
    with pytest.raises(UserError, match="pass lanczos_tol=0 to resume them"):
        run_map(_config(surface=str(surface), lanczos_steps=3))
    info = run_map(_config(surface=str(surface), lanczos_steps=3, lanczos_tol=0.0))
    assert info["points"] == 0  # recognised: nothing to recompute


def test_point_csv_reports_the_lanczos_iterations_and_convergence(tmp_path):
    import csv

    from landscape_hpc.geometry.curvature import write_point

    data = DatasetConfig(name="synthetic", shape=[4], num_train=30)
    model = ModelConfig(name="custom", target="test_geometry_curvature.LeastSquares")
    cfg = _config(model=model, dataset=data, lanczos_steps=4, lanczos_tol=1e-6, double=True)
    cfg.trace_samples = 0
    result = run_point(cfg)
    with open(write_point(result, cfg, tmp_path)) as f:
        (row,) = csv.DictReader(f)
    assert row["lanczos_converged"] == "True" and int(row["lanczos_steps"]) <= 4
    assert float(row["lanczos_tol"]) == 1e-6 and int(row["lanczos_max_steps"]) == 4
    assert float(row["lanczos_residual"]) < 1e-6


# digits through a net whose every forward sleeps 20 ms: each map point (4 Lanczos steps) takes
# ≥ 0.1 s on any machine, so a kill after a few points lands mid-map
SLOW_NET = [
    "model=custom",
    "model.target=custom_objects.diverging_net",
    "+model.kwargs.delay_s=0.02",
    "+model.kwargs.inf_factor=1e6",  # finite everywhere: every point a real eigenvalue pair
    "+model.kwargs.nan_factor=1e6",
    "dataset.max_samples=100",
]
KILL_AFTER = 5  # points the progress bar has shown done


def test_a_killed_map_resumes_only_its_missing_points_and_equals_an_uninterrupted_one(tmp_path):
    """SIGKILL mid-map (no clean-up): the points written so far stay done, the same command
    computes only the rest, and the maps equal those of a run never interrupted."""
    grid = ["grid.x=[-1,1,6]", "grid.y=[-1,1,6]"]  # 36 points
    killed = compute_surface(
        compose_config("surface", [f"out={tmp_path / 'killed.h5'}", "plot=false", *SLOW_NET, *grid])
    )
    whole = tmp_path / "whole.h5"
    shutil.copy(killed, whole)

    def argv(path: Path, run: str) -> list[str]:
        return [
            *(PYTHON, "-m", "landscape_hpc.geometry", "hessian", f"surface={path}"),
            *(f"hydra.run.dir={tmp_path / run}", "lanczos_steps=4", "lanczos_tol=0"),
            *("plot=false", *SLOW_NET[:5]),  # the custom target, trusted from the command line
        ]

    env = {**surface_env(), **MPI_ENV}
    proc = subprocess.Popen(
        argv(killed, "a"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output = OutputWatch(proc)
        started = output.wait_for(lambda text: progress(text) >= KILL_AFTER, timeout_s=240)
        assert started, f"no progress to {KILL_AFTER} points:\n{output.text[-3000:]}"
        assert proc.poll() is None, "the map ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = _datasets(killed)  # readable after the kill: every written point was flushed
    done = partial["hessian_done"].astype(bool)
    assert KILL_AFTER <= done.sum() < 36, done.sum()
    assert np.isnan(partial["max_eig"][~done]).all() and np.isfinite(partial["max_eig"][done]).all()

    def finish(path: Path, run: str) -> str:
        ran = subprocess.run(argv(path, run), env=env, capture_output=True, text=True, timeout=600)
        assert ran.returncode == 0, ran.stderr[-3000:]
        return ran.stdout

    n_left = 36 - int(done.sum())
    assert f"{n_left} points computed now, 36 of 36 done in all" in finish(killed, "b")
    assert "36 points computed now" in finish(whole, "c")
    resumed, uninterrupted = _datasets(killed), _datasets(whole)
    for name in ("max_eig", "min_eig"):
        np.testing.assert_array_equal(resumed[name][done], partial[name][done], err_msg=name)
        np.testing.assert_array_equal(resumed[name], uninterrupted[name], err_msg=name)


def test_precision_tf32_is_fp32_on_a_cpu_and_bf16_moves_the_eigenvalues_within_its_bound():
    # bf16 rounds the inputs and weights of each linear layer's products (u = 2^-8 relative) in
    # the forward, the backward and the double backward of the Hessian-vector product: to first
    # order the product, and so each Ritz value, moves by at most 2u · 3L of the operator's
    # scale |λ_max|, for L = 3 linears of the registry's mlp: 7e-2 (1e-3 measured)
    base = dict(dataset=DatasetConfig(max_samples=200), lanczos_steps=10, lanczos_tol=0.0)
    base["trace_samples"] = 0
    fp32, tf32, bf16 = (run_point(_config(**base, precision=p)) for p in ("fp32", "tf32", "bf16"))
    assert (tf32.max_eig, tf32.min_eig) == (fp32.max_eig, fp32.min_eig)
    bound = 2 * 2.0**-8 * 3 * 3 * abs(fp32.max_eig)
    for got, want in ((bf16.max_eig, fp32.max_eig), (bf16.min_eig, fp32.min_eig)):
        assert 0 < abs(got - want) < bound, (got, want, bound)


def test_precision_is_checked_recorded_and_maps_of_another_precision_are_refused(surface, tmp_path):
    with pytest.raises(UserError, match="precision"):
        run_point(_config(precision="fp16"))
    with pytest.raises(UserError, match="drop double=true"):
        run_point(_config(precision="bf16", double=True))
    run_map(_config(surface=str(surface), lanczos_steps=4, precision="bf16"))
    with pytest.raises(UserError, match="precision: file has 'bf16', this run None"):
        run_map(_config(surface=str(surface), lanczos_steps=4))
    cfg = _config(dataset=DatasetConfig(max_samples=50), lanczos_steps=3, trace_samples=0)
    cfg.precision = "tf32"
    with open(write_point(run_point(cfg), cfg, tmp_path)) as f:
        assert next(csv.DictReader(f))["precision"] == "tf32"
