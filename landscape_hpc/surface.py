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
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm import tqdm

from landscape_hpc import directions, parallel, pca, store
from landscape_hpc.cli import hydra_command
from landscape_hpc.config import DirectionsConfig, EngineConfig, SurfaceConfig
from landscape_hpc.data import Split, dataset_attrs, load_dataset, num_classes
from landscape_hpc.devices import rank_device
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.evaluate import (
    BN_MODES,
    LOSSES,
    STRATEGIES,
    evaluate_points,
    points_per_pass,
    resolve_strategy,
)
from landscape_hpc.grid import Grid, chunk_indices, default_chunk_points
from landscape_hpc.models import build_model
from landscape_hpc.models.checkpoint import file_sha256, load_state_dict_file
from landscape_hpc.params import ParamDict
from landscape_hpc.subspace import Subspace

log = logging.getLogger(__name__)

_JOB_KEY = "surface_job"
_NEEDS_TRAJECTORY = (
    "directions.kind=pca needs directions.trajectory=<folder or glob of checkpoints>, e.g. the "
    "folder `python -m landscape_hpc.train save_every=1` wrote"
)


def build_basis(
    cfg: DirectionsConfig,
    model: nn.Module,
    origin: ParamDict,
    ndim: int,
    trust_checkpoint: bool = False,
) -> list[ParamDict]:
    """The directions of a surface, as the directions config asks."""
    check_choice("directions.kind", cfg.kind, directions.KINDS)
    if cfg.kind == "pca" and not cfg.load:
        return pca_directions(cfg, model, origin, ndim, trust_checkpoint)[0]
    if cfg.load:
        param_keys = [name for name, _ in model.named_parameters()]
        basis = store.read_directions(cfg.load, origin, param_keys)
        if len(basis) < ndim:
            raise UserError(
                f"directions.load={cfg.load} holds {len(basis)} direction(s) but the grid is "
                f"{ndim}D; set grid.y=null or load a file with a y direction"
            )
        return basis[:ndim]
    if cfg.kind == "random":
        keys = directions.direction_keys(model, cfg.dir_type)
        return directions.random_basis(
            origin, keys, ndim, cfg.seed, cfg.norm, cfg.ignore, cfg.same_dir
        )
    if cfg.kind == "models":
        targets = [cfg.model2, cfg.model3][:ndim]
        for axis, (key, path) in enumerate(
            zip(("directions.model2", "directions.model3"), targets)
        ):
            if not path:
                raise UserError(
                    f"directions.kind=models needs {key}=<checkpoint> for the "
                    f"{'xy'[axis]} axis" + ("; or set grid.y=null for 1D" if axis else "")
                )
        return [
            directions.model_difference(load_state_dict_file(path, trust_checkpoint), origin, path)
            for path in targets
        ]
    raise AssertionError(f"directions.kind={cfg.kind} passed check_choice but is not handled")


def pca_directions(
    cfg: DirectionsConfig,
    model: nn.Module,
    origin: ParamDict,
    ndim: int,
    trust_checkpoint: bool = False,
) -> tuple[list[ParamDict], pca.ProjectedTrajectory]:
    """The top `ndim` PCA directions of the checkpoints `cfg.trajectory` around `origin` (the end
    of the run), on the devices of the origin, and the trajectory projected onto them (Li et al.
    2018, sec. 7). The tensors are chosen as for random directions: `dir_type` (parameters or
    the whole state) and `ignore=biasbn` (1-D tensors stay zero)."""
    if not cfg.trajectory:
        raise UserError(_NEEDS_TRAJECTORY)
    check_choice("directions.ignore", cfg.ignore, directions.IGNORES)
    check_choice("directions.projection", cfg.projection, pca.PROJECTIONS)
    keys = [
        k
        for k in directions.direction_keys(model, cfg.dir_type)
        if cfg.ignore == "none" or origin[k].dim() > 1
    ]
    trajectory = pca.load_trajectory(cfg.trajectory, trust_checkpoint)
    basis, projected = pca.trajectory_directions(trajectory, origin, keys, ndim, cfg.projection)
    on_device = [{k: v.to(origin[k].device) for k, v in d.items()} for d in basis]
    return on_device, projected


def build_directions(
    comm: Any,
    cfg: DirectionsConfig,
    model: nn.Module,
    origin: ParamDict,
    ndim: int,
    trust_checkpoint: bool = False,
) -> tuple[list[ParamDict], Optional[pca.ProjectedTrajectory]]:
    """The basis on every rank, and the projected trajectory of PCA directions (None otherwise).

    PCA reads the whole trajectory: rank 0 computes it and broadcasts the result, so every rank
    holds the same bits. Directions loaded from a PCA surface file bring its trajectory along."""
    if cfg.kind == "pca" and not cfg.load:
        basis, projected = parallel.on_master(
            comm, lambda: pca_directions(cfg, model, _cpu(origin), ndim, trust_checkpoint)
        )
        return [{k: v.to(origin[k].device) for k, v in d.items()} for d in basis], projected
    basis = build_basis(cfg, model, origin, ndim, trust_checkpoint)
    projected = store.read_trajectory(cfg.load) if cfg.load else None
    return basis, None if projected is None else projected.first(ndim)


def _cpu(state: ParamDict) -> ParamDict:
    return {k: v.cpu() for k, v in state.items()}


def resolve_origin(cfg: SurfaceConfig) -> SurfaceConfig:
    """kind=pca without model.checkpoint: the origin is the last checkpoint of the trajectory
    (the end of the run; pass model.checkpoint=<run>/model.pt when the run's last epoch is not a
    multiple of save_every). Other configs come back unchanged."""
    d = cfg.directions
    if d.kind != "pca" or d.load or cfg.model.checkpoint or not d.trajectory:
        return cfg
    last = str(pca.find_checkpoints(d.trajectory)[-1])
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=last))


def _log_trajectory(projected: pca.ProjectedTrajectory, grid: Grid) -> None:
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
    file: Optional[store.SurfaceFile]  # set where this rank writes its own chunks (mpio)

    def points_per_pass(self) -> int:
        """Points the engine evaluates in one batched pass (1 for the sequential strategy)."""
        inputs = next(iter(self.data.values()))[0]
        if resolve_strategy(self.model, inputs.device, self.options.strategy) == "sequential":
            return 1
        return points_per_pass(
            self.model, self.subspace, inputs[0], self.options.batch_size, self.options.memory_mb
        )

    def evaluate(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        coords = torch.from_numpy(self.grid.coords(flat))
        metrics = evaluate_points(
            self.model, self.subspace, coords, self.data, self.options, self.bn_data
        )
        out = {}
        for split, m in metrics.items():
            out[f"{split}_loss"], out[f"{split}_acc"] = m.loss, m.acc
        return out


def _surface_task(flat: np.ndarray) -> Optional[dict[str, np.ndarray]]:
    """Runs on a worker: evaluates the chunk, writes it itself under mpio, else returns it."""
    job: SurfaceJob = parallel.worker_state(_JOB_KEY)
    values = job.evaluate(flat)
    if job.file is not None:
        job.file.write(flat, values)
        return None
    return values


def _validate(cfg: SurfaceConfig) -> Grid:
    grid = Grid.from_spec(cfg.grid.x, cfg.grid.y)
    check_choice("engine.bn", cfg.engine.bn, BN_MODES)
    check_choice("engine.loss", cfg.engine.loss, LOSSES)
    check_choice("engine.strategy", cfg.engine.strategy, STRATEGIES)
    store.use_mpio("io", cfg.io)  # a known mode, available here
    check_choice("directions.kind", cfg.directions.kind, directions.KINDS)
    check_choice("directions.projection", cfg.directions.projection, pca.PROJECTIONS)
    if cfg.directions.kind == "pca" and not cfg.directions.load:
        if not cfg.directions.trajectory:
            raise UserError(_NEEDS_TRAJECTORY)
        if cfg.directions.same_dir:
            raise UserError(
                "directions.same_dir=true does not apply to directions.kind=pca (y is PC2); "
                "drop it, or use grid.y=null for PC1 only"
            )
    if not cfg.splits:
        raise UserError("splits is empty; use e.g. splits=[train,test]")
    for key, value in (
        ("engine.batch_size", cfg.engine.batch_size),
        ("engine.memory_mb", cfg.engine.memory_mb),
    ):
        if value <= 0:
            raise UserError(f"{key}={value} must be > 0")
    return grid


def _fingerprint(
    cfg: SurfaceConfig,
    grid: Grid,
    basis: list[ParamDict],
    sha: Optional[str],
    counts: dict,
    projected: Optional[pca.ProjectedTrajectory] = None,
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
        "directions_sha256": store.directions_sha256(basis),
        "trajectory_sha256": None if projected is None else projected.sha256(),
        "splits": list(cfg.splits),
        "loss": cfg.engine.loss,
        "bn": cfg.engine.bn,
    }


def compute_surface(cfg: SurfaceConfig, comm: Any = None) -> Path:
    """Computes (or resumes) the surface file `cfg.out`; returns its path on every rank."""
    comm = comm if comm is not None else parallel.world()
    rank = comm.Get_rank()
    grid = _validate(cfg)
    cfg = resolve_origin(cfg)
    if rank == 0 and cfg.model.checkpoint and cfg.directions.kind == "pca":
        log.info("origin (end of the trajectory): %s", cfg.model.checkpoint)
    device = rank_device(comm, cfg.device)  # collective: every rank, here

    splits: dict[str, Split] = load_dataset(cfg.dataset, device)
    unknown = [s for s in cfg.splits if s not in splits]
    if unknown:
        raise UserError(
            f"splits={list(cfg.splits)}: {unknown} not in the data set ({', '.join(splits)})"
        )
    first = splits[cfg.splits[0]]
    n_classes = num_classes(cfg.dataset, splits)
    model = build_model(cfg.model, tuple(first.inputs.shape[1:]), n_classes).to(device)
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
        **{k: v for k, v in counts.items()},
    }
    mpio = store.use_mpio("io", cfg.io)
    out = Path(cfg.out)
    surface = _open_surface(
        comm,
        mpio,
        out,
        grid,
        basis,
        list(cfg.splits),
        fingerprint,
        attrs,
        cfg.overwrite,
        trajectory=projected,
    )
    try:
        options = cfg.engine
        data = {s: (splits[s].inputs, splits[s].labels) for s in cfg.splits}
        bn_data = splits["train"].inputs if "train" in splits else first.inputs
        job = SurfaceJob(model, subspace, data, bn_data, options, grid, surface if mpio else None)
        parallel.set_worker_state(_JOB_KEY, job)
        _run(comm, job, surface, cfg)
    finally:
        parallel.clear_worker_state(_JOB_KEY)
        if surface is not None:
            surface.close()
    return out


def _open_surface(
    comm: Any, mpio: bool, out: Path, *args: Any, **kwargs: Any
) -> Optional[store.SurfaceFile]:
    """mpio: every rank opens the file (collectively); gather: only the master does, and tells the
    workers whether it could, so no rank is left waiting when the file is refused."""
    if mpio:
        return store.SurfaceFile.open(out, *args, comm=comm, **kwargs)
    return parallel.on_master(
        comm, lambda: store.SurfaceFile.open(out, *args, **kwargs), share=False
    )


def _run(
    comm: Any, job: SurfaceJob, surface: Optional[store.SurfaceFile], cfg: SurfaceConfig
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
            if result.value is not None:
                surface.write(result.task, result.value)
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
