"""Surfaces as xarray Datasets, and to and from the surface file (the command's HDF5 format).

    ds = lh.surface(model, data)         # dims ("y", "x"), variables train_loss, train_acc, ...
    lh.save(ds, "s.h5")                  # the layout of docs/file-format.md, resumable
    ds = lh.load("s.h5")                 # any surface file: ours (command or library) or
                                         # loss-landscape's

A Dataset keeps the directions it was computed along in `ds.attrs["basis"]` (a list of
{state_dict key: float32 array}), so `save` writes them into the file as the command does (they
are not netCDF attributes: drop them before `ds.to_netcdf`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import xarray as xr

from landscape_hpc.connectivity import loss_barrier, perplexity
from landscape_hpc.errors import UserError
from landscape_hpc.files import surface as surface_file
from landscape_hpc.files.surface_read import read_attrs, read_basis_arrays, read_surface
from landscape_hpc.grid import Grid

_UNITS = {
    "acc": ("percent", "accuracy"),
    "loss": ("1", "loss (mean over the split)"),
    "ppl": ("1", "perplexity (exp of the mean loss)"),
}
#: the losses whose surfaces also get <split>_ppl
PER_TOKEN = ("lm", "lm_aligned")


def split_size(split: Any) -> int:
    """Samples in an engine split: a resident (inputs, labels) pair or a streamed source."""
    if isinstance(split, tuple):
        return int(split[0].shape[0]) if hasattr(split[0], "shape") else len(split[0])
    return int(getattr(split, "n", -1))


def _dims(grid_y: Optional[np.ndarray]) -> tuple[str, ...]:
    return ("x",) if grid_y is None else ("y", "x")


def to_dataset(
    grid: Grid,
    arrays: Mapping[str, np.ndarray],
    basis: Sequence[Mapping[str, Any]],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """The surface's metrics (grid-shaped arrays, NaN = not computed) as a Dataset."""
    dims = _dims(grid.y)
    coords = {"x": ("x", grid.x, {"long_name": "coordinate along the x direction"})}
    if grid.y is not None:
        coords["y"] = ("y", grid.y, {"long_name": "coordinate along the y direction"})
    variables = {}
    for name, values in arrays.items():
        split, _, metric = name.rpartition("_")
        meta = {"long_name": "1 = every metric of the point is written"} if name == "done" else {}
        if metric in _UNITS:
            units, what = _UNITS[metric]
            meta = {"units": units, "long_name": f"{split} {what}"}
        variables[name] = (dims, np.asarray(values), meta)
    ds = xr.Dataset(variables, coords=coords, attrs=dict(attrs))
    ds.attrs["basis"] = [
        {k: _array(v) for k, v in sorted(direction.items())} for direction in basis
    ]
    return ds


def _array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def load(path: str | Path) -> xr.Dataset:
    """A surface file (the command's, the library's, or loss-landscape's layout) as a Dataset:
    its metrics on dims ("y", "x") or ("x",), `done`, its attributes, its directions."""
    surface = read_surface(path)
    grid = Grid(surface.x, surface.y)
    arrays = dict(surface.metrics)
    if not surface.legacy:
        done = np.isfinite(np.stack(list(surface.metrics.values()))).any(axis=0)
        arrays["done"] = done.astype(np.uint8)
    attrs = {k: v for k, v in read_attrs(path).items() if k != "basis"}
    attrs["source_file"] = str(Path(path).resolve())
    return to_dataset(grid, arrays, read_basis_arrays(path), attrs)


def grid_of(ds: xr.Dataset) -> Grid:
    """The grid a surface Dataset was computed on (its x and, for 2D, y coordinates)."""
    y = np.asarray(ds["y"], np.float64) if "y" in ds.coords else None
    return Grid(np.asarray(ds["x"], np.float64), y)


def save(ds: xr.Dataset, path: str | Path, overwrite: bool = False) -> Path:
    """Writes a surface Dataset (from `surface`, `interpolate` or `load`) as a surface file,
    the command's layout: its metrics, the points done, <split>_ppl, its directions and
    attributes. An existing file is refused unless `overwrite` (or it is the same job, then it
    is updated)."""
    path = Path(path)
    if "x" not in ds.coords:
        raise UserError("save(ds, ...): ds has no x coordinate; pass a Dataset from lh.surface")
    grid = grid_of(ds)
    names = [n for n in ds.data_vars if str(n).endswith(("_loss", "_acc"))]
    splits = list(dict.fromkeys(str(n).rpartition("_")[0] for n in names))
    missing = [n for n in surface_file.metric_names(splits) if n not in ds.data_vars]
    if missing:
        raise UserError(f"save(ds, ...): ds lacks {missing}; every split needs _loss and _acc")
    basis = [
        {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in d.items()}
        for d in ds.attrs.get("basis", [])
    ]
    attrs = {
        k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v, default=str)
        for k, v in ds.attrs.items()
        if k not in ("basis", "fingerprint", "source_file")
        and not k.endswith("_version")
        and k not in ("version", "created", "io_driver")
    }
    fingerprint = ds.attrs.get("fingerprint")
    fingerprint = json.loads(fingerprint) if isinstance(fingerprint, str) else {"saved": True}
    dims = _dims(grid.y)
    values = {n: np.asarray(ds[n].transpose(*dims), np.float64) for n in names}
    done = np.asarray(ds["done"].transpose(*dims)) != 0 if "done" in ds else None
    if done is None:
        done = np.isfinite(np.stack(list(values.values()))).any(axis=0)
    flat = np.flatnonzero(done.reshape(-1))
    f = surface_file.SurfaceFile.open(path, grid, basis, splits, fingerprint, attrs, overwrite)
    try:
        if len(flat):
            f.write(flat, {n: v.reshape(-1)[flat] for n, v in values.items()})
    finally:
        f.close()
    # derived arrays (<split>_ppl) go where the command's summary puts them, so load() reads
    # them back; they are not part of the resumable metrics (recomputed from the losses)
    derived = {
        str(n): np.asarray(ds[n].transpose(*dims), np.float64)
        for n in ds.data_vars
        if str(n).endswith("_ppl") and str(n).rpartition("_")[0] in splits
    }
    if derived:
        surface_file.write_summary(path, derived, {})
    return path


def summary(ds: xr.Dataset, loss: str, interpolation: bool) -> tuple[dict, dict, list[str]]:
    """What a finished surface adds (connectivity.py): <split>_ppl arrays for a per-token loss,
    and for a line between two nets (`interpolation`, 1D) the loss barrier of every split
    (Frankle et al. 2020) as attrs barrier_<split> and barrier_t_<split>; with lines to print."""
    arrays, attrs, lines = {}, {}, []
    losses = [str(n) for n in ds.data_vars if str(n).endswith("_loss")]
    if loss in PER_TOKEN:
        for name in losses:
            arrays[f"{name[: -len('_loss')]}_ppl"] = perplexity(ds[name].values)
    if interpolation and "y" not in ds.coords:
        t = np.asarray(ds["x"], np.float64)
        for name in losses:
            split = name[: -len("_loss")]
            height, where = loss_barrier(t, ds[name].values)
            attrs[f"barrier_{split}"], attrs[f"barrier_t_{split}"] = height, where
            lines.append(
                f"loss barrier ({split}): {height:.4g} at t = {where:.3g}"
                if np.isfinite(height)
                else f"loss barrier ({split}): not defined (the grid needs t = 0 and t = 1)"
            )
    return arrays, attrs, lines


def with_summary(ds: xr.Dataset, loss: str, interpolation: bool) -> tuple[xr.Dataset, list[str]]:
    """The Dataset with summary()'s arrays and attrs added (and its printable lines)."""
    arrays, attrs, lines = summary(ds, loss, interpolation)
    dims = _dims(grid_of(ds).y)
    for name, values in arrays.items():
        split, _, metric = name.rpartition("_")
        units, what = _UNITS[metric]
        ds[name] = (dims, values, {"units": units, "long_name": f"{split} {what}"})
    ds.attrs.update(attrs)
    return ds, lines
