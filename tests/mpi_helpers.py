"""Running `landscape_hpc.surface` as a user would (mpirun, sbatch, one process) and reading back
what it wrote; shared by tests/test_mpi.py and tests/test_slurm_surface.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
# OpenMPI refuses to run as root without these (containers, CI).
MPI_ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
TIMED_OUT = 124  # exit status of `timeout` when the limit is reached


def python() -> str:
    """The repository's .venv python (mpi4py, h5py), else the one running the tests."""
    return str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))


def mpirun_available() -> bool:
    return shutil.which("mpirun") is not None


def h5py_has_mpi() -> bool:
    return bool(h5py.get_config().mpi)


def surface_env() -> dict[str, str]:
    """The environment of a run: the tests folder importable (model=custom targets)."""
    env = {**os.environ, **MPI_ROOT_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    return env


def surface_argv(
    ranks: Optional[int],
    run_dir: Optional[Path],
    overrides: list[str],
    mpirun_options: tuple[str, ...] = (),
) -> list[str]:
    """The surface command: under `mpirun -n ranks --oversubscribe`, or one process for None."""
    launch = [] if ranks is None else ["mpirun", "-n", str(ranks), "--oversubscribe"]
    run_dir_override = [] if run_dir is None else [f"hydra.run.dir={run_dir}"]
    return [
        *launch,
        *mpirun_options,
        python(),
        "-m",
        "landscape_hpc.surface",
        *run_dir_override,
        "plot=false",
        *overrides,
    ]


def run_surface(
    ranks: Optional[int],
    run_dir: Optional[Path],
    overrides: list[str],
    limit_s: int = 150,
    cwd: Path = REPO,
    mpirun_options: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Runs the surface command (see run_command)."""
    argv = surface_argv(ranks, run_dir, overrides, mpirun_options)
    return run_command(argv, surface_env(), limit_s, cwd)


def run_command(
    argv: list[str], env: dict[str, str], limit_s: int = 150, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """Runs argv under `timeout` (a hang fails the test instead of the suite); stdout and stderr
    together in `.stdout`, as text."""
    argv = ["timeout", "-k", "10", str(limit_s), *argv]
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    done.stdout = done.stdout.decode(errors="replace")
    assert done.returncode != TIMED_OUT, f"{' '.join(argv)} hung for {limit_s} s:\n{done.stdout}"
    return done


def check_ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"exit status {done.returncode}:\n{done.stdout[-4000:]}"


def read_surface(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every dataset of a surface file (by its path in the file) and the file attributes."""
    datasets: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                datasets.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
        attrs = dict(f.attrs)
    return datasets, attrs


#: how close two runs of one surface are, whatever the chunking, the ranks or the CPU: each point
#: is its own float32 forward with float64 sums, but how many points share one batched forward
#: (chunk size, ranks) may change the order of float32 reductions on another CPU's kernels. On
#: this machine they agree bit for bit; 1e-6 is far below any difference a surface shows.
ENGINE_RTOL = 1e-6


def assert_same_surface(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], rtol: float = ENGINE_RTOL
) -> None:
    """Same datasets (metrics, done, coordinates, directions); equal to `rtol` (bit for bit when
    0), NaN where the other has NaN, the same infinities."""
    assert sorted(got) == sorted(want)
    for name in want:
        if rtol == 0.0:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=0, err_msg=name)


def progress(output: str) -> int:
    """Points done as the last progress bar in `output` shows them (tqdm's `n/total [`)."""
    counts = re.findall(r"(\d+)/\d+ \[", output)
    return int(counts[-1]) if counts else 0


def rank_pids(marker: str, module: str = "landscape_hpc.surface") -> dict[int, int]:
    """{MPI rank: pid} of the running `python -m <module>` processes whose command line holds
    `marker` (a run folder unique to one test), read from /proc (OMPI_COMM_WORLD_RANK in their
    environment)."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        ours = module.encode() in cmdline and any(marker.encode() in a for a in cmdline)
        if not ours:
            continue
        for var in environ:
            if var.startswith(b"OMPI_COMM_WORLD_RANK="):
                pids[int(var.split(b"=", 1)[1])] = int(entry.name)
    return pids


def processes_gone(pids, within_s: float = 30.0) -> bool:
    """Whether every process of `pids` has exited (absent from /proc, or a zombie: its files and
    locks are released) within `within_s`. An exiting process's cmdline reads empty before its
    files are closed, so rank_pids() == {} alone does not say that its HDF5 lock is gone."""
    deadline = time.monotonic() + within_s
    while True:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return not alive
        time.sleep(0.05)


def slurm_partition() -> Optional[str]:
    """The default SLURM partition (sinfo marks it with `*`); None when sbatch is missing or no
    controller answers."""
    if shutil.which("sbatch") is None:
        return None
    try:
        listing = subprocess.run(
            ["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = listing.stdout.split() if listing.returncode == 0 else []
    marked = [name.rstrip("*") for name in names if name.endswith("*")]
    return (marked or [name.rstrip("*") for name in names] or [None])[0]


class OutputWatch:
    """Collects a process's output in a thread; `wait_for` returns once a condition holds."""

    def __init__(self, proc: subprocess.Popen):
        self.text = ""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        while chunk := os.read(proc.stdout.fileno(), 4096):
            with self._changed:
                self.text += chunk.decode(errors="replace")
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, condition, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: condition(self.text) or not self._thread.is_alive(), timeout_s
            ) and condition(self.text)

    def finish(self) -> str:
        self._thread.join(timeout=30)
        return self.text
