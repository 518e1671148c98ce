"""Many 1D curves through one model and the sharpness they measure (Li et al. 2018, sec. 5 and
A.4): `lh.lines` evaluates n directions at once, `lh.sharpness` finds on each direction and
side where the loss has risen by a fixed amount (landscape_hpc/sharpness.py says why).

    curves = lh.lines(model, data, n=10, x=(-1, 1, 51))          # dims (direction, x)
    curves.train_loss.plot.line(x="x", hue="direction")         # A.4's repeatability figure
    s = lh.sharpness(model, data, rise=(0.1, 1.0), n=10)        # dims (rise, direction, side)
    float(s.width.sel(rise=0.1).mean())                         # the scalar: mean distance

Both draw the directions as lh.random_directions(model, n, seed=...) does (the first equals
lh.surface's x direction of the same seed and norm), or take yours.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm import tqdm

from landscape_hpc import __version__
from landscape_hpc.api.auto_range import loss_along
from landscape_hpc.api.options import engine_options, model_device, on_device, splits_on
from landscape_hpc.api.surface import Axis, Directions, _basis, _state
from landscape_hpc.auto_range import Level, find_span
from landscape_hpc.engine.evaluate import Evaluator, check_engine
from landscape_hpc.engine.losses import default_loss
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError, check_seed
from landscape_hpc.grid import parse_axis

SIDES = ("-", "+")


def _evaluator(
    model: nn.Module,
    data: Any,
    directions: Directions,
    n: int,
    splits: Optional[Sequence[str]],
    bn_split: str,
    options_kwargs: dict[str, Any],
    basis_kwargs: dict[str, Any],
    device: Any,
) -> tuple[Evaluator, list[str], int]:
    if n < 1:
        raise UserError(f"n={n}: need at least one direction")
    options = engine_options(**options_kwargs, fold_bn=True)
    check_engine(options, key="")
    template = on_device(model, device)
    dev = model_device(template, None)
    origin = _state(template)
    if not isinstance(directions, str):
        n = len(directions)
    basis = _basis(template, origin, directions, n, same_dir=False, **basis_kwargs)
    bn = options_kwargs["bn"]
    chosen, bn_data = splits_on(data, dev, splits, bn_split if bn == "recompute" else None)
    loss = options_kwargs["loss"]
    if isinstance(loss, str) and loss == "auto":
        loss = default_loss(template)
    evaluator = Evaluator(template, Subspace(origin, basis), chosen, options, bn_data, loss=loss)
    return evaluator, list(chosen), n


def lines(
    model: nn.Module,
    data: Any,
    n: int = 10,
    x: Axis = (-1.0, 1.0, 51),
    *,
    directions: Directions = "random",
    seed: int = 0,
    norm: str = "filter",
    ignore: str = "biasbn",
    dir_type: str = "weights",
    loss: Union[str, Callable[..., Any]] = "auto",
    bn: str = "eval",
    splits: Optional[Sequence[str]] = None,
    bn_split: str = "train",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    precision: str = "fp32",
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = True,
) -> xr.Dataset:
    """The loss and accuracy of `model` along n directions through its weights, as an
    xarray.Dataset with dims ("direction", "x"): `<split>_loss`, `<split>_acc` (percent), the
    point θ₀ + x·d_i on row i. The model is not modified.

    Args:
        model: any nn.Module; its weights are the origin.
        data: the splits, as lh.surface takes them.
        n: how many random directions (ignored when `directions` is a sequence).
        x: the axis (min, max, num), shared by every direction.
        directions: "random" (drawn from `seed`, normalised by `norm`) or a sequence of dicts of
            tensors keyed like model.state_dict().
        seed, norm, ignore, dir_type: as lh.random_directions's.
        loss, bn, splits, bn_split, batch_size, strategy, memory_mb, precision, device: as
            lh.surface's.
        progress: a progress bar over the directions.
    """
    check_seed(seed, "seed")
    evaluator, names, n = _evaluator(
        model, data, directions, n, splits, bn_split,
        dict(batch_size=batch_size, memory_mb=memory_mb, bn=bn, loss=loss, strategy=strategy,
             precision=precision),
        dict(seed=seed, norm=norm, ignore=ignore, dir_type=dir_type), device,
    )  # fmt: skip
    xs = parse_axis("x", x)
    values = {f"{s}_{m}": np.empty((n, len(xs))) for s in names for m in ("loss", "acc")}
    for i in tqdm(range(n), desc="lines", unit="direction", disable=not progress):
        coords = torch.zeros(len(xs), n, dtype=torch.float64)
        coords[:, i] = torch.as_tensor(xs)
        for split, metrics in evaluator(coords).items():
            values[f"{split}_loss"][i], values[f"{split}_acc"][i] = metrics.loss, metrics.acc
    attrs = _attrs(directions, seed, norm, ignore, dir_type, bn, evaluator)
    return xr.Dataset(
        {k: (("direction", "x"), v) for k, v in values.items()},
        coords={"direction": np.arange(n), "x": xs},
        attrs=attrs,
    )


def sharpness(
    model: nn.Module,
    data: Any,
    rise: Union[float, Sequence[float]] = (0.1, 1.0),
    n: int = 10,
    *,
    split: str = "train",
    directions: Directions = "random",
    seed: int = 0,
    norm: str = "filter",
    ignore: str = "biasbn",
    dir_type: str = "weights",
    start: float = 0.01,
    max_coord: float = 10.0,
    tol: float = 1e-3,
    loss: Union[str, Callable[..., Any]] = "auto",
    bn: str = "eval",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    precision: str = "fp32",
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = True,
) -> xr.Dataset:
    """How far the `split` loss stays within `rise` of the origin's along n directions, on each
    side: an xarray.Dataset with dims ("rise", "direction", "side"): `width` (the distance of
    the first crossing of loss(θ₀) + rise, bracketed to `tol` by bisection) and `censored`
    (the side never reached it within max_coord: width is then max_coord, a lower bound).
    The mean of `width` over directions and sides is the sharpness scalar (larger: flatter);
    it is in the directions' units (with norm="filter", fractions of each filter's norm).

    Args:
        model: any nn.Module; its weights are the origin (not modified).
        data: the splits, as lh.surface takes them; only `split` is read.
        rise: one rise or several (each > 0), in the loss's units.
        n: how many random directions (ignored when `directions` is a sequence).
        split: the split whose loss the rise applies to.
        directions, seed, norm, ignore, dir_type: as lh.lines's.
        start: the first step of the outward search (doubled until the level is reached).
        max_coord: the farthest coordinate searched.
        tol: the bracket width at which the bisection stops (coordinates).
        loss, bn, batch_size, strategy, memory_mb, precision, device: as lh.surface's.
        progress: a progress bar over the directions.
    """
    check_seed(seed, "seed")
    rises = [float(r) for r in (rise if isinstance(rise, Sequence) else [rise])]
    if not rises or any(not r > 0 for r in rises):
        raise UserError(f"rise={rise!r}: each rise must be positive, e.g. rise=(0.1, 1.0)")
    evaluator, _, n = _evaluator(
        model, data, directions, n, [split], split,
        dict(batch_size=batch_size, memory_mb=memory_mb, bn=bn, loss=loss, strategy=strategy,
             precision=precision),
        dict(seed=seed, norm=norm, ignore=ignore, dir_type=dir_type), device,
    )  # fmt: skip
    width = np.empty((len(rises), n, 2))
    censored = np.zeros((len(rises), n, 2), dtype=bool)
    origin_loss = float("nan")
    for i in tqdm(range(n), desc="sharpness", unit="direction", disable=not progress):
        along = loss_along(evaluator, split, i, n)
        for r, value in enumerate(rises):
            with warnings.catch_warnings():  # a capped side is in `censored`, not a warning
                warnings.simplefilter("ignore", UserWarning)
                span = find_span(along, Level("plus", value), start, max_coord, tol)
            width[r, i] = (-span.lo, span.hi)
            censored[r, i] = (span.lo_capped, span.hi_capped)
            origin_loss = span.origin_loss
    attrs = _attrs(directions, seed, norm, ignore, dir_type, bn, evaluator)
    attrs.update(split=split, origin_loss=origin_loss, tol=tol, max_coord=max_coord)
    return xr.Dataset(
        {
            "width": (("rise", "direction", "side"), width),
            "censored": (("rise", "direction", "side"), censored),
        },
        coords={"rise": rises, "direction": np.arange(n), "side": list(SIDES)},
        attrs=attrs,
    )


def _attrs(
    directions: Directions, seed: int, norm: str, ignore: str, dir_type: str, bn: str,
    evaluator: Evaluator,
) -> dict[str, Any]:  # fmt: skip
    random = isinstance(directions, str)
    return {
        "directions": "random" if random else "given",
        "seed": seed if random else -1,
        "norm": norm if random else "given",
        "ignore": ignore if random else "given",
        "dir_type": dir_type if random else "given",
        "bn": bn,
        "loss": evaluator.loss.name,
        "landscape_hpc_version": __version__,
    }
