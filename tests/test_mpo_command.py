"""`python -m landscape_hpc.mpo` end to end: outputs, a fit that separates the cells, resume,
and bad input (exit 2, `error:`, no traceback)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from landscape_hpc.cli import compose_config
from landscape_hpc.files.plane import read_plane
from landscape_hpc.mpo.command import run_mpo
from landscape_hpc.mpo.convergence import HISTORY_COLUMNS, read_history_csv

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
TINY = [
    "model=mlp",
    "+model.kwargs.hidden=[32]",
    "dataset.max_samples=400",
    "mask.name=square",
    "mask.size=8",
    "batch_size=64",
    "cells_per_step=8",
    "lr=3e-3",
    "plot=true",
]


def make_cfg(out: Path, *overrides: str):
    return compose_config("mpo", [f"out_dir={out}", *overrides])


def test_tiny_fit_separates_low_and_high_cells_and_writes_every_output(tmp_path):
    metrics = run_mpo(make_cfg(tmp_path, *TINY, "steps=120", "checkpoint_every=40"))
    for split in ("train", "test"):
        m = metrics[split]
        assert m["acc_gap"] == pytest.approx(m["acc_low"] - m["acc_high"])
        assert m["loss_low"] < m["loss_high"]
    assert metrics["train"]["acc_gap"] > 30, metrics
    assert metrics["steps"] == 120 and metrics["max_steps"] == 120
    assert metrics["converged"] is False  # patience 5 × eval_every 50 needs more than 120 steps
    for split in ("train", "test"):
        m = metrics[split]
        assert m["trained_acc_gap"] == pytest.approx(m["trained_acc_low"] - m["trained_acc_high"])
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in history[1:]] == [0, 50, 100, 120]
    assert json.loads((tmp_path / "metrics.json").read_text())["train"] == metrics["train"]
    plane = read_plane(tmp_path / "plane.pt")  # weights_only: tensors and text only
    assert plane["mask"].shape == (8, 8) and "steps: 120" in plane["config"]
    up, right = plane["up"], plane["right"]
    cos = sum((up[k] * right[k]).sum() for k in up) / (
        sum((v * v).sum() for v in up.values()).sqrt()
        * sum((v * v).sum() for v in right.values()).sqrt()
    )
    assert abs(float(cos)) < 1e-5
    with h5py.File(tmp_path / "surface.h5", "r") as f:
        assert f["train_acc"].shape == (8, 8) and f["done"][()].all()
        assert f["xcoordinates"][()].tolist() == (np.arange(8) - 3.5).tolist()
        low = plane["mask"].numpy()[::-1]  # pattern row 0 (top) is the largest y
        acc = f["test_acc"][()]
        assert acc[low].mean() == pytest.approx(metrics["test"]["acc_low"])
    for png in ("mask.png", "loss.png", "acc.png"):
        assert (tmp_path / png).stat().st_size > 1000

    # the same command again: the fit and the surface are resumed, nothing is recomputed. A
    # recomputed fit would give the same numbers (its draws depend only on seed and step), so
    # the check is that no step ran and no cell was evaluated again
    checkpoint = (tmp_path / "checkpoint.pt").read_bytes()
    with h5py.File(tmp_path / "surface.h5", "r+") as f:
        f["test_acc"][0, 0] = -1.0  # a marker a recomputation would overwrite
    again = run_mpo(make_cfg(tmp_path, *TINY, "steps=120", "checkpoint_every=40"))
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint
    assert again["train_seconds"] == metrics["train_seconds"]  # no step added to the fit's time
    with h5py.File(tmp_path / "surface.h5", "r") as f:
        assert f["test_acc"][0, 0] == -1.0


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [PYTHON, "-m", "landscape_hpc.mpo", f"hydra.run.dir={tmp_path}/run", *TINY, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _all_black(tmp_path: Path) -> str:
    path = tmp_path / "black.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize(
    "args, key",
    [
        (["mask=image", "mask.path=/nonexistent/cat.png"], "mask.path"),
        (["mask=image", "mask.path=BLACK"], "no high-loss cells"),
        (["mask=random", "mask.fill_prob=1.5"], "mask.fill_prob"),
        (["cells_per_step=0"], "cells_per_step"),
        (["steps=-1"], "steps"),
        (["memory_mb=0.001"], "memory_mb"),
        (["eval_every=0"], "eval_every=0 must be a positive integer"),
        (["val_samples=0"], "val_samples=0 must be a positive integer"),
        (["dataset.max_samples=4"], "too few to carve a validation split"),
        (["mask=random", "mask.frame=true", "mask.size=3"], "needs mask.size of at least 4×4"),
    ],
)
def test_bad_input_is_a_short_error(tmp_path, args, key):
    args = [a.replace("BLACK", _all_black(tmp_path)) for a in args]
    result = (
        cli(tmp_path, "steps=2", *args)
        if not any("steps" in a for a in args)
        else cli(tmp_path, *args)
    )
    assert result.returncode == 2, result.stderr
    assert "error:" in result.stderr and key in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_that_outputs_its_loss_is_refused(tmp_path):
    from landscape_hpc.errors import UserError

    cfg = make_cfg(
        tmp_path, "model=wedge", "dataset=synthetic", "dataset.shape=[2]", "mask.name=square",
        "mask.size=8", "steps=1",
    )  # fmt: skip
    with pytest.raises(UserError, match="outputs its own loss; MPO fits classifiers"):
        run_mpo(cfg)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_plane_init_xavier_draws_glorot_weights_and_zero_biases(tmp_path):
    import math

    from landscape_hpc.errors import UserError
    from landscape_hpc.mpo.command import build_plane, check_config

    fresh = build_plane(make_cfg(tmp_path, *TINY), (1, 8, 8), 10)
    cfg = make_cfg(tmp_path, *TINY, "plane_init=xavier")
    xavier, again = build_plane(cfg, (1, 8, 8), 10), build_plane(cfg, (1, 8, 8), 10)
    w = xavier.up["layers.1.weight"].detach()  # Linear 64 -> 32
    bound = math.sqrt(6 / (64 + 32))
    assert w.abs().max() <= bound and abs(float(w.std()) - bound / math.sqrt(3)) < 0.05 * bound
    assert float(xavier.up["layers.1.bias"].detach().abs().max()) == 0
    assert float(xavier.origin["layers.1.bias"].detach().abs().max()) == 0
    assert torch.equal(w, again.up["layers.1.weight"].detach())  # seeded
    assert not torch.equal(w, fresh.up["layers.1.weight"].detach())
    assert not torch.equal(w, xavier.origin["layers.1.weight"].detach())
    with pytest.raises(UserError, match="plane_init='glorot' is not known"):
        check_config(make_cfg(tmp_path, *TINY, "plane_init=glorot"))


def test_a_killed_mpo_run_resumes_its_fit_and_surface_and_equals_an_uninterrupted_one(tmp_path):
    """SIGKILL mid-fit (no chance to clean up), then the same command: the fit continues from its
    last checkpoint and the result is the uninterrupted run's, bit for bit (one thread)."""
    args = ["steps=300", "checkpoint_every=10", "early_stop=false", "threads=1", "plot=false"]
    # the final evaluation the same way in both runs: auto's timed choice may differ between them
    args.append("engine.strategy=sequential")
    argv = [PYTHON, "-m", "landscape_hpc.mpo", *TINY, *args]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*argv, f"out_dir={killed}", f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        step = 0
        while time.monotonic() < deadline and proc.poll() is None and step < 40:
            time.sleep(0.1)
            if (killed / "checkpoint.pt").exists():  # replaced atomically: always readable
                step = int(torch.load(killed / "checkpoint.pt", weights_only=True)["step"])
        assert proc.poll() is None, "the fit ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "metrics.json").exists()
    cut = int(torch.load(killed / "checkpoint.pt", weights_only=True)["step"])
    assert 40 <= cut < 300

    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    resumed = subprocess.run(
        [*argv, f"out_dir={killed}", f"hydra.run.dir={killed}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {cut}" in (killed / "mpo.log").read_text()
    whole = tmp_path / "whole"
    straight = subprocess.run(
        [*argv, f"out_dir={whole}", f"hydra.run.dir={whole}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-2000:]
    got, want = (json.loads((d / "metrics.json").read_text()) for d in (killed, whole))
    assert got["steps"] == want["steps"] == 300
    assert got["train"] == want["train"] and got["test"] == want["test"]
    histories = [read_history_csv(d / "history.csv") for d in (killed, whole)]
    timeless = [i for i, c in enumerate(HISTORY_COLUMNS) if c != "seconds"]
    np.testing.assert_array_equal(histories[0][:, timeless], histories[1][:, timeless])
    for name in ("train_loss", "test_acc"):
        with h5py.File(killed / "surface.h5", "r") as f, h5py.File(whole / "surface.h5", "r") as g:
            np.testing.assert_array_equal(f[name][()], g[name][()])
