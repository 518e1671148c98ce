"""The evaluation engine: the middle of the house.

Losses and metrics of a network at K points of an affine subspace of weight space
(θ(c) = origin + Σ c_k · basis_k, `subspace`), computed by one of three strategies (`stacked`:
vmap over points; `pointwise`: one point at a time, on one thread or several), chosen by timing
(`autotune`), each tested against the plain loop (`evaluate.evaluate_points_loop`). What the
strategies share: the per-sample losses and their sums (`losses`), BN statistics (`batchnorm`),
memory budgets (`memory`), the model copies' rewrites (`graph`, `bnfold`, `maxpool`) and a
model's loss as a function of one flat vector (`flat`, for curvature). No MPI, HDF5 or Hydra.
"""

from landscape_hpc.engine.evaluate import Evaluator, Metrics, evaluate_points, evaluate_points_loop
from landscape_hpc.engine.subspace import Subspace

__all__ = ["Evaluator", "Metrics", "Subspace", "evaluate_points", "evaluate_points_loop"]
