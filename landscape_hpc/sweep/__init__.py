"""The BN sweep of Skorokhodov & Burtsev 2019 (section 4.2): MPO fits over random masks of every
fill probability, for nets with and without BatchNorm, several seeds; one table and one figure.

    mpirun -n 9 python -m landscape_hpc.sweep [MPO and sweep.* overrides]   # MPI pool, one file
    sbatch slurm/bn_sweep.sh [overrides]                                    # the same in SLURM
    python -m landscape_hpc.mpo -m +experiment=bn_sweep [overrides]          # Hydra multirun
    python -m landscape_hpc.sweep report <sweep.h5 | run folder | multirun folder>

Modules: `jobs` (the grid and each job's MPO config), `run` (the MPI sweep), `report` (summary
table and figure from any of the three routes); the sweep file is landscape_hpc/files/sweep.py.
"""
