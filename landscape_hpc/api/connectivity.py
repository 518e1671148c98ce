"""Mode connectivity from Python: a trained curve between two nets against the straight line
(Garipov et al. 2018; barriers as Frankle et al. 2020).

    import landscape_hpc as lh
    c = lh.curve(net_a, net_b, data, kind="bezier", steps=500, lr=0.05, t=(0, 1, 21))
    c.curve.test_loss.plot(); c.line.test_loss.plot()     # Datasets like lh.interpolate's
    c.barriers["test"]                                    # {"curve": B, "line": B}
    net_a.load_state_dict(c.bend)                         # the trained bend, a state dict
    plane = lh.curve_plane(c, net_a, net_b, data)         # the plane of θ_a, bend, θ_b (2D)

The core is geometry/curve_job.py `curve_between` (maths in geometry/curve.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import xarray as xr
from torch import nn

from landscape_hpc import __version__
from landscape_hpc.api import results
from landscape_hpc.api.geometry import Device, as_optima
from landscape_hpc.api.options import engine_options, on_device
from landscape_hpc.engine.evaluate import check_engine
from landscape_hpc.engine.losses import default_loss
from landscape_hpc.errors import UserError, check_seed
from landscape_hpc.geometry.curve import CurveOptions
from landscape_hpc.geometry.curve_job import (
    CurveResult,
    curve_between,
    plane_attrs,
    plane_directions,
    plane_grid,
)
from landscape_hpc.grid import Grid
from landscape_hpc.params import ParamDict


@dataclass
class Curve:
    """lh.curve's result: `curve` and `line`, xarray Datasets on the dim "x" (= t) with
    <split>_loss and <split>_acc and the attrs barrier_<split>, barrier_t_<split>, as
    lh.interpolate returns; `barriers` {split: {"curve": B, "line": B}}; `bend` the trained
    bend (a state dict of the nets' architecture); `result` the core's CurveResult (the t
    drawn and the minibatch loss of every training step in result.training)."""

    curve: xr.Dataset
    line: xr.Dataset
    barriers: dict[str, dict[str, float]]
    bend: ParamDict
    result: CurveResult


def _dataset(result: CurveResult, kind: str, attrs: dict[str, Any]) -> xr.Dataset:
    arrays: dict[str, np.ndarray] = {}
    for split, kinds in result.metrics.items():
        loss, acc = kinds[kind]
        arrays[f"{split}_loss"], arrays[f"{split}_acc"] = loss, acc
    arrays["done"] = np.ones(len(result.t), np.uint8)
    ds = results.to_dataset(Grid(result.t, None), arrays, [], {**attrs, "path": kind})
    ds, _ = results.with_summary(ds, str(attrs["loss"]), True)  # the barriers, as interpolate
    return ds


def curve(
    model_a: nn.Module,
    model_b: Any,
    data: Any,
    kind: str = "bezier",
    *,
    steps: int = 500,
    lr: float = 0.05,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    train_batch_size: Optional[int] = 128,
    t: Sequence[float] = (0.0, 1.0, 21),
    splits: Optional[Sequence[str]] = None,
    loss: str = "ce",
    bn: str = "recompute",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    fold_bn: bool = True,
    seed: int = 0,
    device: Device = None,
) -> Curve:
    """A low-loss curve between two trained nets, trained as Garipov et al. (2018, sec. 3) do:
    one bend θ_bend, started at the line's midpoint, moved by an optimiser that at every step
    draws t ~ U(0, 1) and a minibatch and lowers the training loss at θ(t); the ends stay
    fixed bit for bit. The curve and the straight line are then evaluated along t, with their
    loss barriers (Frankle et al. 2020: the height above the chord of the end losses).

    Args:
        model_a: the net at t = 0 (an nn.Module; not modified, a copy evaluates both).
        model_b: the net at t = 1, of model_a's architecture (an nn.Module or its state dict).
        data: {"train": (inputs, labels), "test": ...} or one (inputs, labels) pair (the split
            "train"), as tensors; the bend is trained on "train".
        kind: bezier (quadratic Bézier (1−t)²θ_a + 2t(1−t)θ_bend + t²θ_b) or polychain (θ_a →
            θ_bend for t < 1/2, θ_bend → θ_b after).
        steps: optimiser steps on the bend (0: the untrained bend, the line's midpoint).
        lr: the optimiser's learning rate.
        optimizer: sgd (with momentum, as Garipov et al.) or adam.
        momentum: SGD's momentum.
        weight_decay: L2 penalty on the bend (the optimiser's weight_decay).
        train_batch_size: training samples per step (None: the whole train split).
        t: the positions evaluated, (min, max, num) in [0, 1]; include 0 and 1 for barriers.
        splits: the splits evaluated (default: all of `data`).
        loss: ce, mse or auto (the model's own): the loss trained and evaluated.
        bn: recompute (BN running statistics recomputed from the train split at every t, as
            Garipov et al.'s update_bn) or eval (moved linearly between the nets').
        batch_size: samples per forward pass of the evaluation (memory only).
        strategy: auto, vmap, sequential or threads (the engine; results agree to rounding).
        memory_mb: memory the vmap strategy may use for a chunk of points, in MiB.
        fold_bn: sequential/threads with bn=eval fold conv → BN pairs per point.
        seed: seed of the t drawn and of the minibatch order.
        device: where to compute (default: model_a's device); data are moved there.

    Returns:
        A Curve: curve and line (xarray Datasets like lh.interpolate's, dim "x" = t, attrs
        barrier_<split>), barriers {split: {"curve": B, "line": B}}, bend (a state dict),
        result (the CurveResult: metrics, barriers with the t where each is reached, the
        training's t and minibatch losses).
    """
    check_seed(seed, "seed")
    if isinstance(model_b, nn.Module) and model_b is model_a:
        raise UserError("model_b is model_a; a curve joins two different nets")
    if len(t) != 3:
        raise UserError(f"t={tuple(t)} must be (min, max, num), e.g. t=(0, 1, 21)")
    options = CurveOptions(kind, optimizer, lr, momentum, weight_decay, steps)
    if train_batch_size is not None and train_batch_size < 1:
        raise UserError(f"train_batch_size={train_batch_size} must be at least 1 (or None)")
    if loss == "auto":
        loss = default_loss(model_a)
    engine = engine_options(batch_size, memory_mb, bn, loss, strategy, fold_bn)
    check_engine(engine, key="")
    built = as_optima([model_a, model_b], data, device, ["train"])
    names = list(built.problem.splits) if splits is None else list(splits)
    built.problem.require(names)
    positions = Grid.from_spec(t, None, keys=("t", "y")).x
    result = curve_between(built, options, positions, names, engine, train_batch_size, seed)
    attrs = {
        "made_by": "landscape_hpc.curve (library)",
        "landscape_hpc": __version__,
        "model_class": type(model_a).__qualname__,
        "curve_kind": kind,
        "loss": loss,
        "bn": bn,
        "steps": steps,
        "lr": lr,
        "optimizer": optimizer,
        "seed": seed,
    }
    barriers = {s: {k: v[0] for k, v in kinds.items()} for s, kinds in result.barriers.items()}
    return Curve(
        _dataset(result, "curve", attrs), _dataset(result, "line", attrs), barriers,
        result.bend, result,
    )  # fmt: skip


def curve_plane(
    curve: Curve,
    model_a: nn.Module,
    model_b: Any,
    data: Any,
    x: Optional[Sequence[float]] = None,
    y: Optional[Sequence[float]] = None,
    *,
    num: int = 21,
    margin: float = 0.2,
    bn: str = "recompute",
    **kwargs: Any,
) -> Optional[xr.Dataset]:
    """The loss surface over the plane through θ_a, the trained bend and θ_b (Garipov et al.
    2018, Figure 1), by lh.surface: origin θ_a, directions u = (θ_b − θ_a)/‖θ_b − θ_a‖ and v
    the part of θ_bend − θ_a orthogonal to u, normalised (over the parameters; u also moves
    BN running statistics toward θ_b's, used with bn="eval"). The curve lies in the plane.

    Args:
        curve: lh.curve's result for model_a and model_b (its bend and kind are used).
        model_a: the net at t = 0, the plane's origin (an nn.Module; not modified).
        model_b: the net at t = 1 (an nn.Module or its state dict).
        data: the splits, as lh.surface takes them ({"train": (inputs, labels), ...}).
        x: the axis along u, (min, max, num) in weight-space distance; None: the three
            points' span with `margin` on each side, `num` points.
        y: the axis along v, likewise.
        num: grid points per axis of the default grid.
        margin: the default grid's margin, a fraction of the points' span per axis.
        bn: recompute (BN statistics from the train split at every point, as lh.curve) or eval.
        kwargs: lh.surface's other options (splits, batch_size, strategy, loss, device, out,
            ...), except directions and its direction options.

    Returns:
        lh.surface's Dataset (dims ("y", "x")) with the attrs plane_curve_x, plane_curve_y and
        plane_t (the curve at t), plane_line_x, plane_line_y, plane_points_x, plane_points_y
        (θ_a, bend, θ_b: plane_points), curve_kind (None on other MPI ranks).
    """
    from landscape_hpc.api.surface import surface

    for key in ("directions", "seed", "norm", "ignore", "dir_type", "same_dir", "params"):
        if key in kwargs:
            raise TypeError(f"curve_plane() takes no {key}=: the plane is given by the curve")
    if not isinstance(curve, Curve):
        raise UserError(f"curve is a {type(curve).__name__}; pass lh.curve's result")
    a = {k: v.detach() for k, v in on_device(model_a, kwargs.get("device")).state_dict().items()}
    device = next(iter(a.values())).device
    state_b = model_b.state_dict() if isinstance(model_b, nn.Module) else model_b
    b = {k: v.detach().to(device) for k, v in state_b.items()}
    bend = {k: v.detach().to(device) for k, v in curve.bend.items()}
    keys = [name for name, _ in model_a.named_parameters()]
    missing = [k for k in keys if k not in b or k not in bend]
    if missing:
        raise UserError(
            f"model_b or the curve's bend lacks the parameters {missing[:3]}; pass the nets "
            "lh.curve joined"
        )
    kind = curve.result.kind
    basis, coords = plane_directions(a, bend, b, keys, kind, curve.result.t)
    ax, ay = plane_grid(coords, x, y, num, margin)
    training = model_a.training  # lh.surface evaluates in eval mode; a train-mode BN net
    try:  # would fail its memory probe on one sample (vmap), so it is evaluated in eval mode
        ds = surface(model_a.eval(), data, ax, ay, directions=basis, bn=bn, **kwargs)
    finally:
        model_a.train(training)
    if ds is not None:
        extra = {**plane_attrs(coords), "curve_kind": kind, "directions": "curve_plane"}
        ds.attrs.update(extra)
        if kwargs.get("out") is not None:
            from pathlib import Path

            from landscape_hpc.files import surface as surface_file

            surface_file.write_summary(Path(kwargs["out"]), {}, extra)
    return ds
