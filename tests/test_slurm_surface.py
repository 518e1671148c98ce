"""slurm/surface.sh on a real SLURM cluster: `sbatch --wait slurm/surface.sh <overrides>` runs the
surface over the allocation (srun, PMIx, 3 ranks) and writes the same file as one process.

    scripts/slurm_local.sh up
    .venv/bin/python -m pytest tests/test_slurm_surface.py

Skipped, with the reason, where sbatch is missing or sinfo cannot reach a controller.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from mpi_helpers import (
    REPO,
    assert_same_surface,
    check_ok,
    h5py_has_mpi,
    read_surface,
    run_command,
    surface_argv,
    surface_env,
)

JOB_LIMIT_S = 240  # a one-node test cluster starts a job in about a second; the run takes ~30 s
TINY = ["grid.x=[-1,1,5]", "grid.y=[-1,1,4]", "dataset.max_samples=200"]


def test_sbatch_surface_matches_one_process(partition: str, tmp_path: Path) -> None:
    serial_dir, job_dir = tmp_path / "serial", tmp_path / "job"
    # the reference on one core, so one torch thread, as each SLURM worker below has (3 ranks
    # on 2 CPUs): convolutions sum in an order that depends on the thread count
    check_ok(
        run_command(["taskset", "-c", "0", *surface_argv(None, serial_dir, TINY)], surface_env())
    )
    want, _ = read_surface(serial_dir / "surface.h5")

    name = f"surface-test-{uuid.uuid4().hex[:8]}"
    # Options before the script override its #SBATCH lines: 3 ranks on the test node's 2 CPUs
    # (--overcommit), and no GPUs (the local cluster has none; a GPU run would not be bitwise
    # equal to the CPU reference anyway).
    argv = [
        "sbatch",
        "--wait",
        "--parsable",
        f"--job-name={name}",
        f"--partition={partition}",
        "--ntasks=3",
        "--overcommit",
        "--gpus-per-task=0",
        "--time=00:05:00",
        f"--output={tmp_path}/surface-%j.out",
        str(REPO / "slurm" / "surface.sh"),
        f"hydra.run.dir={job_dir}",
        "plot=false",
        *TINY,
    ]
    try:
        submitted = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=JOB_LIMIT_S, check=False
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", f"--name={name}"], check=False, timeout=20)
        pytest.fail(f"sbatch --wait: job {name} not done after {JOB_LIMIT_S} s")
    job_id = submitted.stdout.strip().split(";")[0]
    logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("surface-*.out"))
    assert submitted.returncode == 0, f"sbatch: {submitted.stderr}\njob {job_id} output:\n{logs}"

    got, attrs = read_surface(job_dir / "surface.h5")
    assert_same_surface(got, want)
    assert attrs["io_driver"] == ("mpio" if h5py_has_mpi() else "gather")
    log = (job_dir / "surface.log").read_text()
    assert "rank 1: " in log and "rank 2: " in log, log  # two workers computed
