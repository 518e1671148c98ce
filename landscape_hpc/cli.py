"""Entry-point plumbing shared by the Hydra apps: one output folder for every MPI rank."""

from __future__ import annotations

import datetime
import sys


def share_hydra_run_dir(argv: list[str] | None = None) -> None:
    """Under mpirun every rank runs the Hydra app. Rank 0 picks the output folder (unless the
    command gives hydra.run.dir) and broadcasts it, so all ranks agree; the other ranks write no
    Hydra logs or .hydra folder of their own. A no-op on one process."""
    argv = sys.argv if argv is None else argv
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1 or any(a in ("-m", "--multirun") for a in argv[1:]):
        return
    run_dir = None
    if not any(a.startswith("hydra.run.dir=") for a in argv[1:]):
        stamp = datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        run_dir = comm.bcast(f"outputs/{stamp}" if comm.Get_rank() == 0 else None, root=0)
        argv.append(f"hydra.run.dir={run_dir}")
    if comm.Get_rank() > 0:
        argv.extend(["hydra/job_logging=disabled", "hydra.output_subdir=null"])


#: glibc mallopt parameters (malloc.h) and the values the commands set
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOPT = ((_M_MMAP_THRESHOLD, 32 * 2**20), (_M_TRIM_THRESHOLD, 2**30), (_M_TOP_PAD, 64 * 2**20))


def tune_allocator() -> bool:
    """glibc: keep freed blocks up to 32 MiB in the heap and do not trim it, so the activation
    buffers of one forward are reused by the next instead of being unmapped and page-faulted back
    in, zeroed (100–160 faults per sample; mpo_cnn evaluates 1.5–2× faster without them,
    docs/benchmarks.md). Called at the start of every command, never on import. The heap then
    keeps up to 1 GiB of freed memory. LANDSCAPE_HPC_MALLOC=default leaves malloc as it is.
    Returns whether the settings were applied (False without glibc)."""
    import ctypes
    import os

    if os.environ.get("LANDSCAPE_HPC_MALLOC", "tuned") == "default":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(option, value) == 1 for option, value in _MALLOPT)
