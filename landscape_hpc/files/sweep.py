"""The sweep file (HDF5): one group per job, shared by every rank of an MPI sweep.

    jobs/<model>/fill_<p>/seed_<s>/                 one job (SweepJob.key)
        xcoordinates (W,), ycoordinates (H,)        the pattern's plane axes (α, β)
        train_loss, train_acc, test_loss, test_acc  (H, W) float64, NaN = not computed
        done                                        (H, W) uint8
        mask                                        (H, W) uint8, 1 = low-loss cell
        status                                      uint8: 0 pending, 1 done, 2 failed
        reason, host                                fixed-length strings
        rank, steps, bn, converged                  integers (steps: where the fit stopped)
        seconds, train_seconds, heldout_seconds,    float64: the job's wall time, of it the fit
        eval_seconds, scale                         (held-out checks included), the checks, the
                                                    evaluation of every cell, all of the run that
                                                    finished the job (a resumed job: its last
                                                    leg); the plane's scale
        metrics                                     (2, 15) float64: rows train, test;
                                                    columns METRIC_COLUMNS (attrs rows, columns;
                                                    files before the scores: 10 columns)
        history                                     (rows, 10) float64, NaN rows unused: the
                                                    held-out check every eval_every steps,
                                                    columns HISTORY_COLUMNS (attrs columns)
        attrs: model, fill_prob, seed, fingerprint (JSON of what makes two runs the same job)
    attrs: version, config (resolved YAML), io_driver, created

Each job group follows the surface-file layout (docs/file-format.md), so the conventions
of `python -m landscape_hpc.plot` and h5py readers apply to it. Under MPI every rank opens the
file with driver='mpio' and creates every group and dataset collectively before work starts
(HDF5 metadata changes are collective); a worker then writes its own job's values without any
metadata change, `status` last, so a killed sweep leaves every finished job readable and the
others pending.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import h5py
import numpy as np

from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5
from landscape_hpc.files.sweep_layout import (  # DONE, FAILED: re-exported (sweep.run)
    DONE,  # noqa: F401
    FAILED,  # noqa: F401
    METRIC_COLUMNS,
    METRIC_SPLITS,
    PENDING,
    SCALARS,
    STATUS_NAMES,
    TEXT,
    VALUE_NAMES,
    done_without_values,
    shape_problem,
)
from landscape_hpc.grid import cell_coords, pattern_to_surface
from landscape_hpc.mpo.convergence import HISTORY_COLUMNS
from landscape_hpc.mpo.patterns import trainable_cells
from landscape_hpc.mpo.scores import SCORE_COLUMNS, pattern_scores
from landscape_hpc.sweep.jobs import SweepJob


@dataclass
class Outcome:
    """What a job produced: its values over the plane (surface orientation) and metrics, or why
    it failed; where and how long it ran."""

    status: int
    reason: str = ""
    values: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, len(HISTORY_COLUMNS))))
    steps: int = 0
    bn: bool = False
    converged: bool = False
    scale: float = float("nan")
    seconds: float = 0.0
    train_seconds: float = 0.0
    heldout_seconds: float = 0.0
    eval_seconds: float = 0.0
    host: str = ""
    rank: int = 0

    def without_values(self) -> Outcome:
        """The small part, for a message to the master once the worker wrote the values."""
        return dataclasses.replace(self, values={}, history=self.history[:0])


@dataclass(frozen=True)
class JobSpec:
    """A job with what its group is created from: its mask, fingerprint, history length."""

    job: SweepJob
    mask: np.ndarray  # (H, W) pattern orientation, True = low-loss
    fingerprint: dict[str, Any]
    history_rows: int = 1  # the most held-out checks the fit can record


class SweepFile:
    """An open sweep file. `SweepFile.open(...)` creates or resumes; close in `finally`."""

    def __init__(self, f: h5py.File, collective: bool, lock: Optional[hdf5.OutputLock] = None):
        self.f = f
        self.collective = collective  # mpio: never flush outside collective calls
        self.lock = lock  # held on rank 0 while the file is open

    @classmethod
    def open(
        cls,
        path: str | Path,
        specs: list[JobSpec],
        attrs: Mapping[str, Any],
        overwrite: bool = False,
        comm: Any = None,
        collective: bool = False,
    ) -> Optional[SweepFile]:
        """Opens `path` for these jobs: keeps the jobs already in it when their fingerprints
        match, refuses the file when one does not (unless overwrite), adds the missing job
        groups. `comm` and `collective`: as hdf5.open_shared (collective: every rank passes the
        same specs; gather: the file on rank 0, None on the others)."""
        path = Path(path)
        collective = collective and comm is not None
        # two sweeps on one file (one with overwrite, or through a symlink) would both run:
        # rank 0 takes the lock before it decides, as the surface file does
        lock = hdf5.OutputLock(path, "sweep.file")

        def decide() -> bool:
            hdf5.check_writable(path, "sweep.file")
            lock.acquire()
            try:
                _check_existing(path, specs, overwrite)
            except BaseException:
                lock.release()
                raise
            return path.exists() and not overwrite

        def setup(f: h5py.File, resumed: bool) -> None:
            if not resumed:
                hdf5.write_header(f, attrs, collective)
            for spec in specs:
                if f"jobs/{spec.job.key}" not in f:
                    _create_job(f, spec)
                _fit_history(f[f"jobs/{spec.job.key}"], spec.history_rows)

        f = hdf5.open_locked(lock, path, comm, collective, decide, setup)
        if f is None:
            return None
        return cls(f, collective, lock)

    def status(self, job: SweepJob) -> int:
        return int(self.f[f"jobs/{job.key}/status"][()])

    def steps(self, job: SweepJob) -> int:
        return int(self.f[f"jobs/{job.key}/steps"][()])

    def converged(self, job: SweepJob) -> bool:
        return bool(self.f[f"jobs/{job.key}/converged"][()])

    def write(self, job: SweepJob, outcome: Outcome) -> None:
        """Writes a job's outcome into its group (raw data only: independent under mpio),
        `status` last so a half-written job still reads as pending."""
        g = self.f[f"jobs/{job.key}"]
        for name, value in outcome.values.items():
            g[name][...] = value
        if outcome.values:
            g["done"][...] = 1
        metrics = np.full((len(METRIC_SPLITS), len(METRIC_COLUMNS)), np.nan)
        for i, split in enumerate(METRIC_SPLITS):
            for j, col in enumerate(METRIC_COLUMNS):
                metrics[i, j] = outcome.metrics.get(split, {}).get(col, np.nan)
        g["metrics"][...] = metrics
        history = np.full(g["history"].shape, np.nan)
        rows = min(len(outcome.history), history.shape[0])
        history[:rows] = outcome.history[:rows]
        g["history"][...] = history
        for name in SCALARS:
            g[name][()] = getattr(outcome, name)
        for name, size in TEXT.items():
            g[name][()] = getattr(outcome, name).encode()[:size]
        g["status"][()] = outcome.status
        if not self.collective:
            self.f.flush()  # one writer: hand the job to the OS now, so a killed run keeps it

    def close(self) -> None:
        hdf5.close(self.f, self.lock)


def _check_existing(path: Path, specs: list[JobSpec], overwrite: bool) -> None:
    """A UserError when `path` may not be used for these jobs."""
    hdf5.check_writable(path, "sweep.file")
    if not path.exists() or overwrite:
        return
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise UserError(
            f"{path} exists and is not an HDF5 file; move it away or pass overwrite=true"
        ) from None
    with f:
        if "jobs" not in f:
            raise UserError(
                f"{path} exists but is not a landscape_hpc sweep file; choose another "
                "sweep.file= (or out_dir=) or pass overwrite=true"
            )
        for spec in specs:
            key = f"jobs/{spec.job.key}"
            if key not in f:
                continue
            try:
                stored = json.loads(f[key].attrs["fingerprint"])
            except hdf5.DAMAGED as err:  # json's errors are ValueErrors
                raise UserError(
                    f"{path}: job {spec.job.key} has no readable fingerprint ({err}); choose "
                    "another sweep.file= (or out_dir=) or pass overwrite=true"
                ) from None
            wanted = json.loads(json.dumps(spec.fingerprint))
            if not isinstance(stored, dict):
                raise UserError(
                    f"{path}: job {spec.job.key}'s fingerprint is a JSON "
                    f"{type(stored).__name__}, not an object; choose another sweep.file= (or "
                    "out_dir=) or pass overwrite=true"
                )
            try:
                lie = shape_problem(f[key]) or done_without_values(f[key])
            except hdf5.DAMAGED as err:  # bytes h5py cannot read
                lie = f"cannot be read ({str(err).splitlines()[0] if str(err) else err!r})"
            if lie:
                raise UserError(
                    f"{path}: job {spec.job.key} {lie}, so the sweep is not resumed; choose "
                    "another sweep.file= (or out_dir=) or pass overwrite=true to start again"
                )
            diff = hdf5.fingerprint_diff(stored, wanted)
            if diff:
                raise UserError(
                    f"{path} holds job {spec.job.key} made with other settings, so the sweep is "
                    "not resumed:\n  " + "\n  ".join(diff) + "\nchoose another sweep.file= "
                    "(or out_dir=) or pass overwrite=true to start the sweep again"
                )


def _scores_of(g: h5py.Group) -> dict[str, float]:
    """SCORE_COLUMNS of a done job whose file predates them, from its cells and mask (the
    trained cells as its fingerprint's skip_interior_cells says)."""
    mask = pattern_to_surface(g["mask"][()].astype(bool))  # surface → pattern orientation
    skip = json.loads(g.attrs["fingerprint"]).get("skip_interior_cells", True)
    trained = trainable_cells(mask, bool(skip))
    out = {}
    for split in METRIC_SPLITS:
        scores = pattern_scores(g[f"{split}_loss"][()], g[f"{split}_acc"][()], mask, trained)
        out.update({f"{split}_{k}": v for k, v in scores.items()})
    return out


def _create_job(f: h5py.File, spec: JobSpec) -> None:
    g = f.create_group(f"jobs/{spec.job.key}")
    g.attrs["model"] = spec.job.model
    g.attrs["fill_prob"] = spec.job.fill_prob
    g.attrs["seed"] = spec.job.seed
    g.attrs["fingerprint"] = json.dumps(spec.fingerprint, sort_keys=True)
    x, y = cell_coords(spec.mask.shape)
    g.create_dataset("xcoordinates", data=x)
    g.create_dataset("ycoordinates", data=y)
    shape = spec.mask.shape
    for name in VALUE_NAMES:
        g.create_dataset(name, shape=shape, dtype="f8", fillvalue=np.nan)
    g.create_dataset("done", shape=shape, dtype="u1", fillvalue=0)
    g.create_dataset("mask", data=pattern_to_surface(spec.mask).astype(np.uint8))
    hdf5.attach_grid_scales(g, [*VALUE_NAMES, "done", "mask"])  # as the surface file
    g.create_dataset("status", shape=(), dtype="u1", fillvalue=PENDING)
    g.create_dataset(
        "metrics", shape=(len(METRIC_SPLITS), len(METRIC_COLUMNS)), dtype="f8", fillvalue=np.nan
    )
    g["metrics"].attrs["rows"] = list(METRIC_SPLITS)
    g["metrics"].attrs["columns"] = list(METRIC_COLUMNS)
    for name, dtype in SCALARS.items():
        g.create_dataset(name, shape=(), dtype=dtype, fillvalue=0)
    for name, size in TEXT.items():
        g.create_dataset(name, shape=(), dtype=f"S{size}")


def _fit_history(g: h5py.Group, rows: int) -> None:
    """The job's history dataset, created or grown to `rows` rows (metadata: collective under
    mpio, so every rank calls it with the same specs). Chunked without filters: workers still
    write it independently."""
    if "history" not in g:
        h = g.create_dataset(
            "history",
            shape=(rows, len(HISTORY_COLUMNS)),
            maxshape=(None, len(HISTORY_COLUMNS)),
            chunks=(64, len(HISTORY_COLUMNS)),
            dtype="f8",
            fillvalue=np.nan,
        )
        h.attrs["columns"] = list(HISTORY_COLUMNS)
    elif g["history"].shape[0] < rows:
        g["history"].resize(rows, axis=0)


def read_jobs(path: str | Path) -> list[dict[str, Any]]:
    """Every job of a sweep file as a row: model, bn, fill_prob, seed, status, converged, reason,
    metrics (train_acc_low, ..., test_pattern_score; NaN where the file has no such column, but
    the scores of a done job in a file made before them are computed from its cells),
    steps, seconds (and their split), host, rank, and `history` (rows, HISTORY_COLUMNS) without
    unused rows; in file order."""
    rows = []
    with h5py.File(path, "r") as f:
        groups: list[h5py.Group] = []
        f["jobs"].visititems(
            lambda _name, obj: (
                groups.append(obj) if isinstance(obj, h5py.Group) and "status" in obj else None
            )
        )
        for g in groups:
            try:
                lie = shape_problem(g) or done_without_values(g)
                if not lie:
                    rows.append(_row(g))
            except (*hdf5.DAMAGED, TypeError, AttributeError, IndexError) as err:
                # bytes h5py cannot read, a fingerprint that is not JSON (the shapes were checked)
                lie = f"cannot be read ({str(err).splitlines()[0] if str(err) else err!r})"
            if lie:
                raise UserError(
                    f"{path}: job {g.name} {lie}; rerun the sweep with overwrite=true (or "
                    "remove the file) to remake it"
                )
    return rows


def _row(g: h5py.Group) -> dict[str, Any]:
    """A job group's row for read_jobs (its shapes and types checked by shape_problem)."""
    metrics = g["metrics"][()]
    columns = [str(c) for c in g["metrics"].attrs.get("columns", METRIC_COLUMNS[:5])]
    row: dict[str, Any] = {
        "model": str(g.attrs["model"]),
        "bn": bool(g["bn"][()]),
        "fill_prob": float(g.attrs["fill_prob"]),
        "seed": int(g.attrs["seed"]),
        "status": STATUS_NAMES[int(g["status"][()])],
        "converged": bool(g["converged"][()]) if "converged" in g else False,
    }
    for i, split in enumerate(METRIC_SPLITS):
        for col in METRIC_COLUMNS:
            j = columns.index(col) if col in columns else None
            row[f"{split}_{col}"] = float(metrics[i, j]) if j is not None else np.nan
    if row["status"] == "done" and not set(SCORE_COLUMNS) <= set(columns):
        row.update(_scores_of(g))  # a file made before the scores: from its cells
    row["steps"] = int(g["steps"][()])
    for name in ("seconds", "train_seconds", "heldout_seconds", "eval_seconds"):
        row[name] = float(g[name][()]) if name in g else np.nan
    row["host"] = g["host"][()].decode()
    row["rank"] = int(g["rank"][()])
    row["reason"] = g["reason"][()].decode()
    history = g["history"][()] if "history" in g else np.zeros((0, len(HISTORY_COLUMNS)))
    row["history"] = history[np.isfinite(history[:, 0])]
    return row
