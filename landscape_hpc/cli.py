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
