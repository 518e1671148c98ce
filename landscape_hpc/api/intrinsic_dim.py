"""Training in random d-dimensional hyperplanes from Python (Li, Farkhoor, Liu & Yosinski 2018;
Fort & Jastrzebski 2019, sec. 3): the intrinsic dimension of a net on its data, and the n-wedge
toy landscape where it is known (d = D − n).

    rows = lh.subspace_training(model, data, dims=[10, 100, 1000], steps=500)
    w = lh.wedge(dim=40, n=30)                   # no model, no data: the paper's toy model

The cores of the `subspace` and `wedge` commands (geometry/intrinsic_dim.py `train_subspaces`,
geometry/wedge.py `run_wedge`), keyword arguments named like their config keys.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from numbers import Integral
from typing import Any, Optional, Union

import torch
from torch import nn

from landscape_hpc.api.options import model_device, resident_splits
from landscape_hpc.config import (
    DatasetConfig,
    IntrinsicDimConfig,
    ModelConfig,
    WedgeConfig,
    WedgeHyperplaneConfig,
)
from landscape_hpc.errors import UserError, check_seed
from landscape_hpc.geometry.hyperplane import check_hyperplane
from landscape_hpc.geometry.intrinsic_dim import check_config, subspace_job, train_subspaces
from landscape_hpc.geometry.wedge import WedgeResult, run_wedge
from landscape_hpc.problem import Problem


def subspace_training(
    model: nn.Module,
    data: Any,
    *,
    dims: Sequence[int] = (1, 2, 5, 10, 20, 50, 100, 200),
    sparse: bool = False,
    steps: int = 500,
    lr: float = 0.1,
    seed: int = 0,
    loss: str = "ce",
    batch_size: int = 1024,
    threshold: float = 0.05,
    baseline: bool = True,
    device: Optional[Union[str, torch.device]] = None,
    comm: Any = None,
) -> Optional[list[dict[str, Any]]]:
    """Trains the model inside random d-dimensional hyperplanes θ(c) = θ0 + P·c of its weight
    space (P random and fixed, c from 0 by Adam, full batch, cosine decay), one run per d: the
    smallest d where training succeeds is the intrinsic dimension. The `subspace` command's
    core (geometry/intrinsic_dim.py) on a net in memory.

    Args:
        model: any nn.Module; its weights are θ0 (not modified: a copy trains). BN nets train
            in train mode (each chunk's batch statistics), as Li et al. trained theirs.
        data: {"train": (inputs, labels), "test": ...} or one (inputs, labels) pair, as tensors;
            training uses "train", the accuracies "train" and "test" (NaN without it).
        dims: the hyperplane dimensions d, one training run each (each ≤ the parameter count).
        sparse: sparse projections (a few ±1 per parameter) instead of dense Gaussian ones.
        steps: Adam steps on c.
        lr: Adam's initial learning rate (P has unit-norm columns: |Δθ| = |Δc|).
        seed: seed of the projections (dense hyperplanes of one seed are nested).
        loss: ce or mse; ignored by loss-output models (`loss_output = True`, the n-wedge).
        batch_size: samples per forward pass of the full-batch loss (memory only).
        threshold: loss-output models: a run succeeds when its final loss is below this.
        baseline: also train every parameter directly (the same steps and schedule): the full
            model's accuracy, 90% of which defines d_int90 (geometry.intrinsic_dim.d_int).
        device: where to train (default: the model's device); data are moved there.
        comm: an MPI communicator (default: the world; one d per task of the pool).

    Returns:
        On rank 0 the rows of the command's results.csv, sorted by d (the baseline last): dicts
        of d, full (1 for the baseline), final_loss, train_acc, test_acc (percent; NaN for a
        loss-output model), success (1/0 for loss-output models, else ""), seconds, rank.
        None on the other ranks.
    """
    check_seed(seed, "seed")
    cfg = IntrinsicDimConfig(
        model=ModelConfig(name="library"),
        dataset=DatasetConfig(),
        dims=[int(d) if isinstance(d, Integral) else d for d in dims],  # numpy ints too
        sparse=sparse,
        steps=steps,
        lr=lr,
        seed=seed,
        loss=loss,
        batch_size=batch_size,
        threshold=threshold,
        baseline=baseline,
        plot=False,
    )
    check_config(cfg)
    target = model_device(model, device)
    splits = resident_splits(data, target, None)
    if "train" not in splits:
        raise UserError(
            f"data has no 'train' split ({', '.join(splits)}); pass data={{'train': (x, y), "
            "'test': (x, y)}} or one (x, y) pair"
        )
    template = copy.deepcopy(model).to(target).eval()  # as the command's; a flat θ trains
    labels = splits["train"].labels
    classes = int(labels.max()) + 1 if labels.numel() and not labels.is_floating_point() else 0
    job = subspace_job(Problem(template, splits, classes, target), cfg, "the model")
    return train_subspaces(job, comm)


def wedge(
    *,
    dim: int = 40,
    n: int = 30,
    dims: Optional[Sequence[int]] = None,
    trials: int = 3,
    steps: int = 500,
    lr: float = 0.05,
    success_loss: float = 1e-3,
    init_scale: float = 1.0,
    n_segments: int = 8,
    n_dense: int = 201,
    hyperplane_optimizer: str = "adam",
    hyperplane_lr: float = 0.01,
    hyperplane_momentum: float = 0.9,
    hyperplane_steps: int = 300,
    seed: int = 0,
    comm: Any = None,
) -> Optional[WedgeResult]:
    """The n-wedge toy landscape (Fort & Jastrzebski 2019, sec. 3): the loss is the distance to
    the nearest of the C(D, n) n-dimensional coordinate subspaces of R^D. (a) Training in random
    d-planes from random θ0 succeeds from d = D − n on; (b) two optima on different wedges are
    joined by a high linear path and a low tunnel. The `wedge` command's core
    (geometry/wedge.py); no model and no data. The tunnel's optimiser options carry the prefix
    hyperplane_ (the command's hyperplane.*), since lr and steps are (a)'s.

    Args:
        dim: D, the dimensions of θ.
        n: the dimension of each wedge (1 ≤ n < D).
        dims: (a) the hyperplane dimensions d (default: 1 .. min(D, 2(D − n) + 2)).
        trials: (a) training runs per d, each from its own θ0 and hyperplane.
        steps: (a) Adam steps of each run.
        lr: (a) Adam's initial learning rate (cosine decay).
        success_loss: (a) a run succeeds when its final loss is below this.
        init_scale: scale of the random θ0 and of the optima's free coordinates.
        n_segments: (b) segments of the linear path between the optima; the inner points are
            optimised.
        n_dense: (b) positions where the linear path and the tunnel are evaluated.
        hyperplane_optimizer: (b) adam or sgd: how each tunnel point is optimised.
        hyperplane_lr: (b) its learning rate.
        hyperplane_momentum: (b) SGD's momentum.
        hyperplane_steps: (b) optimisation steps per point.
        seed: seed of θ0s, hyperplanes and optima (run i: an independent stream).
        comm: an MPI communicator (default: the world; one task per run and per tunnel point).

    Returns:
        On rank 0 a WedgeResult: per run (R,) dims, trials, final_loss, success; along the path
        t (Q,), points (the optimised positions, ends included), linear_loss and tunnel_loss
        (Q,), alignment (K, K) of the deviations, and the two optima (2, D). None on the other
        ranks.
    """
    check_seed(seed, "seed")
    hyperplane = WedgeHyperplaneConfig(hyperplane_optimizer, hyperplane_lr, hyperplane_momentum,
                                       hyperplane_steps)  # fmt: skip
    check_hyperplane(hyperplane, prefix="hyperplane_")
    cfg = WedgeConfig(
        dim=dim,
        n=n,
        dims=None if dims is None else list(dims),
        trials=trials,
        steps=steps,
        lr=lr,
        success_loss=success_loss,
        init_scale=init_scale,
        n_segments=n_segments,
        n_dense=n_dense,
        hyperplane=hyperplane,
        seed=seed,
        plot=False,
    )
    return run_wedge(cfg, comm)
