"""A grid range from the loss itself: `lh.auto_range`, then `lh.surface` over it.

    r = lh.auto_range(model, data, level="plus:1.0")              # random directions, seed 0
    ds = lh.surface(model, data, x=r.x, y=r.y, directions=r.directions)

Along each direction the train loss is evaluated through the engine in batches of coordinates
and landscape_hpc/auto_range.py finds where it first reaches the level on each side; the axes
cover that span with a margin. The directions come back with the ranges: a range is one of
these directions' (a random direction of another seed has its own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from landscape_hpc.api.options import engine_options, model_device, on_device, splits_on
from landscape_hpc.api.surface import Axis, Directions, _basis, _state
from landscape_hpc.auto_range import Level, LossAlong, Span, find_span
from landscape_hpc.engine.evaluate import Evaluator, check_engine
from landscape_hpc.engine.losses import default_loss
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError, check_seed
from landscape_hpc.params import ParamDict

log = logging.getLogger(__name__)


@dataclass
class AutoRange:
    """The axes to pass as lh.surface(x=, y=, directions=): spans[i] is along directions[i]."""

    x: Axis  # (min, max, num)
    y: Optional[Axis]  # None for ndim=1
    spans: list[Span]
    directions: list[ParamDict]


def loss_along(evaluator: Evaluator, split: str, i: int, ndim: int) -> LossAlong:
    """f(c) (K,) -> the `split` loss at c along direction i of the evaluator's subspace (K,)."""

    def along(c: np.ndarray) -> np.ndarray:
        coords = torch.zeros(len(c), ndim, dtype=torch.float64)  # (K, d)
        coords[:, i] = torch.as_tensor(np.asarray(c, dtype=np.float64))
        return evaluator(coords)[split].loss

    return along


def auto_range(
    model: nn.Module,
    data: Any,
    directions: Directions = "random",
    *,
    ndim: int = 2,
    level: Union[str, Level] = "plus:1.0",
    points: int = 51,
    margin: float = 0.1,
    start: float = 0.05,
    max_coord: float = 10.0,
    tol: float = 0.01,
    split: str = "train",
    seed: int = 0,
    norm: str = "filter",
    ignore: str = "biasbn",
    dir_type: str = "weights",
    loss: Union[str, Callable[..., Any]] = "auto",
    bn: str = "eval",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    precision: str = "fp32",
    device: Optional[Union[str, torch.device]] = None,
) -> AutoRange:
    """Grid axes centred on the basin: along each direction, the span from the first point
    below the origin to the first above it where the `split` loss reaches `level`, widened by
    `margin`; logged (logging.info) with the level. The model is not modified.

    Args:
        model: any nn.Module; its weights are the origin.
        data: the splits, as lh.surface takes them ({"train": (inputs, labels)}, ...).
        directions: "random" (drawn as lh.surface draws them: seed, norm, ignore, dir_type) or
            a sequence of dicts of tensors keyed like model.state_dict().
        ndim: 1 (x only) or 2 (x and y).
        level: "plus:δ" (the origin's loss + δ; default δ = 1) or "ratio:k" (the origin's loss
            × k, k > 1), or a landscape_hpc.auto_range.Level.
        points: grid points per axis of the returned ranges.
        margin: each axis extends the span by this fraction of its width on each side.
        start: the first step of the outward search (then doubled: ±start·2^i).
        max_coord: the search's farthest coordinate; a side that never reaches the level ends
            there, with a warning.
        tol: the bisection stops when each crossing is bracketed this narrowly (coordinates).
        split: the split whose loss the level applies to.
        seed: seed of the random directions.
        norm: filter, layer, weight or none (random directions).
        ignore: biasbn or none (random directions).
        dir_type: weights or states (random directions).
        loss: as lh.surface's (auto, ce, mse, lm, ... or a callable).
        bn: eval or recompute (from `split`).
        batch_size: samples per forward pass.
        strategy: auto, vmap, sequential or threads.
        memory_mb: memory the vmap strategy may use for a batch of points, in MiB.
        precision: fp32, tf32 or bf16.
        device: where to compute (default: the model's device).

    Returns:
        An AutoRange: x, y (the axes, y None for ndim=1), spans (Span per direction: lo, hi,
        level, origin_loss, lo_capped, hi_capped, evaluations) and the directions.
    """
    check_seed(seed, "seed")
    if ndim not in (1, 2):
        raise UserError(f"ndim={ndim!r}: auto_range gives the axes of a 1D or 2D grid; pass 1 or 2")
    options = engine_options(batch_size, memory_mb, bn, loss, strategy, True, precision)
    check_engine(options, key="")
    template = on_device(model, device)
    dev = model_device(template, None)
    origin = _state(template)
    basis = _basis(template, origin, directions, ndim, seed, norm, ignore, dir_type, False)
    splits, bn_data = splits_on(data, dev, [split], split if bn == "recompute" else None)
    if isinstance(loss, str) and loss == "auto":
        loss = default_loss(template)
    training = template.training
    try:
        evaluator = Evaluator(
            template, Subspace(origin, basis), splits, options, bn_data, loss=loss
        )
        spans = []
        for i in range(len(basis)):
            along = loss_along(evaluator, split, i, len(basis))
            spans.append(find_span(along, level, start, max_coord, tol, name="xy"[i]))
    finally:
        template.train(training)
    axes = [s.axis(points, margin) for s in spans]
    return AutoRange(axes[0], axes[1] if ndim == 2 else None, spans, basis)
