"""Real SLURM: MPI ranks through srun, accounting through sacct, and submitit end to end.

Needs a running cluster, e.g. the local one-node cluster:

    scripts/slurm_local.sh up
    .venv/bin/python -m pytest tests/test_slurm_cluster.py

Skipped, with the reason, where `sbatch` is not on PATH or `sinfo` cannot reach a controller.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
DEADLINE_S = 60  # per job: a one-node test cluster starts a job in about a second
TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


def _default_partition() -> str | None:
    """The default partition (sinfo marks it with `*`), or None when no controller answers."""
    try:
        listing = subprocess.run(
            ["sinfo", "-h", "-o", "%P"],
            check=False,
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listing.returncode != 0:
        return None
    names = listing.stdout.split()
    marked = [name.rstrip("*") for name in names if name.endswith("*")]
    return (marked or [name.rstrip("*") for name in names] or [None])[0]


def _python() -> Path:
    """The repository's .venv python (mpi4py, submitit), else the one running the tests."""
    return VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)


@pytest.fixture(scope="module")
def partition() -> str:
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch is not on PATH (no SLURM here; scripts/slurm_local.sh up starts one)")
    name = _default_partition()
    if name is None:
        pytest.skip("sinfo cannot reach a SLURM controller (start one: scripts/slurm_local.sh up)")
    return name


def _sacct_state(job_id: str) -> str:
    """The state of the job allocation itself (not its steps); empty until sacct knows the job."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    for line in out.splitlines():
        jid, _, state = line.partition("|")
        if jid == job_id:
            return state.split()[0] if state else ""  # "CANCELLED by 0" -> "CANCELLED"
    return ""


def _wait_for_sacct(job_id: str) -> str:
    """Poll sacct until it reports a terminal state (slurmctld reports to slurmdbd lazily)."""
    deadline = time.monotonic() + DEADLINE_S
    state = ""
    while time.monotonic() < deadline:
        state = _sacct_state(job_id)
        if state in TERMINAL_STATES:
            return state
        time.sleep(0.2)
    pytest.fail(f"sacct reports job {job_id} as {state!r} after {DEADLINE_S} s")


def test_srun_mpi_ranks_and_sacct(partition: str, tmp_path: Path) -> None:
    output = tmp_path / "hello-%j.out"
    hello = "from mpi4py import MPI; c = MPI.COMM_WORLD; print('rank', c.rank, 'size', c.size)"
    script = tmp_path / "hello.sh"
    # --overcommit (-O): 2 tasks even on a 1-CPU node; srun inherits the allocation's 2 tasks.
    script.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --partition={partition}\n"
        "#SBATCH --nodes=1\n"
        "#SBATCH --ntasks=2\n"
        "#SBATCH --overcommit\n"
        "#SBATCH --time=00:02:00\n"
        f"#SBATCH --output={output}\n"
        f'srun -n 2 -O "{_python()}" -c "{hello}"\n'
    )
    submitted = subprocess.run(
        ["sbatch", "--wait", "--parsable", str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        cwd=tmp_path,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    log_path = Path(str(output).replace("%j", job_id))
    log = log_path.read_text() if job_id and log_path.exists() else "(no output file)"
    assert submitted.returncode == 0, f"sbatch --wait: {submitted.stderr}\njob output:\n{log}"

    ranks = sorted(line.split() for line in log.splitlines() if line.startswith("rank "))
    assert ranks == [["rank", "0", "size", "2"], ["rank", "1", "size", "2"]], log

    assert _wait_for_sacct(job_id) == "COMPLETED"


def test_submitit_returns_result(partition: str, tmp_path: Path) -> None:
    import submitit  # a required dependency: a broken install fails here, it does not skip

    # Nested, so cloudpickle sends it by value: the job need not import this test module.
    def answer() -> int:
        return 42

    executor = submitit.AutoExecutor(
        folder=tmp_path / "submitit", cluster="slurm", slurm_python=str(_python())
    )
    executor.update_parameters(timeout_min=5, slurm_partition=partition)
    job = executor.submit(answer)
    deadline = time.monotonic() + DEADLINE_S
    while not job.done(force_check=True):
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"submitit job {job.job_id} not done after {DEADLINE_S} s: {job.state}")
        time.sleep(0.2)
    assert job.result() == 42
    assert _wait_for_sacct(str(job.job_id)) == "COMPLETED"
