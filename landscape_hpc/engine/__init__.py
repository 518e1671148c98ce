"""The evaluation engine: the middle of the house.

Losses and metrics of a network at K points of an affine subspace of weight space
(θ(c) = origin + Σ c_k · basis_k, `subspace`), computed by one of three strategies (`stacked`:
vmap over points; `pointwise`: one point at a time, on one thread or several), chosen by timing
(`autotune`), each tested against the plain loop (`evaluate.evaluate_points_loop`). What the
strategies share: the data protocol (`data`: tensors, pairs, dicts of splits, Datasets,
DataLoaders streamed batch by batch), the loss protocol (`losses`: ce, mse, lm, metric
callables, the output-unwrap rule) and the sums over batches (`metrics`), BN statistics
(`batchnorm`), memory budgets (`memory`), the model copies' rewrites (`graph`, `bnfold`,
`maxpool`) and a model's loss as a function of one flat vector (`flat`, for curvature). No MPI,
HDF5 or Hydra.
"""

from landscape_hpc.engine.data import Batch, Resident, Streamed, as_splits
from landscape_hpc.engine.evaluate import Evaluator, Metrics, evaluate_points, evaluate_points_loop
from landscape_hpc.engine.losses import LMLoss, Loss, resolve_loss, unwrap_output
from landscape_hpc.engine.subspace import Subspace

__all__ = [
    "Batch",
    "Evaluator",
    "LMLoss",
    "Loss",
    "Metrics",
    "Resident",
    "Streamed",
    "Subspace",
    "as_splits",
    "evaluate_points",
    "evaluate_points_loop",
    "resolve_loss",
    "unwrap_output",
]
