"""The BN sweep's SLURM routes on a real cluster give the table of one process:
`sbatch --wait slurm/bn_sweep.sh <overrides>` (MPI over the allocation, parallel HDF5) and
`python -m landscape_hpc.mpo -m +experiment=bn_sweep hydra/launcher=submitit_slurm` (one SLURM job
per fit), gathered by `python -m landscape_hpc.sweep report`.

    scripts/slurm_local.sh up
    .venv/bin/python -m pytest tests/test_slurm_sweep.py

Skipped, with the reason, where sbatch is missing or sinfo cannot reach a controller.
"""

from __future__ import annotations

import subprocess
import uuid

import h5py
import pytest
from mpi_helpers import REPO, check_ok, h5py_has_mpi, python
from test_sweep import N_JOBS, TINY, assert_same_table, env, multirun_argv, run

from landscape_hpc.files.sweep import read_jobs
from landscape_hpc.sweep import report

JOB_LIMIT_S = 300


@pytest.fixture(scope="module")
def one_process(partition: str, tmp_path_factory) -> list[dict]:
    """The reference: the same sweep in one process (a world of one, rank 0 writes)."""
    out = tmp_path_factory.mktemp("serial")
    check_ok(run([python(), "-m", "landscape_hpc.sweep", f"hydra.run.dir={out}", *TINY]))
    return read_jobs(out / "sweep.h5")


def test_sbatch_bn_sweep_gives_the_one_process_table(partition, one_process, tmp_path):
    name = f"bn-sweep-test-{uuid.uuid4().hex[:8]}"
    # Options before the script override its #SBATCH lines: 3 ranks on the test node's 2 CPUs
    # (--overcommit), no GPUs (the local cluster has none).
    argv = [
        "sbatch", "--wait", "--parsable", f"--job-name={name}", f"--partition={partition}",
        "--ntasks=3", "--overcommit", "--gpus-per-task=0", "--time=00:05:00",
        f"--output={tmp_path}/bn_sweep-%j.out", str(REPO / "slurm" / "bn_sweep.sh"),
        f"hydra.run.dir={tmp_path / 'job'}", *TINY,
    ]  # fmt: skip
    try:
        submitted = subprocess.run(
            argv, cwd=REPO, env=env(), capture_output=True, text=True, timeout=JOB_LIMIT_S
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", f"--name={name}"], check=False, timeout=20)
        pytest.fail(f"sbatch --wait: job {name} not done after {JOB_LIMIT_S} s")
    logs = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("bn_sweep-*.out"))
    assert submitted.returncode == 0, f"sbatch: {submitted.stderr}\njob output:\n{logs}"

    rows = read_jobs(tmp_path / "job" / "sweep.h5")
    assert len(rows) == N_JOBS and {r["rank"] for r in rows} <= {1, 2}
    assert_same_table(rows, one_process)
    assert (tmp_path / "job" / "summary.csv").exists()
    with h5py.File(tmp_path / "job" / "sweep.h5", "r") as f:
        assert f.attrs["io_driver"] == ("mpio" if h5py_has_mpi() else "gather")


def test_submitit_slurm_multirun_gives_the_one_process_table(partition, one_process, tmp_path):
    out = tmp_path / "multirun"
    argv = multirun_argv(
        out,
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.cpus_per_task=1",
        f"hydra.launcher.submitit_folder={tmp_path}/submitit/%j",
    )
    done = run(argv, limit_s=JOB_LIMIT_S)
    check_ok(done)
    report_run = run([python(), "-m", "landscape_hpc.sweep", "report", str(out)])
    check_ok(report_run)
    got, _ = report.load_rows(out)
    assert len(got) == N_JOBS
    assert_same_table(got, one_process)
