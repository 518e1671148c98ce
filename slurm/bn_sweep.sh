#!/bin/bash
# The BN sweep (Skorokhodov & Burtsev 2019, section 4.2) in one SLURM allocation: rank 0 hands
# the MPO jobs (net × fill probability × seed) to the other ranks as they free up; each fits its
# plane on its own GPU and writes its group of the shared sweep file (parallel HDF5). At the end
# rank 0 writes summary.csv and bn_sweep.png next to it.
#
#   sbatch slurm/bn_sweep.sh                                  # the full grid (conf/experiment/bn_sweep.yaml)
#   sbatch slurm/bn_sweep.sh 'sweep.seeds=[0,1]' steps=2000   # overrides narrow or resize it
#   sbatch --ntasks=9 --time=08:00:00 slurm/bn_sweep.sh ...   # options before the script win
#   sbatch --gpus-per-task=0 slurm/bn_sweep.sh ...            # a cluster or partition without GPUs
#
# Every argument after the script is a Hydra override of landscape_hpc.sweep, passed on as is.
# Outputs go to outputs/<date>/<time>/ under the folder sbatch ran from, unless hydra.run.dir= or
# out_dir= says otherwise. A sweep that ran out of time resumes when submitted again with the
# same out_dir= (or hydra.run.dir=): finished jobs are skipped, a job cut short resumes its fit
# from its checkpoint.
#
# Submit from the repository root (the default Python is its .venv). Other Python:
# sbatch --export=ALL,PYTHON=/path/to/python slurm/bn_sweep.sh ...
#
# The #SBATCH lines must come before the first command; edit them for your cluster.
# Name shown by squeue and sacct.
#SBATCH --job-name=bn_sweep
# Nodes; the ranks are spread over them.
#SBATCH --nodes=1
# MPI ranks: 1 master + one worker per GPU, so 4 jobs run at a time here.
#SBATCH --ntasks=5
# GPUs per rank. Each worker fits on its own; rank 0 only hands out jobs and leaves its GPU idle
# (the price of one homogeneous job step). --gpus-per-task=0 for CPU-only nodes.
#SBATCH --gpus-per-task=1
# Wall-clock limit (HH:MM:SS); the scheduler kills the job after it (resubmit to resume).
#SBATCH --time=04:00:00
# Output of every rank (only rank 0 writes, plus errors); %j = job id.
#SBATCH --output=bn_sweep-%j.out

# Fail on the first error, so sacct reports FAILED rather than COMPLETED.
set -euo pipefail

# sbatch runs a copy of this script from SLURM's spool folder: find the repository through the
# folder the job was submitted from, not through $0.
PYTHON=${PYTHON:-$SLURM_SUBMIT_DIR/.venv/bin/python}

# One rank per task, wired up through PMIx; --kill-on-bad-exit: a rank that dies ends the step,
# so no rank is left waiting for it (a Python error already ends every rank through MPI_Abort).
srun --mpi=pmix --kill-on-bad-exit=1 "$PYTHON" -m landscape_hpc.sweep "$@"
