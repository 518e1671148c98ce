"""Loss surfaces from Python (Li et al. 2018): a model and data that exist only in memory.

    import landscape_hpc as lh
    ds = lh.surface(model, {"train": (x, y), "test": (xt, yt)}, x=(-1, 1, 51), y=(-1, 1, 51))
    ds.train_loss.plot()                                 # an xarray.Dataset, dims (y, x)
    line = lh.interpolate(model_a, model_b, data, t=(-0.5, 1.5, 41))

`compute` is the one code path under both the library functions and the surface command
(`python -m landscape_hpc.surface`, commands/surface.py): the command builds its arguments from
its config, the functions from theirs. Under mpirun every rank calls the same function; rank 0
hands out chunks of grid points, the others evaluate them (parallel.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from landscape_hpc import __version__, parallel
from landscape_hpc.api import results
from landscape_hpc.api.options import engine_options, model_device, on_device, splits_on
from landscape_hpc.api.run import GridRun, MemoryStore, run_grid
from landscape_hpc.directions.maths import (
    direction_keys,
    model_difference,
    random_basis,
    restrict,
)
from landscape_hpc.engine.evaluate import check_engine
from landscape_hpc.engine.losses import default_loss
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError, check_choice, check_seed
from landscape_hpc.files import hdf5
from landscape_hpc.files import surface as surface_file
from landscape_hpc.files.directions import directions_sha256
from landscape_hpc.grid import Grid
from landscape_hpc.groups import check_group_size
from landscape_hpc.models.hf import check_tokens
from landscape_hpc.params import ParamDict

Axis = Sequence[float]  # (min, max, num)
Directions = Union[str, Sequence[Mapping[str, Tensor]]]


def compute(
    model: nn.Module,
    subspace: Subspace,
    data: Mapping[str, Any],
    grid: Grid,
    options: Any,
    *,
    bn_data: Any = None,
    out: Optional[str | Path] = None,
    overwrite: bool = False,
    fingerprint: Optional[dict[str, Any]] = None,
    attrs: Optional[dict[str, Any]] = None,
    trajectory: Optional[surface_file.Trajectory] = None,
    comm: Any = None,
    collective: bool = False,
    chunk_points: Optional[int] = None,
    progress: bool = True,
    loss: Any = None,
    data_parallel: int = 1,
) -> Optional[dict[str, np.ndarray]]:
    """Evaluates (or resumes) every grid point of `subspace` on the splits of `data`: into the
    surface file `out` when given (resumed when it was made for the same job, `fingerprint`),
    else in memory. Returns {metric: array of the grid's shape} on rank 0 (None elsewhere and
    when writing a file: read it back with `results.load`). `data_parallel`: ranks per group
    sharing each chunk's data (api/run.py)."""
    comm = parallel.world_if_none(comm)
    splits = list(data)
    if out is None:
        store: Any = MemoryStore(grid, surface_file.metric_names(splits))
    else:
        store = surface_file.SurfaceFile.open(
            Path(out),
            grid,
            list(subspace.basis),
            splits,
            fingerprint or {},
            attrs or {},
            overwrite,
            comm=comm,
            collective=collective,
            trajectory=trajectory,
        )
    file = store if collective else None
    job = GridRun(model, subspace, data, bn_data, options, grid, file, loss, None, data_parallel)
    try:
        run_grid(comm, job, store, str(out) if out else "the surface", chunk_points, progress)
    finally:
        if out is not None and store is not None:
            store.close()
    if comm.Get_rank() != 0 or out is not None:
        return None
    return store.arrays


def _state(model: nn.Module) -> ParamDict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def state_sha256(state: Mapping[str, Tensor]) -> str:
    """SHA-256 of a state dict's keys, dtypes, shapes and bytes (what makes two origins equal)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _basis(
    model: nn.Module,
    origin: ParamDict,
    directions: Directions,
    ndim: int,
    seed: int,
    norm: str,
    ignore: str,
    dir_type: str,
    same_dir: bool,
) -> list[ParamDict]:
    if isinstance(directions, str):
        check_choice("directions", directions, ("random",))
        keys = direction_keys(model, dir_type)
        return random_basis(origin, keys, ndim, seed, norm, ignore, same_dir)
    basis = [dict(d) for d in directions]
    if len(basis) < ndim:
        raise UserError(
            f"directions= holds {len(basis)} direction(s) but the grid has {ndim} axes; pass "
            f"{ndim} dicts of tensors keyed like model.state_dict(), or drop y="
        )
    for i, d in enumerate(basis[:ndim]):
        unknown = sorted(set(d) - set(origin))
        wrong = [k for k in d if k in origin and tuple(d[k].shape) != tuple(origin[k].shape)]
        if unknown or wrong:
            raise UserError(
                f"directions[{i}] does not fit the model: keys not in its state_dict "
                f"{unknown[:5]}, shapes unlike the model's {wrong[:5]}; key it like "
                "model.state_dict()"
            )
    device = next(iter(origin.values())).device
    return [{k: v.to(device) for k, v in d.items()} for d in basis[:ndim]]


def surface(
    model: nn.Module,
    data: Any,
    x: Axis = (-1.0, 1.0, 21),
    y: Optional[Axis] = (-1.0, 1.0, 21),
    *,
    directions: Directions = "random",
    seed: int = 0,
    norm: str = "filter",
    ignore: str = "biasbn",
    dir_type: str = "weights",
    same_dir: bool = False,
    params: Optional[Sequence[str]] = None,
    loss: Union[str, Callable[..., Any]] = "auto",
    bn: str = "eval",
    splits: Optional[Sequence[str]] = None,
    bn_split: str = "train",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    fold_bn: bool = True,
    precision: str = "fp32",
    device: Optional[Union[str, torch.device]] = None,
    out: Optional[Union[str, Path]] = None,
    overwrite: bool = False,
    chunk_points: Optional[int] = None,
    progress: bool = True,
    comm: Any = None,
    data_parallel: int = 1,
) -> Optional[xr.Dataset]:
    """The loss and accuracy of `model` over a 1D or 2D grid of its weight space, as an
    xarray.Dataset with dims ("y", "x") (or ("x",)): variables `<split>_loss`, `<split>_acc`
    (accuracy in percent), `done`; its attrs say how it was made.

    The points are θ(a, b) = θ₀ + a·d_x + b·d_y around the model's own weights θ₀ (the model is
    not modified).

    Args:
        model: any nn.Module; its weights are the origin, its state_dict keys name the tensors.
        data: the splits: {"train": (inputs, labels), "test": ...}, one (inputs, labels) pair
            (the split "train"), tensors, a torch Dataset or any re-iterable of batches (a
            DataLoader), or a dict of those (see landscape_hpc.engine.data).
        x, y: the axes as (min, max, num); y=None for a 1D curve along x.
        directions: "random" (Gaussian, normalised by `norm`), or a sequence of 1 or 2 dicts of
            tensors keyed like model.state_dict() (a missing key is zero along that tensor).
        seed: seed of the random directions (x first, then y from the same stream).
        norm: filter (Li et al.: each filter scaled to its weights' norm), layer, weight, none.
        ignore: biasbn (1-D tensors — biases, BN — get a zero direction) or none.
        dir_type: weights (parameters only) or states (BN running statistics too).
        same_dir: y = x (a diagonal cut).
        params: move only the tensors these fnmatch patterns pick from the state_dict names
            ("blocks.*.attn.*"; a leading "!" excludes); the others stay at the origin, bit for
            bit. None: every tensor the directions move.
        loss: auto (the model's own: lm for gpt_tiny and HF causal LMs, else ce), ce, mse, lm
            (per token), lm_aligned, or a callable metric(outputs, batch) -> per-sample values
            (B,) or (sum, count).
        bn: eval (the model's running statistics) or recompute (from the `bn_split` data at
            every point).
        splits: which splits of `data` to evaluate (default: all).
        bn_split: the split BN statistics are recomputed from (bn="recompute").
        batch_size: samples per forward pass.
        strategy: auto (timed), vmap, sequential or threads (results agree to float rounding).
        memory_mb: memory the vmap strategy may use for a chunk of points, in MiB.
        fold_bn: sequential/threads with bn=eval fold conv → BN pairs per point.
        precision: the forwards' arithmetic (landscape_hpc.engine.precision): fp32 (float32,
            TF32 off), tf32 (TF32 matmuls and convolutions on Ampere+ GPUs; fp32 on a CPU) or
            bf16 (autocast to bfloat16); sums stay float64. Stored in the attrs and, below
            fp32, in the fingerprint (a file is resumed only at its own precision).
        device: where to compute (default: the model's device); data are moved there.
        out: write the command's HDF5 surface file here, resumable: calling again with the same
            arguments computes only the missing points; a file made for another job is refused.
        overwrite: replace an `out` file made for another job.
        chunk_points: grid points per work chunk (default: chosen from the grid and ranks).
        progress: show a progress bar.
        comm: an MPI communicator (default: the world; a world of one without mpirun).
        data_parallel: ranks per group under mpirun: each group evaluates a chunk's points
            over disjoint shards of every split (resident: contiguous samples; streamed:
            batch i to member i % k) and adds the members' float64 sums before dividing, so
            the values are one process's up to float rounding; for data too large for one
            rank. The workers (ranks less the master) must be a multiple of it: mpirun -n 5
            with data_parallel=2 is the master and 2 groups of 2. BN statistics
            (bn="recompute") are recomputed over the whole `bn_split` on every member (that
            pass is not split). Only a group's leader writes.

    Returns:
        The surface as an xarray.Dataset on rank 0 (None on the other ranks of an MPI run).
    """
    check_seed(seed, "seed")
    grid = Grid.from_spec(x, y, keys=("x", "y"))
    check_group_size(parallel.world_if_none(comm), data_parallel)
    options = engine_options(batch_size, memory_mb, bn, loss, strategy, fold_bn, precision)
    check_engine(options, key="")
    template = on_device(model, device)
    device = model_device(template, None)
    origin = _state(template)
    basis = _basis(template, origin, directions, grid.ndim, seed, norm, ignore, dir_type, same_dir)
    basis = restrict(basis, list(origin), params, "params")
    data_splits, bn_data = splits_on(data, device, splits, bn_split if bn == "recompute" else None)
    for name, split in data_splits.items():  # token ids against the vocabulary and context
        if not split.streamed:
            check_tokens(template, split.inputs, f"data[{name!r}]")
    if isinstance(loss, str) and loss == "auto":
        loss = default_loss(template)
    made = {
        "directions": directions if isinstance(directions, str) else "given",
        "seed": seed,
        "norm": norm,
        "ignore": ignore,
        "dir_type": dir_type,
        "same_dir": same_dir,
        **({"params": json.dumps(list(params))} if params else {}),
    }
    training = template.training  # the engine evaluates in eval mode; the caller's mode returns
    try:
        return _run_and_collect(
            template, Subspace(origin, basis), data_splits, bn_data, grid, options, made,
            out=out, overwrite=overwrite, chunk_points=chunk_points, progress=progress,
            comm=comm, loss=loss, data_parallel=data_parallel,
        )  # fmt: skip
    finally:
        template.train(training)


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    t: Axis = (-0.5, 1.5, 41),
    **kwargs: Any,
) -> Optional[xr.Dataset]:
    """The loss along the straight line θ(t) = θ_a + t·(θ_b − θ_a) between two models of one
    architecture (Goodfellow et al. 2015; Li et al. 2018, sec. 3): t = 0 is model_a, 1 is model_b.
    Every floating-point tensor moves, BN running statistics included (Li et al. A.5).

    Returns an xarray.Dataset with the dim "x" (= t). `kwargs`: those of `surface` (loss, bn,
    splits, batch_size, strategy, precision, device, out, data_parallel, ...), except x, y and
    the direction options. Its attrs (and the file's, with out=) hold the loss barrier of every
    split (Frankle et al. 2020; landscape_hpc/connectivity.py): barrier_<split> = max over the
    grid's t in [0, 1] of L(t) − ((1−t)·L(0) + t·L(1)), reached at barrier_t_<split> (NaN unless
    the grid holds t = 0 and t = 1); it is printed too.
    """
    for key in ("x", "y", "directions", "seed", "norm", "ignore", "dir_type", "same_dir"):
        if key in kwargs:
            raise TypeError(f"interpolate() takes no {key}=: the line is given by the two models")
    a = _state(on_device(model_a, kwargs.get("device")))
    device = next(iter(a.values())).device
    b = {k: v.detach().to(device) for k, v in model_b.state_dict().items()}
    direction = model_difference(b, a, "model_b")
    ds = surface(model_a, data, t, None, directions=[direction], **kwargs)
    if ds is not None:
        ds.attrs["directions"] = "interpolation"
        ds.attrs["model_b_sha256"] = state_sha256(b)
        ds = _summarised(ds, str(ds.attrs.get("loss", "ce")), True, kwargs.get("out"))
    return ds


def _run_and_collect(
    model: nn.Module,
    subspace: Subspace,
    data: dict[str, Any],
    bn_data: Any,
    grid: Grid,
    options: Any,
    made: dict[str, Any],
    *,
    out: Optional[Union[str, Path]],
    overwrite: bool,
    chunk_points: Optional[int],
    progress: bool,
    comm: Any,
    loss: Any,
    data_parallel: int,
) -> Optional[xr.Dataset]:
    """compute() with the library's fingerprint and attributes; the result as a Dataset."""
    comm = parallel.world_if_none(comm)
    counts = {f"n_{name}": results.split_size(split) for name, split in data.items()}
    loss_name = loss if isinstance(loss, str) else getattr(loss, "__qualname__", repr(loss))
    fingerprint = {
        "model_class": type(model).__qualname__,
        "origin_sha256": state_sha256(subspace.origin),
        **counts,
        "grid_x": [float(grid.x[0]), float(grid.x[-1]), len(grid.x)],
        "grid_y": None if grid.y is None else [float(grid.y[0]), float(grid.y[-1]), len(grid.y)],
        "directions_sha256": directions_sha256(subspace.basis),
        "splits": list(data),
        "loss": loss_name,
        "bn": options.bn,
        # None at fp32, so files made before the key resume at fp32 (and only at fp32)
        "precision": None if options.precision == "fp32" else options.precision,
    }
    attrs = {
        "made_by": "landscape_hpc.surface (library)",
        "landscape_hpc": __version__,
        "model_class": type(model).__qualname__,
        "loss": loss_name,
        "bn": options.bn,
        "strategy": options.strategy,
        "precision": options.precision,
        "batch_size": options.batch_size,
        "data_parallel": data_parallel,
        **{f"directions_{k}": v for k, v in made.items()},
        **counts,
    }
    file_attrs = {**attrs, "config": json.dumps(attrs, sort_keys=True, default=str)}
    collective = out is not None and hdf5.use_mpio("io", "auto") and comm.Get_size() > 1
    arrays = compute(
        model, subspace, data, grid, options, bn_data=bn_data, out=out, overwrite=overwrite,
        fingerprint=fingerprint, attrs=file_attrs, comm=comm, collective=collective,
        chunk_points=chunk_points, progress=progress, loss=loss, data_parallel=data_parallel,
    )  # fmt: skip
    if comm.Get_rank() != 0:
        return None
    if out is not None:
        ds = results.load(out)
    else:
        attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
        ds = results.to_dataset(grid, arrays, subspace.basis, attrs)
    return _summarised(ds, loss_name, False, out)


def _summarised(
    ds: xr.Dataset, loss: str, interpolation: bool, out: Optional[Union[str, Path]]
) -> xr.Dataset:
    """The Dataset (and the file `out`) with perplexity and, on a line, the loss barrier."""
    arrays, attrs, lines = results.summary(ds, loss, interpolation)
    ds, _ = results.with_summary(ds, loss, interpolation)
    if out is not None and (arrays or attrs):
        surface_file.write_summary(Path(out), arrays, attrs)
    for line in lines:
        print(line)
    return ds
