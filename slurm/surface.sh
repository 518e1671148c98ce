#!/bin/bash
# Loss surface of a net over one SLURM allocation (landscape_hpc.surface): rank 0 hands out chunks
# of grid points, every other rank evaluates them on its own GPU and writes them into the surface
# file (parallel HDF5).
#
#   sbatch slurm/surface.sh model=resnet56 model.checkpoint=ck.pt grid.x=[-1,1,51] grid.y=[-1,1,51]
#   sbatch --ntasks=17 --time=04:00:00 slurm/surface.sh ...   # options before the script win
#   sbatch --gpus-per-task=0 slurm/surface.sh ...             # a cluster or partition without GPUs
#
# Every argument after the script is a Hydra override of landscape_hpc.surface, passed on as is.
# The surface file and log go to outputs/<date>/<time>/ under the folder sbatch ran from, unless
# hydra.run.dir= or out= says otherwise. A job that ran out of time resumes when submitted again
# with the same out= (or hydra.run.dir=): only the points not done yet are computed.
#
# Submit from the repository root (the default Python is its .venv). Other Python:
# sbatch --export=ALL,PYTHON=/path/to/python slurm/surface.sh ...
#
# The #SBATCH lines must come before the first command; edit them for your cluster.
# Name shown by squeue and sacct.
#SBATCH --job-name=surface
# Nodes; the ranks are spread over them.
#SBATCH --nodes=1
# MPI ranks: 1 master + one worker per GPU, so 4 GPUs compute here.
#SBATCH --ntasks=5
# GPUs per rank. Each worker computes on its own; rank 0 only hands out work and leaves its GPU
# idle (the price of one homogeneous job step). --gpus-per-task=0 for CPU-only nodes.
#SBATCH --gpus-per-task=1
# Wall-clock limit (HH:MM:SS); the scheduler kills the job after it (resubmit to resume).
#SBATCH --time=01:00:00
# Output of every rank (only rank 0 writes, plus errors); %j = job id.
#SBATCH --output=surface-%j.out

# Fail on the first error, so sacct reports FAILED rather than COMPLETED.
set -euo pipefail

# sbatch runs a copy of this script from SLURM's spool folder: find the repository through the
# folder the job was submitted from, not through $0.
PYTHON=${PYTHON:-$SLURM_SUBMIT_DIR/.venv/bin/python}

# One rank per task of the allocation, wired up through PMIx (Debian's OpenMPI 4.1 speaks it;
# see slurm/hello_mpi.sh). --kill-on-bad-exit: a rank that dies ends the step, so no rank is left
# waiting for it (a Python error already ends every rank through MPI_Abort).
srun --mpi=pmix --kill-on-bad-exit=1 "$PYTHON" -m landscape_hpc.surface "$@"
