"""The `curve` command (geometry/curve_command.py): its files against its result, a run stopped
and resumed against one straight through (bit for bit, SGD and Adam), the checkpoint read with
weights_only=True, another job's checkpoint refused, and the command line end to end."""

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
from mpi_helpers import REPO, python

import landscape_hpc as lh
from landscape_hpc.config import CurveConfig, EngineConfig
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.curve_command import CHECKPOINT, _command, run_curve

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _cfg(optima: list[str], out: Path, **keys) -> CurveConfig:
    values = dict(
        model=_model(),
        dataset=_dataset(),
        optima=optima[:2],
        steps=12,
        lr=0.05,
        train_batch_size=64,
        t=[0.0, 1.0, 5],
        checkpoint_every=5,
        engine=EngineConfig(bn="recompute", strategy="vmap"),
        device="cpu",
        out_dir=str(out),
        plot=False,
    )
    return CurveConfig(**{**values, **keys})


def test_the_files_hold_the_result(mlp_optima, tmp_path):
    cfg = _cfg(mlp_optima, tmp_path, plot=True)
    report = _command(cfg, None)
    result = run_curve(cfg)  # the finished checkpoint: evaluated again, nothing trained
    assert "loss barrier (train): curve" in report.summary
    for name in ("curve.csv", "curve.h5", "line.h5", "curve_bend.pt", CHECKPOINT):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    for kind in ("curve", "line"):
        ds = lh.load(tmp_path / f"{kind}.h5")
        assert np.allclose(ds.x, [0, 0.25, 0.5, 0.75, 1])
        for split in ("train", "test"):
            np.testing.assert_array_equal(ds[f"{split}_loss"], result.metrics[split][kind][0])
            assert ds.attrs[f"barrier_{split}"] == result.barriers[split][kind][0]
    table = np.genfromtxt(tmp_path / "curve.csv", delimiter=",", names=True)
    np.testing.assert_allclose(table["test_loss_curve"], result.metrics["test"]["curve"][0])
    bend = torch.load(tmp_path / "curve_bend.pt", weights_only=True)
    assert all(torch.equal(bend[k], v) for k, v in result.bend.items())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_resumed_run_is_the_run_straight_through(mlp_optima, tmp_path, optimizer):
    straight = run_curve(_cfg(mlp_optima, tmp_path / "a", optimizer=optimizer, lr=0.01))
    run_curve(_cfg(mlp_optima, tmp_path / "b", optimizer=optimizer, lr=0.01, steps=7))
    saved = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    assert int(saved["step"]) == 7 and all(isinstance(v, torch.Tensor) for v in saved.values())
    resumed = run_curve(_cfg(mlp_optima, tmp_path / "b", optimizer=optimizer, lr=0.01))
    assert resumed.training.losses == straight.training.losses
    assert all(torch.equal(resumed.bend[k], v) for k, v in straight.bend.items())
    np.testing.assert_array_equal(
        resumed.metrics["test"]["curve"][0], straight.metrics["test"]["curve"][0]
    )


def test_another_jobs_checkpoint_is_refused(mlp_optima, tmp_path):
    run_curve(_cfg(mlp_optima, tmp_path, steps=5))
    with pytest.raises(UserError, match="checkpoint of another curve"):
        run_curve(_cfg(mlp_optima, tmp_path, steps=5, seed=1))
    with pytest.raises(UserError, match="exactly two"):
        run_curve(dataclasses.replace(_cfg(mlp_optima, tmp_path), optima=mlp_optima[:1]))


def test_the_command_line(mlp_optima, tmp_path):
    args = [
        "curve",
        f"optima=[{mlp_optima[0]},{mlp_optima[1]}]",
        f"+model.kwargs.hidden=[{HIDDEN[0]}]",
        f"dataset.max_samples={MAX_SAMPLES}",
        "kind=polychain",
        "steps=6",
        "t=[0,1,3]",
        "device=cpu",
        f"hydra.run.dir={tmp_path}",
    ]
    argv = ["timeout", "-k", "10", "240", python(), "-m", "landscape_hpc.geometry", *args]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "polychain curve between" in done.stdout and "loss barrier (test)" in done.stdout
    assert np.allclose(lh.load(tmp_path / "curve.h5").x, [0, 0.5, 1])


def test_plane_true_writes_the_plane(mlp_optima, tmp_path):
    cfg = _cfg(mlp_optima, tmp_path, plot=True, plane=True, plane_num=4, checkpoint_every=0)
    report = _command(cfg, None)
    assert "plane train loss" in report.summary
    assert (tmp_path / "curve_plane.png").stat().st_size > 10_000
    ds = lh.load(tmp_path / "plane.h5")
    assert ds.train_loss.shape == (4, 4) and np.isfinite(ds.test_loss).all()
    xs, ys = np.asarray(ds.attrs["plane_points_x"]), np.asarray(ds.attrs["plane_points_y"])
    assert xs[0] == ys[0] == ys[2] == 0 and xs[2] > 0 and ys[1] > 0  # θ_a, bend, θ_b
    assert ds.x.min() < 0 < xs[2] < ds.x.max() and ds.y.min() < 0 < ys[1] < ds.y.max()
    curve_x, curve_y = ds.attrs["plane_curve_x"], ds.attrs["plane_curve_y"]
    assert len(curve_x) == 5 and curve_x[-1] == pytest.approx(xs[2]) and max(curve_y) > 0
    assert np.allclose(ds.attrs["plane_line_y"], 0)
    assert len(ds.attrs["basis"]) == 2  # u and v, as state dicts
    with pytest.raises(UserError, match="plane_num"):
        run_curve(_cfg(mlp_optima, tmp_path / "bad", plane=True, plane_num=1))


def test_a_killed_run_resumes_to_the_run_straight_through(mlp_optima, tmp_path):
    """SIGKILL once the first checkpoint is on disk (the command's own process, no clean-up):
    the rerun continues from it and ends with the bend of an uninterrupted run, bit for bit."""
    import signal
    import time

    args = [
        "curve",
        f"optima=[{mlp_optima[0]},{mlp_optima[1]}]",
        f"+model.kwargs.hidden=[{HIDDEN[0]}]",
        f"dataset.max_samples={MAX_SAMPLES}",
        "steps=400",
        "checkpoint_every=20",
        "t=[0,1,3]",
        "device=cpu",
        "plot=false",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}

    def argv(folder: Path) -> list[str]:
        return [python(), "-m", "landscape_hpc.geometry", *args, f"hydra.run.dir={folder}"]

    straight = subprocess.run(argv(tmp_path / "a"), cwd=REPO, env=env, capture_output=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = subprocess.Popen(argv(tmp_path / "b"), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 200
    while not (tmp_path / "b" / CHECKPOINT).exists() and killed.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 200 s"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    if killed.returncode != -signal.SIGKILL:
        pytest.skip("the run finished before it could be killed (a very fast machine)")
    step = int(torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["step"])
    assert 0 < step < 400
    resumed = subprocess.run(argv(tmp_path / "b"), cwd=REPO, env=env, capture_output=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = torch.load(tmp_path / "a" / "curve_bend.pt", weights_only=True)
    got = torch.load(tmp_path / "b" / "curve_bend.pt", weights_only=True)
    assert want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)
