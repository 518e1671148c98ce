"""Entry-point plumbing shared by the commands."""

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from mpi_helpers import OutputWatch, progress

from landscape_hpc.cli import INTERRUPTED_EXIT, tune_allocator


def test_tune_allocator_applies_the_glibc_settings_or_says_it_did_not(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_HPC_MALLOC", "default")
    assert tune_allocator() is False
    monkeypatch.delenv("LANDSCAPE_HPC_MALLOC")
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")


ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable


def test_ctrl_c_says_how_to_resume_and_the_rerun_finishes_the_surface(tmp_path):
    out = tmp_path / "s.h5"
    args = [
        PYTHON,
        "-m",
        "landscape_hpc.surface",
        "model=mlp",
        "grid.x=[-1,1,60]",
        "grid.y=[-1,1,60]",
        "chunk_points=4",
        "engine.strategy=sequential",
        "plot=false",
        f"out={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # as typed at a terminal: SIGINT not ignored (a shell's background job, such as a CI runner
    # started with `nohup ... &`, passes SIGINT ignored to its children, and Python keeps that)
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        # wait for the first chunks on the progress bar (the file is not read while written)
        output = OutputWatch(proc)
        started = output.wait_for(lambda text: progress(text) >= 8, timeout_s=300)
        assert started, f"no progress to 8 points:\n{output.text[-2000:]}"
        assert proc.poll() is None, "the surface finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
        stderr = output.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == INTERRUPTED_EXIT, stderr[-2000:]
    assert "interrupted: what was computed is kept" in stderr
    assert "Traceback" not in stderr
    with h5py.File(out, "r") as f:
        kept = int(f["done"][()].sum())
    assert 8 <= kept < 3600

    rerun = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{3600 - kept} to compute" in rerun.stdout + rerun.stderr  # only the rest
    with h5py.File(out, "r") as f:
        assert f["done"][()].all() and np.isfinite(f["train_loss"][()]).all()
