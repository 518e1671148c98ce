"""Evaluating a grid of points over the MPI pool: the master hands out chunks of pending points,
the workers evaluate them and write them (parallel HDF5) or send them back; a world of one runs
the same code in-process. Where the values go is a store: a surface file (files/surface.py) or
`MemoryStore`, both with `pending()` and `write(flat, values)`.

data_parallel=k (groups.py): the workers form groups of k ranks; the master hands each chunk to
a group, whose every member evaluates all its points over its own shard of every split
(engine/shard.py: resident splits in contiguous index ranges, streamed ones batch i to member
i % k); the members' float64 sums (engine Sums) are added in member order (an allgather), then
divided, so the values are one process's up to the order of those additions. BN statistics
(bn=recompute) come from the whole split on every member: that pass is not split. Only the
group's leader writes (io=mpio) or sends its chunk to the master (io=gather).
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from landscape_hpc import groups as worker_groups
from landscape_hpc import parallel
from landscape_hpc.engine.data import as_split
from landscape_hpc.engine.evaluate import (
    Evaluator,
    Metrics,
    evaluate_points_loop,
    metrics_of,
    points_at_once,
)
from landscape_hpc.engine.losses import Sums
from landscape_hpc.engine.metrics import rows
from landscape_hpc.engine.precision import precision_error
from landscape_hpc.engine.shard import shard
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
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
    data_parallel: int = 1  # ranks per group evaluating one chunk over shards of the data
    member: int = 0  # this rank's index in its group (0: the leader, which writes)

    def shard(self, member: int, count: int) -> None:
        """Keeps member `member` of `count`'s shard of every split (engine/shard.py); BN
        statistics stay the whole split's (the "train" split when no bn_data was given)."""
        self.member = member
        if self.bn_data is None and self.options.bn == "recompute" and "train" in self.data:
            self.bn_data = self.data["train"]
        batch = self.options.batch_size
        self.data = {
            n: shard(as_split(s, None, batch, n), member, count) for n, s in self.data.items()
        }

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
        group = worker_groups.worker_group()
        notes = []
        if group.Get_size() == 1:
            local = metrics = self._evaluator()(coords)
        else:
            local, metrics, shards = self._group_metrics(group, coords)
            notes.append(shards)
        if first and self.options.precision != "fp32" and self.member == 0:
            notes.append(self.precision_report(coords[:1], local))
        report = "; ".join(notes) if first and self.member == 0 and notes else None
        return surface_file.metric_values(metrics), report

    def _evaluator(self) -> Evaluator:
        if self.evaluator is None:  # built on the first chunk, kept for the next ones
            self.evaluator = Evaluator(
                self.model, self.subspace, self.data, self.options, self.bn_data, loss=self.loss
            )
        return self.evaluator

    def _group_metrics(
        self, group: Any, coords: torch.Tensor
    ) -> tuple[dict[str, Metrics], dict[str, Metrics], str]:
        """(this member's shard's metrics, the group's, what each member counted) at coords:
        every member's sums, or its error, reach every member (allgather), added in member
        order, then divided. An error on any member is raised on all of them (none is left
        waiting in the allgather)."""
        part, problem = None, None
        try:
            sums = self._evaluator().sums(coords)
            part = {name: sums_array(s) for name, s in sums.items()}
        except Exception as err:  # shared with the group below, raised on every member
            problem = (isinstance(err, UserError), f"{type(err).__name__}: {err}")
        shared = group.allgather((part, problem, parallel.world().Get_rank()))
        for _, (user, message), rank in (s for s in shared if s[1] is not None):
            kind = UserError if user else RuntimeError
            raise kind(f"rank {rank} of this data_parallel group: {message}")
        parts = [p for p, _, _ in shared]  # in member order, the same on every member
        ranks = ", ".join(str(rank) for _, _, rank in shared)
        counted = ", ".join(
            f"{name} {' + '.join(f'{p[name][1, 0]:.0f}' for p in parts)}" for name in part
        )
        shards = f"data_parallel: ranks {ranks} counted {counted} (samples or tokens)"
        return metrics_of(shard_sums([part])), metrics_of(shard_sums(parts)), shards

    def precision_report(self, coords: torch.Tensor, metrics: dict) -> str:
        """Below fp32, the error it costs: the chunk's first point again at fp32 (the plain
        loop: one point per rank and run, on this rank's shard of the data under
        data_parallel) against its value at engine.precision."""
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


def sums_array(sums: Sums) -> np.ndarray:
    """A split's sums as rows (4, K) of float64: loss, its count, correct, their count."""
    r = rows(sums)
    return torch.stack([r.loss, r.loss_count, r.correct, r.acc_count]).cpu().numpy()


def shard_sums(parts: list[dict[str, np.ndarray]]) -> dict[str, Sums]:
    """The sums of a group: its members' {split: sums as rows (4, K)} added in member order."""
    added = {name: functools.reduce(np.add, [p[name] for p in parts]) for name in parts[0]}
    return {name: Sums(*torch.from_numpy(np.ascontiguousarray(a))) for name, a in added.items()}


def _task(flat: np.ndarray) -> tuple[Optional[dict[str, np.ndarray]], Optional[str]]:
    """Runs on a worker: evaluates the chunk, writes it itself under mpio, else returns it;
    with the worker's precision report (GridRun.evaluate). Of a data_parallel group only the
    leader writes or returns the chunk."""
    job: GridRun = parallel.worker_state(_JOB_KEY)
    values, report = job.evaluate(flat)
    if job.member != 0:
        return None, None
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
    with worker_groups.worker_groups(comm, job.data_parallel) as groups:
        if groups is not None and comm.Get_rank() != 0:
            job.shard(groups.member, groups.size)
        _run_chunks(comm, job, store, name, chunk_points, progress, groups)


def _run_chunks(
    comm: Any,
    job: GridRun,
    store: Any,
    name: str,
    chunk_points: Optional[int],
    progress: bool,
    groups: Optional[worker_groups.Groups],
) -> None:
    rank, size = comm.Get_rank(), comm.Get_size()
    workers = (size - 1) // job.data_parallel  # the groups (0: the world of one)
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
        chunk = chunk_points or default_chunk_points(n_pending, workers, job.points_per_pass())
        chunks = chunk_indices(pending, chunk)
    show = progress and rank == 0 and n_pending > 0
    bar = tqdm(total=n_pending, unit="pt", desc="surface", disable=not show)
    per_rank: dict[int, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    start = time.perf_counter()
    with parallel.worker_pool(_JOB_KEY, job):
        try:
            results = worker_groups.run_group_tasks(comm, _task, chunks, _describe_chunk, groups)
            for result in results:
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
