"""Reading a surface file for figures: ours (files/surface.py writes it) or loss-landscape's
layout, checked so that a damaged or edited file is refused with a UserError naming it (a group
where an array belongs, metrics that are not numbers, odd axes, uneven trajectories, bytes h5py
cannot read), never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5

# --- reading: ours, and loss-landscape's layout --------------------------------------------


@dataclass
class Surface:
    """A surface file's grid and metrics; metrics are (ny, nx) or (nx,), NaN where not computed."""

    path: Path
    x: np.ndarray
    y: Optional[np.ndarray]
    metrics: dict[str, np.ndarray]
    n_done: int
    legacy: bool  # loss-landscape's layout (no `done`; -1 meant not computed)
    # PCA directions: trajectory/{x, y, epoch, lr} (n,) and the variance ratio of each direction
    trajectory: Optional[dict[str, np.ndarray]] = None
    explained_variance_ratio: Optional[np.ndarray] = None
    # grid.auto: the level the range was found by, in words ("train loss reaches ..."), or None
    range_level: Optional[str] = None

    @property
    def size(self) -> int:
        return len(self.x) * (1 if self.y is None else len(self.y))


def read_surface(path: str | Path) -> Surface:
    """Reads ours or loss-landscape's surface file; a UserError naming the file when it is not
    one (a group where an array belongs, arrays of the wrong shape or type, damaged bytes)."""
    path = Path(path)
    with hdf5.open_read(path) as f:
        try:
            return _read_surface(f, path)
        except UserError:  # a ValueError too, already naming the file and the fix
            raise
        except hdf5.DAMAGED as err:
            raise hdf5.damaged(path, "its surface", err) from None


def _read_surface(f: h5py.File, path: Path) -> Surface:
    if "xcoordinates" not in f:
        raise UserError(f"{path} has no xcoordinates: it is not a surface file")
    x = _axis(f, "xcoordinates", path)
    y = _axis(f, "ycoordinates", path) if "ycoordinates" in f else None
    shape = (len(x),) if y is None else (len(y), len(x))
    legacy = "done" not in f
    metrics = {}
    for name in f:
        if not name.endswith(("_loss", "_acc", "_ppl")) or not isinstance(f[name], h5py.Dataset):
            continue
        raw = f[name][()]
        if not np.issubdtype(np.asarray(raw).dtype, np.number):
            raise UserError(
                f"{path}: {name} holds {np.asarray(raw).dtype} values, not numbers; it is not "
                "a surface file this program wrote, or it was edited"
            )
        values = np.asarray(raw, dtype=np.float64)
        if values.size != int(np.prod(shape)):
            continue
        # loss-landscape stores (nx, ny) arrays filled in (y, x) row-major order
        values = values.reshape(shape)
        if legacy:
            values[values == -1] = np.nan
        metrics[name] = values
    done = (
        hdf5.read_array(f, "done", path)
        if not legacy
        else np.isfinite(next(iter(metrics.values()), x))
    )
    trajectory = read_trajectory_group(f, path) if "trajectory/x" in f else None
    ratio = f.attrs.get("explained_variance_ratio")
    if not metrics:
        raise UserError(f"{path} holds no *_loss or *_acc metric")
    ratio = None if ratio is None else np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    level = f.attrs.get("range_level")
    level = level.decode() if isinstance(level, bytes) else level
    level = level if isinstance(level, str) and len(level) <= 200 else None
    return Surface(path, x, y, metrics, int(np.sum(done)), legacy, trajectory, ratio, level)


#: the datasets of trajectory/ (files/surface.py's layout): y only for a 2D surface
TRAJECTORY_NAMES = ("x", "y", "epoch", "lr")
_TRAJECTORY_REQUIRED = ("x", "epoch", "lr")


def read_trajectory_group(f: h5py.File, path: str | Path) -> dict[str, np.ndarray]:
    """trajectory/{x, y, epoch, lr} of `f` as (n,) arrays (x, y, lr float64, epoch int64),
    checked against the layout before anyone draws or stores them: a UserError naming the file
    and the dataset when one is missing (y may be), not 1D, not numbers, of another length, or
    not finite (lr may be NaN: unknown), or when an epoch is not a whole number."""
    group = f["trajectory"]
    if not isinstance(group, h5py.Group):
        raise UserError(f"{path}: trajectory is not a group; {_REMAKE}")
    raw = {name: hdf5.read_array(group, name, path) for name in TRAJECTORY_NAMES if name in group}
    return check_trajectory(raw, path)


_REMAKE = "the file was edited or damaged; remake it with python -m landscape_hpc.surface"


def check_trajectory(raw: dict[str, object], path: str | Path) -> dict[str, np.ndarray]:
    """The checks and conversions of read_trajectory_group on arrays already read."""
    out: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        values = np.asarray(value)
        if values.ndim != 1 or not (
            np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
        ):
            raise UserError(
                f"{path}: trajectory/{name} is {values.dtype} of shape {values.shape}, not a 1D "
                f"array of numbers; {_REMAKE}"
            )
        values = values.astype(np.float64)
        bad = np.isinf(values) if name == "lr" else ~np.isfinite(values)
        if bad.any():
            raise UserError(
                f"{path}: trajectory/{name} holds {int(bad.sum())} non-finite value(s) "
                f"(first at index {int(np.flatnonzero(bad)[0])}); {_REMAKE}"
            )
        if name == "epoch":
            if np.any(values != np.round(values)) or np.any(np.abs(values) >= 2.0**62):
                raise UserError(f"{path}: trajectory/epoch holds non-integer epochs; {_REMAKE}")
            values = values.astype(np.int64)
        out[name] = values
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        shown = ", ".join(f"{k}: {len(v)}" for k, v in out.items())
        raise UserError(f"{path}: the trajectory's datasets differ in length ({shown}); {_REMAKE}")
    missing = [name for name in _TRAJECTORY_REQUIRED if name not in raw]
    if missing:
        raise UserError(f"{path}: trajectory/{missing[0]} is missing; {_REMAKE}")
    return out


def _axis(f: h5py.File, name: str, path: Path) -> np.ndarray:
    """A grid axis: a 1D array of finite numbers."""
    values = np.asarray(hdf5.read_array(f, name, path))
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.number) or values.size == 0:
        raise UserError(
            f"{path}: {name} is not a 1D array of numbers (shape {values.shape}, {values.dtype}); "
            "it is not a surface file this program wrote, or it was edited"
        )
    return values.astype(np.float64)


def read_attrs(path: str | Path) -> dict[str, object]:
    """The file's root attributes as plain Python values (strings, numbers, lists)."""
    path = Path(path)
    with hdf5.open_read(path) as f:
        try:
            return {k: _plain(v) for k, v in f.attrs.items()}
        except hdf5.DAMAGED as err:
            raise hdf5.damaged(path, "its attributes", err) from None


def read_basis_arrays(path: str | Path) -> list[dict[str, np.ndarray]]:
    """directions/x/<key>, directions/y/<key> of our layout as arrays (empty when absent)."""
    path = Path(path)
    basis = []
    with hdf5.open_read(path) as f:
        for axis in ("x", "y"):
            group = f.get(f"directions/{axis}")
            if not isinstance(group, h5py.Group):
                break
            basis.append(
                {
                    key: np.asarray(hdf5.read_array(group, key, path))
                    for key in group
                    if isinstance(group[key], h5py.Dataset)
                }
            )
    return basis


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
