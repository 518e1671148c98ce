"""The Hessian maps of a surface file (HDF5): what `python -m landscape_hpc.geometry hessian
surface=s.h5` adds to a surface file (files/surface.py) next to its metrics.

Layout (every other dataset and attribute of the surface file is left as it is):
  max_eig, min_eig  (ny, nx) or (nx,)  float64  the largest / smallest Hessian eigenvalue (the
                                                ends of the Lanczos Ritz values) at each grid
                                                point; NaN where not computed, or diverged
  hessian_done      same shape         uint8    1 = the point was computed: its eigenvalues are
                                                final, and NaN ones mean it diverged (such a
                                                point is not tried again on resume, only with
                                                overwrite); 0 = not computed yet
  max_eig.attrs["hessian"]  JSON of the settings the maps were made with (split, samples, Lanczos
                            steps and tolerance, seed, precision, loss): a run with other
                            settings is refused unless overwrite, which resets all three
                            datasets. Settings stored before lanczos_tol existed mean
                            lanczos_tol=0 (always lanczos_steps steps)
  max_eig.attrs["lanczos"]  JSON report of the Lanczos runs of the points computed so far:
                            points, iterations_min, iterations_max, residual_max (relative),
                            not_converged (count) and not_converged_points (flat indices, the
                            first 100)

Maps written before hessian_done existed resume too: the mask is then made from the maps
themselves, a point counting as done where neither eigenvalue is NaN.

Rank 0 alone opens the file for writing (files/hdf5.py's gather mode) and writes each point as
it arrives from the workers; it also decides whether the maps are resumed or refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np

from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5
from landscape_hpc.grid import Grid

MAX_EIG = "max_eig"
MIN_EIG = "min_eig"
MAPS = (MAX_EIG, MIN_EIG)
DONE = "hessian_done"
#: the attribute of max_eig holding the maps' settings (JSON)
FINGERPRINT_ATTR = "hessian"
#: the attribute of max_eig holding the Lanczos report of the points computed (JSON)
REPORT_ATTR = "lanczos"


class HessianMaps:
    """The maps of a surface file, open for writing on rank 0. Open with `HessianMaps.open`;
    close in `finally`."""

    def __init__(self, f: h5py.File, grid: Grid, lock: Optional[hdf5.OutputLock] = None):
        self.f = f
        self.grid = grid
        raw = f[MAX_EIG].attrs.get(REPORT_ATTR)
        self.report: dict[str, Any] = json.loads(raw) if raw is not None else {}
        self.lock = lock  # the surface file's lock: no surface or map run writes it meanwhile

    @classmethod
    def open(
        cls,
        path: Path,
        grid: Grid,
        fingerprint: Mapping[str, Any],
        overwrite: bool = False,
        comm: Any = None,
    ) -> Optional[HessianMaps]:
        """Opens the surface file `path` (of grid `grid`) for writing its maps: creates them
        (NaN, nothing done) when absent, resumes maps made with the same `fingerprint`, refuses
        maps made with other settings unless overwrite (which resets them). With `comm`: every
        rank calls it, rank 0 gets the maps and the others None; a refusal is raised on every
        rank."""
        wanted = json.dumps(dict(fingerprint), sort_keys=True)

        lock = hdf5.OutputLock(path, "surface")  # taken on rank 0 only, in decide()

        def decide() -> bool:
            hdf5.check_writable(path, key="surface")
            lock.acquire()
            try:
                if not overwrite:
                    _check_settings(path, dict(fingerprint))
            except BaseException:
                lock.release()
                raise
            return True  # the surface file is always kept: opened "r+"

        def setup(f: h5py.File, resumed: bool) -> None:
            _set_up_maps(f, path, grid, overwrite)
            f[MAX_EIG].attrs[FINGERPRINT_ATTR] = wanted

        try:
            f = hdf5.open_shared(path, comm, False, decide, setup)
        except BaseException:
            lock.release()
            raise
        return None if f is None else cls(f, grid, lock)

    def pending(self) -> np.ndarray:
        """Flat indices of the points not computed yet, ascending."""
        return np.flatnonzero(self.f[DONE][()].reshape(-1) == 0)

    def write(
        self, flat: int, max_eig: float, min_eig: float, lanczos: Optional[Mapping] = None
    ) -> None:
        """The eigenvalues of grid point `flat`, marked done (NaN ones: diverged), on disk;
        `lanczos` (LanczosResult.report()) is added to the maps' Lanczos report."""
        index = np.unravel_index(flat, self.grid.shape)
        self.f[MAX_EIG][index] = max_eig
        self.f[MIN_EIG][index] = min_eig
        self.f[DONE][index] = 1
        if lanczos is not None:
            self.report = add_to_report(self.report, flat, lanczos)
            self.f[MAX_EIG].attrs[REPORT_ATTR] = json.dumps(self.report, sort_keys=True)
        self.f.flush()

    def close(self) -> None:
        hdf5.close(self.f, self.lock)


def add_to_report(report: dict[str, Any], flat: int, lanczos: Mapping) -> dict[str, Any]:
    """The maps' Lanczos report with grid point `flat`'s run (LanczosResult.report()) added
    (the file's maps and the library's in memory keep the same report)."""
    steps, residual = int(lanczos["iterations"]), float(lanczos["residual"])
    out = dict(report)
    out["points"] = report.get("points", 0) + 1
    out["iterations_min"] = min(report.get("iterations_min", steps), steps)
    out["iterations_max"] = max(report.get("iterations_max", steps), steps)
    if np.isfinite(residual):
        out["residual_max"] = max(report.get("residual_max", residual), residual)
    out["not_converged"] = report.get("not_converged", 0) + (not lanczos["converged"])
    points = list(report.get("not_converged_points", []))
    if not lanczos["converged"] and len(points) < 100:
        points.append(int(flat))
    out["not_converged_points"] = points
    return out


def _check_settings(path: Path, fingerprint: dict[str, Any]) -> None:
    """A UserError when the file holds maps made with other settings."""
    try:
        with h5py.File(path, "r") as f:
            if MAX_EIG not in f:
                return
            raw = f[MAX_EIG].attrs.get(FINGERPRINT_ATTR)
            raw_report = f[MAX_EIG].attrs.get(REPORT_ATTR)
        stored = json.loads(raw) if raw is not None else {}
        # the report is added to at every point: one that is not a JSON object would be
        # written over (or end the run half way), so it is checked before anything is written
        report = json.loads(raw_report) if raw_report is not None else {}
        for what, value in (("settings", stored), (f"{REPORT_ATTR} report", report)):
            if not isinstance(value, dict):
                raise ValueError(f"its {what} attribute is a JSON {type(value).__name__}")
    except (*hdf5.DAMAGED, TypeError) as err:  # json's errors are ValueErrors
        raise UserError(
            f"the Hessian maps in {path} cannot be read ({str(err).splitlines()[0]}); pass "
            "overwrite=true to recompute them (other datasets are kept)"
        ) from None
    legacy = bool(stored) and "lanczos_tol" not in stored
    if legacy:  # made before the tolerance: every point ran lanczos_steps steps
        stored["lanczos_tol"] = 0.0
    if stored != fingerprint:
        diff = hdf5.fingerprint_diff(stored, fingerprint)
        hint = (
            "\n(these maps were made before lanczos_tol existed, with a fixed number of steps: "
            "pass lanczos_tol=0 to resume them)"
            if legacy and stored["lanczos_tol"] != fingerprint.get("lanczos_tol")
            else ""
        )
        raise UserError(
            f"the Hessian maps in {path} were made with other settings:\n  "
            + "\n  ".join(diff)
            + hint
            + "\npass overwrite=true to recompute them (other datasets are kept)"
        )


def _set_up_maps(f: h5py.File, path: Path, grid: Grid, overwrite: bool) -> None:
    """Creates what the maps lack (the done mask of older maps from their NaNs), or resets them
    (overwrite); a UserError, before anything is changed, for maps of another grid shape."""
    for name in (*MAPS, DONE):
        if name in f and f[name].shape != grid.shape:
            raise UserError(f"{path}: {name} has shape {f[name].shape}, the grid {grid.shape}")
    legacy = MAX_EIG in f and DONE not in f and not overwrite
    for name in MAPS:
        if name not in f:
            f.create_dataset(name, shape=grid.shape, dtype="f8", fillvalue=np.nan)
        elif overwrite:
            f[name][...] = np.nan
    if DONE not in f:
        done = np.zeros(grid.shape, dtype=np.uint8)
        if legacy:  # maps made before the mask: a point is done where neither value is NaN
            done[~(np.isnan(f[MAX_EIG][()]) | np.isnan(f[MIN_EIG][()]))] = 1
        f.create_dataset(DONE, data=done)
    elif overwrite:
        f[DONE][...] = 0
    if overwrite and REPORT_ATTR in f[MAX_EIG].attrs:
        del f[MAX_EIG].attrs[REPORT_ATTR]
    f[MAX_EIG].attrs.update(units="1", long_name="largest Hessian eigenvalue of the loss")
    f[MIN_EIG].attrs.update(units="1", long_name="smallest Hessian eigenvalue of the loss")
    hdf5.attach_grid_scales(f, [*MAPS, DONE])


@dataclass
class Maps:
    """The maps as stored, with the grid: x (nx,), y (ny,) or None, and (ny, nx) or (nx,) maps;
    `done` as a bool array (for maps without a mask: where neither value is NaN)."""

    x: np.ndarray
    y: Optional[np.ndarray]
    max_eig: np.ndarray
    min_eig: np.ndarray
    done: np.ndarray
    settings: str = "{}"  # JSON: the settings the maps were made with (FINGERPRINT_ATTR)
    report: dict[str, Any] = field(default_factory=dict)  # the Lanczos report (REPORT_ATTR)


def read_maps(path: str | Path) -> Maps:
    """The maps of a surface file (for summaries, figures and the library's Dataset)."""
    with h5py.File(path, "r") as f:
        x = f["xcoordinates"][()]
        y = f["ycoordinates"][()] if "ycoordinates" in f else None
        hi, lo = f[MAX_EIG][()], f[MIN_EIG][()]
        done = f[DONE][()].astype(bool) if DONE in f else ~(np.isnan(hi) | np.isnan(lo))
        settings = f[MAX_EIG].attrs.get(FINGERPRINT_ATTR, "{}")
        report = f[MAX_EIG].attrs.get(REPORT_ATTR)
    settings = settings.decode() if isinstance(settings, bytes) else str(settings)
    return Maps(x, y, hi, lo, done, settings, json.loads(report) if report is not None else {})
