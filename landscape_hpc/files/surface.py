"""The surface file (HDF5): layout, compatibility checks, chunk writes, direction files.

Layout (docs/file-format.md; readable by loss-landscape's plot scripts):
  xcoordinates (nx,), ycoordinates (ny,)            float64
  <split>_loss, <split>_acc  (ny, nx) or (nx,)      float64, NaN = not computed yet
  done                       same shape             uint8, 1 = every metric of the point written
  directions/x/<key>, directions/y/<key>            float32, a missing key is zero
  attrs: version, config, checkpoint, checkpoint_sha256, dataset, n_<split>, precision,
         io_driver, created, fingerprint (JSON of everything that makes two runs the same job),
         <software>_version
  x/ycoordinates are HDF5 dimension scales of every grid dataset; those carry units, long_name
Hessian maps (python -m landscape_hpc.geometry hessian surface=...) add max_eig, min_eig and
hessian_done: files/hessian_maps.py. files/source.py reads what the file says about the run that
made it (grid, model and data set, engine loss, checkpoint) for such commands.
PCA directions (directions.kind=pca) add the projected training trajectory:
  trajectory/x, trajectory/y (2D only), trajectory/lr  (n,) float64, one entry per checkpoint
  trajectory/epoch                                     (n,) int64
  attrs: explained_variance_ratio (d,) float64
  and loss-landscape's names for its plot_2D.py: proj_xcoord, proj_ycoord (hard links to
  trajectory/x, y) and explained_variance_ratio_ (d,)

Opened collectively (io=mpio) every rank holds the file through parallel HDF5; datasets are
created by all ranks together, before work starts, without compression filters (HDF5 refuses
independent writes through filters), and each worker writes its own chunks. Gathered
(io=gather) rank 0 alone writes (files/hdf5.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np

from landscape_hpc import paths
from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5
from landscape_hpc.files.directions import write_directions
from landscape_hpc.files.surface_read import read_trajectory_group
from landscape_hpc.grid import Grid
from landscape_hpc.params import ParamDict

METRICS = ("loss", "acc")


def metric_name(split: str, metric: str) -> str:
    """The dataset of one metric of one split: train_loss, test_acc, ..."""
    return f"{split}_{metric}"


def metric_names(splits: list[str]) -> list[str]:
    return [metric_name(split, m) for split in splits for m in METRICS]


def metric_values(per_split: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The engine's {split: Metrics(loss, acc)} as the file's {train_loss: ..., ...}."""
    return {metric_name(s, m): getattr(v, m) for s, v in per_split.items() for m in METRICS}


def read_fingerprint(path: Path) -> Optional[dict[str, Any]]:
    """The fingerprint of an existing surface file; None when it has none (not ours)."""
    with h5py.File(path, "r") as f:
        raw = f.attrs.get("fingerprint")
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if not isinstance(raw, str):
        raise TypeError(f"the fingerprint attribute is a {type(raw).__name__}, not JSON text")
    stored = json.loads(raw)
    if not isinstance(stored, dict):
        raise TypeError(
            f"the fingerprint attribute is a JSON {type(stored).__name__}, not an object"
        )
    return stored


def existing_fingerprint(path: Path, key: str) -> Optional[dict[str, Any]]:
    """read_fingerprint of a file a command is about to resume or replace (None when absent or
    not ours); a UserError naming config `key` when it is not HDF5 or its fingerprint is not
    JSON, before the command writes anything."""
    if not path.exists():
        return None
    paths.require_regular(path)  # a FIFO would block h5py's open
    try:
        return read_fingerprint(path)
    except OSError:
        raise UserError(
            f"{path} exists and is not an HDF5 file; move it away, choose another {key}= or "
            "pass overwrite=true"
        ) from None
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        what = str(err) if isinstance(err, TypeError) else "not JSON"
        raise UserError(
            f"{path}: its fingerprint attribute is damaged ({what}); move it away, choose "
            f"another {key}= or pass overwrite=true"
        ) from None


class SurfaceFile:
    """An open surface file. Create or resume with `SurfaceFile.open(...)`; close in `finally`."""

    def __init__(
        self,
        f: h5py.File,
        grid: Grid,
        names: list[str],
        collective: bool = False,
        lock: Optional[hdf5.OutputLock] = None,
    ):
        self.f = f
        self.lock = lock  # held on rank 0 while the file is open
        self.grid = grid
        self.names = names
        # opened with driver='mpio' by every rank (never ask f.driver: that call is collective)
        self.collective = collective

    @classmethod
    def open(
        cls,
        path: str | Path,
        grid: Grid,
        basis: list[ParamDict],
        splits: list[str],
        fingerprint: dict[str, Any],
        attrs: dict[str, Any],
        overwrite: bool = False,
        comm: Any = None,
        collective: bool = False,
        trajectory: Optional[Trajectory] = None,
    ) -> Optional[SurfaceFile]:
        """Opens `path` for this job: resumes a matching file, refuses one made for another job
        (unless overwrite), creates a new one otherwise. `comm` and `collective`: as
        hdf5.open_shared (collective: every rank passes the same basis and trajectory; gather:
        the file on rank 0, None on the others). `trajectory`: the path of PCA directions."""
        path = Path(path)
        names = metric_names(splits)

        lock = hdf5.OutputLock(path)  # taken on rank 0 only, in decide()

        def decide() -> bool:
            hdf5.check_writable(path)
            lock.acquire()
            try:
                _check_existing(path, fingerprint, overwrite)
                resumed = path.exists() and not overwrite
                if resumed:
                    _check_layout(path, grid, names)
            except BaseException:
                lock.release()
                raise
            return resumed

        def setup(f: h5py.File, resumed: bool) -> None:
            if resumed:
                return
            _create_layout(f, grid, basis, names)
            if trajectory is not None:
                _write_trajectory(f, trajectory)
            f.attrs["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
            hdf5.write_header(f, attrs, collective and comm is not None)

        f = hdf5.open_locked(lock, path, comm, collective, decide, setup)
        if f is None:
            return None
        return cls(f, grid, names, collective and comm is not None, lock)

    def pending(self) -> np.ndarray:
        """Flat indices of the points not done yet, ascending."""
        return np.flatnonzero(self.f["done"][()].reshape(-1) == 0)

    def n_done(self) -> int:
        return int(self.f["done"][()].sum())

    def write(self, flat: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """Writes the metrics of the points `flat` (K,) and marks them done, one contiguous run of
        each grid row at a time (hyperslab writes, independent under mpio)."""
        for start, stop, lo in _row_runs(np.asarray(flat), len(self.grid.x)):
            row, c0 = divmod(int(flat[lo]), len(self.grid.x))
            c1 = c0 + (stop - start)
            sel = np.s_[c0:c1] if self.grid.ndim == 1 else np.s_[row, c0:c1]
            for name in self.names:
                self.f[name][sel] = values[name][lo : lo + (stop - start)]
            self.f["done"][sel] = 1
        if not self.collective:
            # One writer (gather): hand this chunk to the OS now, so a killed run keeps it. Under
            # mpio raw writes go straight to the file, and a flush would be collective.
            self.f.flush()

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        hdf5.close(self.f, self.lock)


def _check_existing(path: Path, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """A UserError when `path` may not be used (absent, matching, or overwrite: it may)."""
    hdf5.check_writable(path)
    if not path.exists() or overwrite:
        return
    stored = existing_fingerprint(path, "out")
    if stored is None:
        raise UserError(
            f"{path} exists but is not a landscape_hpc surface file; "
            "choose another out= or pass overwrite=true"
        )
    diff = hdf5.fingerprint_diff(stored, fingerprint)
    if diff:
        raise UserError(
            f"{path} was made for another job, so it is not resumed:\n  "
            + "\n  ".join(diff)
            + "\nchoose another out= or pass overwrite=true to replace it"
        )


def _check_layout(path: Path, grid: Grid, names: list[str]) -> None:
    """A UserError when the file about to be resumed is not what this job writes (issue 33: a
    file is checked against what it claims, never repaired): its coordinates those of the grid
    in its fingerprint, every metric float64 of the grid's shape (a float16 copy would resume
    at 3 digits), `done` an integer mask of it, no point marked done with nothing written
    (every metric NaN), and no done point whose loss is NaN on one split but not on another (a
    point that diverged diverges on every split)."""
    fix = "choose another out= or pass overwrite=true to recompute it"
    axes = {"xcoordinates": grid.x, **({} if grid.y is None else {"ycoordinates": grid.y})}
    try:
        with h5py.File(path, "r") as f:
            stored_axes = {name: hdf5.read_array(f, name, path) for name in axes}
            arrays = {name: hdf5.read_array(f, name, path) for name in [*names, "done"]}
    except UserError as err:  # a ValueError too: caught before DAMAGED
        raise UserError(f"{err}; {fix}") from None
    except hdf5.DAMAGED as err:
        raise hdf5.damaged(path, "its datasets", err) from None
    for name, want in axes.items():
        got = np.asarray(stored_axes[name])
        if got.shape != want.shape or not np.issubdtype(got.dtype, np.number):
            raise UserError(
                f"{path}: {name} is {got.dtype} of shape {got.shape}, not the grid's "
                f"{len(want)} coordinates, so it cannot be resumed; {fix}"
            )
        if not np.array_equal(got.astype(np.float64), want):
            k = int(np.flatnonzero(got.astype(np.float64) != want)[0])
            raise UserError(
                f"{path}: {name}[{k}] is {float(got[k])!r}, the grid's is {float(want[k])!r}: "
                "the file does "
                f"not hold the grid it was made for, so it cannot be resumed; {fix}"
            )
    for name, values in arrays.items():
        ok = np.issubdtype(values.dtype, np.integer) if name == "done" else values.dtype == "f8"
        if values.shape != grid.shape or not ok:
            wanted = "integers" if name == "done" else "float64"
            raise UserError(
                f"{path}: {name} is {values.dtype} of shape {values.shape}, not {wanted} of the "
                f"grid's shape {grid.shape}, so it cannot be resumed; {fix}"
            )
    done = arrays.pop("done") != 0
    empty = done & np.all([np.isnan(v) for v in arrays.values()], axis=0)
    if empty.any():
        raise UserError(
            f"{path}: {int(empty.sum())} points are marked done but hold no value (NaN), so it "
            f"cannot be resumed; {fix}"
        )
    losses = {name: np.isnan(v) for name, v in arrays.items() if name.endswith("_loss")}
    if len(losses) > 1:
        nan_any = np.any(list(losses.values()), axis=0)
        nan_all = np.all(list(losses.values()), axis=0)
        mixed = done & nan_any & ~nan_all
        if mixed.any():
            flat = int(np.flatnonzero(mixed.reshape(-1))[0])
            split = next(name for name, nan in losses.items() if nan.reshape(-1)[flat])
            raise UserError(
                f"{path}: {int(mixed.sum())} done point(s) hold a NaN {split} where another "
                f"split's loss is finite (point {flat}): no divergence does that, the file is "
                f"inconsistent, so it cannot be resumed; {fix}"
            )


def _create_layout(f: h5py.File, grid: Grid, basis: list[ParamDict], names: list[str]) -> None:
    f.create_dataset("xcoordinates", data=grid.x)
    f["xcoordinates"].attrs.update(units="1", long_name="coordinate along the x direction")
    if grid.y is not None:
        f.create_dataset("ycoordinates", data=grid.y)
        f["ycoordinates"].attrs.update(units="1", long_name="coordinate along the y direction")
    for name in names:
        f.create_dataset(name, shape=grid.shape, dtype="f8", fillvalue=np.nan)
        f[name].attrs.update(_describe(name))
    f.create_dataset("done", shape=grid.shape, dtype="u1", fillvalue=0)
    f["done"].attrs.update(units="1", long_name="1 = every metric of the point is written")
    hdf5.attach_grid_scales(f, [*names, "done"])
    write_directions(f, basis)


def _describe(name: str) -> dict[str, str]:
    """units and long_name of a metric dataset (CF conventions: "1" is dimensionless)."""
    split, _, metric = name.rpartition("_")
    if metric == "acc":
        return {"units": "percent", "long_name": f"{split} accuracy"}
    if metric == "ppl":
        return {"units": "1", "long_name": f"{split} perplexity (exp of the mean loss)"}
    return {"units": "1", "long_name": f"{split} loss (mean over the split)"}


@dataclass
class Trajectory:
    """The training path stored with PCA directions: `datasets` {x, y (2D only), epoch, lr}
    (n,) each, and the variance ratio (d,) of each direction (pca.ProjectedTrajectory makes
    one and reads one back)."""

    datasets: dict[str, np.ndarray]
    explained_variance_ratio: np.ndarray


def _write_trajectory(f: h5py.File, trajectory: Trajectory) -> None:
    group = f.create_group("trajectory")
    for name, values in trajectory.datasets.items():
        group.create_dataset(name, data=values)
    ratio = np.asarray(trajectory.explained_variance_ratio, dtype=np.float64)
    f.attrs["explained_variance_ratio"] = ratio
    # loss-landscape's plot_2D.py --surf_file s.h5 --dir_file s.h5 --proj_file s.h5 reads these
    for ours, theirs in (("x", "proj_xcoord"), ("y", "proj_ycoord")):
        if ours in group:
            f[theirs] = group[ours]  # a hard link: the same data under a second name
    f.create_dataset("explained_variance_ratio_", data=ratio)


def read_trajectory(path: str | Path) -> Optional[Trajectory]:
    """The projected trajectory a surface file holds (PCA directions), None when it has none.

    The file is one `read_directions` accepted; a loss-landscape direction file gives no path."""
    with hdf5.open_read(path) as f:
        if "trajectory/x" not in f:
            return None
        datasets = read_trajectory_group(f, path)
        ratio = f.attrs.get("explained_variance_ratio")
        d = 2 if "y" in datasets else 1
        return Trajectory(
            datasets,
            np.full(d, np.nan) if ratio is None else _ratio(ratio, d, path),
        )


def _ratio(raw: Any, d: int, path: str | Path) -> np.ndarray:
    """The stored explained_variance_ratio (d,) float64; a UserError when it is not d numbers."""
    try:
        ratio = np.atleast_1d(np.asarray(raw, np.float64))
    except (TypeError, ValueError):
        ratio = np.zeros(0)
    if ratio.ndim != 1 or len(ratio) < d:
        raise UserError(
            f"{path}: explained_variance_ratio is not {d} number(s) or more; the file was "
            "edited or damaged; remake it with python -m landscape_hpc.surface"
        )
    return ratio


def _row_runs(flat: np.ndarray, nx: int):
    """(start, stop, lo) runs of consecutive indices that stay within one grid row."""
    if len(flat) == 0:
        return
    breaks = np.flatnonzero((np.diff(flat) != 1) | (flat[1:] % nx == 0)) + 1
    bounds = np.concatenate([[0], breaks, [len(flat)]])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        yield int(flat[lo]), int(flat[lo]) + int(hi - lo), int(lo)


def write_summary(path: Path, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
    """Derived results of a finished surface (rank 0, after the run): grid-shaped arrays such
    as <split>_ppl (replaced when present) and attributes such as barrier_<split>."""
    with h5py.File(path, "r+") as f:
        for name, values in arrays.items():
            if name in f:
                del f[name]
            f.create_dataset(name, data=np.asarray(values, np.float64))
            f[name].attrs.update(_describe(name))
        f.attrs.update(dict(attrs))
