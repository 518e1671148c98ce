"""Evaluating a grid of points over the MPI pool: the master hands out chunks of pending points,
the workers evaluate them and write them (parallel HDF5) or send them back; a world of one runs
the same code in-process. Where the values go is a store: a surface file (files/surface.py) or
`MemoryStore`, both with `pending()` and `write(flat, values)`.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from landscape_hpc import parallel
from landscape_hpc.engine.evaluate import Evaluator, evaluate_points_loop, points_at_once
from landscape_hpc.engine.precision import precision_error
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.files import surface as surface_file
from landscape_hpc.grid import Grid, chunk_indices, default_chunk_points

log = logging.getLogger(__name__)

_JOB_KEY = "surface_job"


class MemoryStore:
    """A surface held in memory: NaN = not computed yet, as in the file."""

    def __init__(self, grid: Grid, names: list[str]):
        self.grid = grid
        self.arrays = {name: np.full(grid.shape, np.nan) for name in names}
        self.arrays["done"] = np.zeros(grid.shape, dtype=np.uint8)

    def pending(self) -> np.ndarray:
        return np.flatnonzero(self.arrays["done"].reshape(-1) == 0)

    def write(self, flat: np.ndarray, values: dict[str, np.ndarray]) -> None:
        for name, array in self.arrays.items():
            view = array.reshape(-1)  # a view: the arrays are contiguous
            view[flat] = 1 if name == "done" else values[name]


@dataclass
class GridRun:
    """Everything a rank needs to evaluate chunks of grid points."""

    model: nn.Module
    subspace: Subspace
    data: dict[str, Any]
    bn_data: Any
    options: Any  # EngineConfig
    grid: Grid
    file: Optional[surface_file.SurfaceFile]  # set where this rank writes its own chunks (mpio)
    loss: Any = None  # a loss spec overriding options.loss (a callable from the library)
    evaluator: Optional[Evaluator] = None

    def points_per_pass(self) -> int:
        """Points the engine evaluates in one pass, before auto has timed anything."""
        first = next(iter(self.data.values()))
        sample = first[0][0] if isinstance(first, tuple) else first.sample()
        return points_at_once(self.model, self.subspace, sample, self.options)

    def evaluate(self, flat: np.ndarray) -> tuple[dict[str, np.ndarray], Optional[str]]:
        """The chunk's values; and on a rank's first chunk below fp32, what the precision
        costs there (precision_report), for rank 0 to log."""
        coords = torch.from_numpy(self.grid.coords(flat))
        first = self.evaluator is None
        if first:  # built on the first chunk, kept for the next ones
            self.evaluator = Evaluator(
                self.model, self.subspace, self.data, self.options, self.bn_data, loss=self.loss
            )
        metrics = self.evaluator(coords)
        report = None
        if first and self.options.precision != "fp32":
            report = self.precision_report(coords[:1], metrics)
        return surface_file.metric_values(metrics), report

    def precision_report(self, coords: torch.Tensor, metrics: dict) -> str:
        """Below fp32, the error it costs: the chunk's first point again at fp32 (the plain
        loop: one point per rank and run) against its value at engine.precision."""
        fp32 = replace(self.options, precision="fp32")
        ref = evaluate_points_loop(
            self.model, self.subspace, coords, self.data, fp32, self.bn_data, loss=self.loss
        )
        first = {name: replace(m, loss=m.loss[:1], acc=m.acc[:1]) for name, m in metrics.items()}
        error = precision_error(first, ref)
        return (
            f"engine.precision={self.options.precision}: at its first point the loss is "
            f"{error['loss_rel']:.2e} (relative) and the accuracy {error['acc_points']:.2g} "
            "points from fp32"
        )


def _task(flat: np.ndarray) -> tuple[Optional[dict[str, np.ndarray]], Optional[str]]:
    """Runs on a worker: evaluates the chunk, writes it itself under mpio, else returns it;
    with the worker's precision report (GridRun.evaluate)."""
    job: GridRun = parallel.worker_state(_JOB_KEY)
    values, report = job.evaluate(flat)
    if job.file is not None:
        job.file.write(flat, values)
        return None, report
    return values, report


def run_grid(
    comm: Any,
    job: GridRun,
    store: Any,
    name: str,
    chunk_points: Optional[int] = None,
    progress: bool = True,
) -> None:
    """Every pending point of `store` evaluated and written (the store is rank 0's: the file in
    gather mode, or the memory store). Ends with one log line per rank, and the total."""
    rank, size = comm.Get_rank(), comm.Get_size()
    chunks: list[np.ndarray] = []
    n_pending = 0
    if rank == 0:
        pending = store.pending()
        n_pending = len(pending)
        if n_pending < job.grid.size:
            log.info(
                "resuming %s: %d of %d points already done, %d to compute",
                name,
                job.grid.size - n_pending,
                job.grid.size,
                n_pending,
            )
        chunk = chunk_points or default_chunk_points(n_pending, size - 1, job.points_per_pass())
        chunks = chunk_indices(pending, chunk)
    show = progress and rank == 0 and n_pending > 0
    bar = tqdm(total=n_pending, unit="pt", desc="surface", disable=not show)
    per_rank: dict[int, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    start = time.perf_counter()
    with parallel.worker_pool(_JOB_KEY, job):
        try:
            for result in parallel.run_tasks(comm, _task, chunks, describe=_describe_chunk):
                values, report = result.value
                if report is not None:  # workers log nothing themselves (cli)
                    log.info("rank %d: %s", result.rank, report)
                if values is not None:
                    store.write(result.task, values)
                per_rank[result.rank][0] += len(result.task)
                per_rank[result.rank][1] += result.seconds
                bar.update(len(result.task))
        finally:
            bar.close()
    wall = time.perf_counter() - start
    for r, (n, secs) in sorted(per_rank.items()):
        log.info("rank %d: %d points in %.1f s (%.2f points/s)", r, n, secs, n / max(secs, 1e-9))
    if per_rank:
        log.info(
            "all ranks: %d points in %.1f s (%.2f points/s)",
            n_pending,
            wall,
            n_pending / max(wall, 1e-9),
        )


def _describe_chunk(flat: np.ndarray) -> str:
    return f"chunk of {len(flat)} points (flat indices {int(flat[0])}..{int(flat[-1])})"
