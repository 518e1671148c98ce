"""Loss surfaces around a trained net (Li et al. 2018): 1D or 2D, along random filter-normalised
directions, model differences, PCA directions of a training trajectory or saved directions, on
one process or many.

    python -m landscape_hpc.surface                                    # digits, mpo_cnn, 21x21
    python -m landscape_hpc.surface model=resnet20 model.checkpoint=ck.pt dataset=cifar10 \\
        dataset.root=~/data grid.x=[-1,1,51] grid.y=[-1,1,51] out=resnet20.h5
    python -m landscape_hpc.surface directions.kind=models directions.model2=b.pt \\
        model.checkpoint=a.pt grid.x=[-0.5,1.5,41] grid.y=null          # 1D interpolation
    python -m landscape_hpc.train epochs=12 save_every=1 hydra.run.dir=runs/t  # a trajectory
    python -m landscape_hpc.surface directions.kind=pca directions.trajectory=runs/t \\
        grid.x=[-9.5,1.5,23] grid.y=[-3,2,11]             # along its PC1/PC2, around its end
    mpirun -n 8 python -m landscape_hpc.surface model=resnet56 model.checkpoint=ck.pt ...
    sbatch slurm/surface.sh model=resnet56 model.checkpoint=ck.pt ...

Re-running the same command resumes: only the points not done yet are computed.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from landscape_hpc import parallel
from landscape_hpc.cli import hydra_command
from landscape_hpc.config import EngineConfig, SurfaceConfig
from landscape_hpc.data import dataset_attrs
from landscape_hpc.devices import rank_device
from landscape_hpc.directions.build import (
    build_directions,
    check_directions,
    resolve_origin,
    stored,
)
from landscape_hpc.directions.pca import ProjectedTrajectory
from landscape_hpc.engine.evaluate import (
    Evaluator,
    check_engine,
    evaluate_points_loop,
    points_at_once,
)
from landscape_hpc.engine.precision import precision_error
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5
from landscape_hpc.files import surface as surface_file
from landscape_hpc.files.checkpoint import file_sha256
from landscape_hpc.files.directions import directions_sha256
from landscape_hpc.grid import Grid, chunk_indices, default_chunk_points
from landscape_hpc.params import ParamDict
from landscape_hpc.problem import load_problem

log = logging.getLogger(__name__)

_JOB_KEY = "surface_job"


def _log_trajectory(projected: ProjectedTrajectory, grid: Grid) -> None:
    """The variance the plane explains, and where the path lies against the grid."""
    ratios = ", ".join(
        f"PC{i + 1} {100 * r:.1f}%" for i, r in enumerate(projected.explained_variance_ratio)
    )
    spans, outside = [], False
    for i, values in enumerate((grid.x, grid.y)[: projected.coords.shape[1]]):
        c = projected.coords[:, i]
        spans.append(f"{'xy'[i]} in [{c.min():.3g}, {c.max():.3g}]")
        outside |= bool(c.min() < values[0] or c.max() > values[-1])
    log.info(
        "PCA of %d checkpoints: %s of the variance; the path spans %s",
        len(projected.epochs),
        ratios,
        ", ".join(spans),
    )
    if outside:
        log.warning("the trajectory leaves the grid: widen grid.x / grid.y to see all of it")


@dataclass
class SurfaceJob:
    """Everything a rank needs to evaluate chunks of grid points."""

    model: nn.Module
    subspace: Subspace
    data: dict[str, tuple[torch.Tensor, torch.Tensor]]
    bn_data: Optional[torch.Tensor]
    options: EngineConfig
    grid: Grid
    file: Optional[surface_file.SurfaceFile]  # set where this rank writes its own chunks (mpio)
    evaluator: Optional[Evaluator] = None

    def points_per_pass(self) -> int:
        """Points the engine evaluates in one pass, before auto has timed anything."""
        inputs = next(iter(self.data.values()))[0]
        return points_at_once(self.model, self.subspace, inputs[0], self.options)

    def evaluate(self, flat: np.ndarray) -> tuple[dict[str, np.ndarray], Optional[str]]:
        """The chunk's values; and on a rank's first chunk below fp32, what the precision
        costs there (precision_report), for rank 0 to log."""
        coords = torch.from_numpy(self.grid.coords(flat))
        first = self.evaluator is None
        if first:  # built on the first chunk, kept for the next ones
            self.evaluator = Evaluator(
                self.model, self.subspace, self.data, self.options, self.bn_data
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
        ref = evaluate_points_loop(self.model, self.subspace, coords, self.data, fp32, self.bn_data)
        first = {name: replace(m, loss=m.loss[:1], acc=m.acc[:1]) for name, m in metrics.items()}
        error = precision_error(first, ref)
        return (
            f"engine.precision={self.options.precision}: at its first point the loss is "
            f"{error['loss_rel']:.2e} (relative) and the accuracy {error['acc_points']:.2g} "
            "points from fp32"
        )


def _surface_task(flat: np.ndarray) -> tuple[Optional[dict[str, np.ndarray]], Optional[str]]:
    """Runs on a worker: evaluates the chunk, writes it itself under mpio, else returns it;
    with the worker's precision report (SurfaceJob.evaluate)."""
    job: SurfaceJob = parallel.worker_state(_JOB_KEY)
    values, report = job.evaluate(flat)
    if job.file is not None:
        job.file.write(flat, values)
        return None, report
    return values, report


def check_config(cfg: SurfaceConfig) -> Grid:
    """The one check of a surface config, before anything is loaded; returns its grid."""
    grid = Grid.from_spec(cfg.grid.x, cfg.grid.y)
    check_engine(cfg.engine)
    hdf5.use_mpio("io", cfg.io)  # a known mode, available here
    check_directions(cfg.directions, grid.ndim)
    if not cfg.splits:
        raise UserError("splits is empty; use e.g. splits=[train,test]")
    if cfg.chunk_points is not None and cfg.chunk_points < 1:
        raise UserError(
            f"chunk_points={cfg.chunk_points} must be at least 1, or null to choose it from the "
            "grid and the ranks"
        )
    return grid


def _fingerprint(
    cfg: SurfaceConfig,
    grid: Grid,
    basis: list[ParamDict],
    sha: Optional[str],
    counts: dict,
    projected: Optional[ProjectedTrajectory] = None,
) -> dict:
    """Everything that makes two runs the same job (so a file can be resumed). A key that is
    None here matches a file written before the key existed."""
    return {
        "model": cfg.model.name,
        "model_target": cfg.model.target,
        "model_kwargs": OmegaConf.to_container(OmegaConf.create(cfg.model.kwargs)),
        "checkpoint_sha256": sha,
        "init_seed": None if cfg.model.checkpoint else cfg.model.init_seed,
        **counts,
        "dataset_seed": cfg.dataset.seed,
        "max_samples": cfg.dataset.max_samples,
        "grid_x": [float(grid.x[0]), float(grid.x[-1]), len(grid.x)],
        "grid_y": None if grid.y is None else [float(grid.y[0]), float(grid.y[-1]), len(grid.y)],
        "directions_sha256": directions_sha256(basis),
        "trajectory_sha256": None if projected is None else projected.sha256(),
        "splits": list(cfg.splits),
        "loss": cfg.engine.loss,
        "bn": cfg.engine.bn,
        # None at fp32, so files made before the key resume at fp32 (and only at fp32)
        "precision": None if cfg.engine.precision == "fp32" else cfg.engine.precision,
    }


def compute_surface(cfg: SurfaceConfig, comm: Any = None) -> Path:
    """Computes (or resumes) the surface file `cfg.out`; returns its path on every rank."""
    comm = parallel.world_if_none(comm)
    rank = comm.Get_rank()
    grid = check_config(cfg)
    cfg = resolve_origin(cfg)
    if rank == 0 and cfg.model.checkpoint and cfg.directions.kind == "pca":
        log.info("origin (end of the trajectory): %s", cfg.model.checkpoint)
    problem = load_problem(cfg.model, cfg.dataset, rank_device(comm, cfg.device))  # collective
    problem.require(cfg.splits)
    model, splits = problem.model, problem.splits
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    basis, projected = build_directions(
        comm, cfg.directions, model, origin, grid.ndim, cfg.model.trust_checkpoint
    )
    if projected is not None and rank == 0:
        _log_trajectory(projected, grid)
    subspace = Subspace(origin, basis)

    sha = file_sha256(cfg.model.checkpoint) if cfg.model.checkpoint else None
    counts = dataset_attrs(cfg.dataset, splits)
    fingerprint = _fingerprint(cfg, grid, basis, sha, counts, projected)
    attrs = {
        "config": OmegaConf.to_yaml(cfg),
        "checkpoint": str(Path(cfg.model.checkpoint).resolve()) if cfg.model.checkpoint else "",
        "checkpoint_sha256": sha or "",
        "precision": cfg.engine.precision,  # engine/precision.py
        **{k: v for k, v in counts.items()},
    }
    mpio = hdf5.use_mpio("io", cfg.io)
    out = Path(cfg.out)
    surface = surface_file.SurfaceFile.open(
        out,
        grid,
        basis,
        list(cfg.splits),
        fingerprint,
        attrs,
        cfg.overwrite,
        comm=comm,
        collective=mpio,
        trajectory=None if projected is None else stored(projected),
    )
    data = {s: (splits[s].inputs, splits[s].labels) for s in cfg.splits}
    bn_data = splits["train" if "train" in splits else cfg.splits[0]].inputs
    job = SurfaceJob(model, subspace, data, bn_data, cfg.engine, grid, surface if mpio else None)
    try:
        with parallel.worker_pool(_JOB_KEY, job):
            _run(comm, job, surface, cfg)
    finally:
        if surface is not None:
            surface.close()
    return out


def _run(
    comm: Any, job: SurfaceJob, surface: Optional[surface_file.SurfaceFile], cfg: SurfaceConfig
) -> None:
    """The master hands out chunks of pending points and writes what comes back (gather); the
    workers evaluate them. Ends with one log line per rank, and the total."""
    rank, size = comm.Get_rank(), comm.Get_size()
    chunks: list[np.ndarray] = []
    n_pending = 0
    if rank == 0:
        pending = surface.pending()
        n_pending = len(pending)
        if n_pending < job.grid.size:
            log.info(
                "resuming %s: %d of %d points already done, %d to compute",
                cfg.out,
                job.grid.size - n_pending,
                job.grid.size,
                n_pending,
            )
        chunk = cfg.chunk_points or default_chunk_points(n_pending, size - 1, job.points_per_pass())
        chunks = chunk_indices(pending, chunk)
    bar = tqdm(total=n_pending, unit="pt", desc="surface", disable=rank != 0 or n_pending == 0)
    per_rank: dict[int, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    start = time.perf_counter()
    try:
        for result in parallel.run_tasks(comm, _surface_task, chunks, describe=_describe_chunk):
            values, report = result.value
            if report is not None:
                log.info("rank %d: %s", result.rank, report)
            if values is not None:
                surface.write(result.task, values)
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


def _command(cfg: SurfaceConfig, comm: Any) -> None:
    path = compute_surface(cfg, comm)
    if comm.Get_rank() == 0:
        log.info("surface file: %s", path)
        if cfg.plot:
            from landscape_hpc.plot import plot_surface_file

            for png in plot_surface_file(path):
                log.info("plot: %s", png)


main = hydra_command("surface", _command)

if __name__ == "__main__":
    main()
