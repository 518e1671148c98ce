"""Curvature at a model's weights from Python: the extreme Hessian eigenvalues by Lanczos and
the trace by Hutchinson's estimator (geometry/curvature.py, the command's kernel)."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import nn

from landscape_hpc.api.options import model_device, on_device, splits_on
from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import Split, subset
from landscape_hpc.geometry.curvature import PointResult, check_config, point_curvature


def hessian(
    model: nn.Module,
    data: Any,
    *,
    split: str = "train",
    loss: str = "ce",
    lanczos_steps: int = 20,
    lanczos_tol: float = 1e-3,
    trace_samples: int = 100,
    seed: int = 0,
    double: bool = False,
    batch_size: int = 1024,
    max_samples: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    comm: Any = None,
) -> Optional[PointResult]:
    """λ_max, λ_min and tr H of the Hessian of the mean loss over one split at the model's
    weights (the parameters are differentiated; buffers stay fixed; the model runs in eval
    mode on a copy). Never forms H: Hessian-vector products by double backward.

    Args:
        model: any nn.Module (not modified).
        data: as lh.surface takes it; `split` names the split differentiated.
        loss: ce or mse.
        lanczos_steps: the most Lanczos iterations. Ritz values lie inside the spectrum:
            max_eig is a lower bound of λ_max, min_eig an upper bound of λ_min.
        lanczos_tol: stop once both extreme Ritz values move less than this (relative).
        trace_samples: Hutchinson probes for tr H (0: no trace, NaN).
        seed: seed of the Lanczos start vector and the probes.
        double: compute in float64 (small eigenvalues exact, a few times slower).
        batch_size: samples per forward inside a Hessian-vector product (memory only).
        max_samples: a seeded random subset of at most this many samples of the split.
        device: where to compute (default: the model's device).

    Returns:
        PointResult (max_eig, min_eig, trace, ritz, lanczos report, num_params, num_samples,
        seconds) on rank 0; None on the other ranks of an MPI run.
    """
    cfg = HessianConfig(
        model=ModelConfig(name="library"),
        dataset=DatasetConfig(),
        split=split,
        max_samples=max_samples,
        lanczos_steps=lanczos_steps,
        lanczos_tol=lanczos_tol,
        trace_samples=trace_samples,
        seed=seed,
        loss=loss,
        double=double,
        batch_size=batch_size,
    )
    check_config(cfg)
    template = on_device(model, device)
    splits, _ = splits_on(data, model_device(template, None), [split], None)
    inputs, labels = splits[split]
    chosen = Split(inputs, labels)
    if max_samples is not None:
        chosen = subset(chosen, max_samples, seed)
    return point_curvature(template, chosen, cfg, comm)
