#!/bin/bash
# MPI hello world over a SLURM allocation: the launch pattern landscape_hpc's sbatch scripts copy.
#
#   sbatch slurm/hello_mpi.sh          # from the repository root (finds .venv from there)
#   cat hello_mpi-<jobid>.out          # "rank 0 of 2 on <node>", "rank 1 of 2 on <node>"
#
# Local test cluster: scripts/slurm_local.sh up. Other Python: sbatch --export=ALL,PYTHON=...
#
# The #SBATCH lines must come before the first command; sbatch reads them as options.
# Name shown by squeue and sacct.
#SBATCH --job-name=hello_mpi
# All ranks on one node here; raise it on a real cluster (ranks are spread over nodes).
#SBATCH --nodes=1
# One task = one MPI rank. More tasks than CPUs is refused unless you add --overcommit.
#SBATCH --ntasks=2
# Wall-clock limit (HH:MM:SS); the scheduler kills the job after it.
#SBATCH --time=00:05:00
# stdout and stderr of every rank, in the folder sbatch ran from; %j = job id.
#SBATCH --output=hello_mpi-%j.out

# Fail on the first error, so sacct reports FAILED rather than COMPLETED.
set -euo pipefail

# sbatch runs a copy of this script from SLURM's spool folder, so find the repository through the
# folder the job was submitted from, not through $0.
PYTHON=${PYTHON:-$SLURM_SUBMIT_DIR/.venv/bin/python}

# srun starts one rank per task of the allocation and wires them up through PMIx: Debian's
# OpenMPI 4.1 is built against PMIx, so this needs no mpirun. (--mpi=pmi2 does not work with it:
# "OMPI was not built with SLURM's PMI support".) `mpirun -n "$SLURM_NTASKS" ...` inside the
# allocation works too (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).
srun --mpi=pmix "$PYTHON" -c '
from mpi4py import MPI
comm = MPI.COMM_WORLD
print(f"rank {comm.rank} of {comm.size} on {MPI.Get_processor_name()}", flush=True)
'
