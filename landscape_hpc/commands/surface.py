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
    mpirun -n 5 python -m landscape_hpc.surface data_parallel=2 ...  # 2 groups of 2 ranks
    sbatch slurm/surface.sh model=resnet56 model.checkpoint=ck.pt ...

Re-running the same command resumes: only the points not done yet are computed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from landscape_hpc import parallel, paths
from landscape_hpc.api import results
from landscape_hpc.api.auto_range import loss_along
from landscape_hpc.api.surface import compute
from landscape_hpc.auto_range import find_span, parse_level
from landscape_hpc.cli import hydra_command
from landscape_hpc.config import SurfaceConfig
from landscape_hpc.data import Split, dataset_attrs
from landscape_hpc.devices import rank_device
from landscape_hpc.directions.build import (
    build_directions,
    check_directions,
    resolve_origin,
    stored,
)
from landscape_hpc.directions.hessian import hessian_axes
from landscape_hpc.directions.pca import ProjectedTrajectory
from landscape_hpc.engine.evaluate import Evaluator, check_engine
from landscape_hpc.engine.losses import default_loss
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5
from landscape_hpc.files import surface as surface_file
from landscape_hpc.files.checkpoint import file_sha256
from landscape_hpc.files.directions import directions_sha256
from landscape_hpc.grid import Grid
from landscape_hpc.groups import check_group_size
from landscape_hpc.params import ParamDict
from landscape_hpc.problem import load_problem

log = logging.getLogger(__name__)


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


def check_config(cfg: SurfaceConfig) -> Grid:
    """The one check of a surface config, before anything is loaded; returns its grid."""
    grid = Grid.from_spec(cfg.grid.x, cfg.grid.y)
    check_engine(cfg.engine)
    hdf5.use_mpio("io", cfg.io)  # a known mode, available here
    check_directions(cfg.directions, grid.ndim)
    if cfg.grid.auto:
        parse_level(cfg.grid.auto_level)
        if not (cfg.grid.auto_margin >= 0 and cfg.grid.auto_max > 0):
            raise UserError(
                f"grid.auto_margin={cfg.grid.auto_margin} must be >= 0 and grid.auto_max="
                f"{cfg.grid.auto_max} > 0"
            )
    if not cfg.splits:
        raise UserError("splits is empty; use e.g. splits=[train,test]")
    if cfg.chunk_points is not None and cfg.chunk_points < 1:
        raise UserError(
            f"chunk_points={cfg.chunk_points} must be at least 1, or null to choose it from the "
            "grid and the ranks"
        )
    if cfg.data_parallel < 1:
        raise UserError(
            f"data_parallel={cfg.data_parallel} must be at least 1 (ranks per group; 1: each "
            "worker alone)"
        )
    return grid


def check_outputs(cfg: SurfaceConfig) -> None:
    """The surface file is none of the files it is computed from (even with overwrite=true:
    that replaces an earlier surface, never its inputs)."""
    d = cfg.directions
    inputs = {
        "model.checkpoint": cfg.model.checkpoint,
        "directions.load": d.load,
        "directions.model2": d.model2,
        "directions.model3": d.model3,
        "directions.trajectory": d.trajectory,
    }
    paths.check_no_alias({"out": cfg.out}, inputs)


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
    check_outputs(cfg)  # before resolve_origin: the origin may come from the trajectory
    check_group_size(comm, cfg.data_parallel)  # before anything is loaded
    cfg = resolve_origin(cfg)
    check_outputs(cfg)  # again: the origin the trajectory gave
    if rank == 0 and cfg.model.checkpoint and cfg.directions.kind == "pca":
        log.info("origin (end of the trajectory): %s", cfg.model.checkpoint)
    device = rank_device(comm, cfg.device)
    problem = load_problem(cfg.model, cfg.dataset, device, streamed=True)  # collective
    problem.require(cfg.splits)
    model, splits = problem.model, problem.splits
    if cfg.engine.loss == "auto":  # the file records the loss it was made with
        cfg.engine.loss = default_loss(model)
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    eigen: dict[str, Any] = {}
    if cfg.directions.kind == "hessian" and not cfg.directions.load:
        basis, projected, eigen = _hessian_directions(cfg, model, origin, splits, grid.ndim)
    else:
        basis, projected = build_directions(
            comm, cfg.directions, model, origin, grid.ndim, cfg.model.trust_checkpoint
        )
    subspace = Subspace(origin, basis)
    if cfg.grid.auto:  # found on rank 0 (logged there), the same grid on every rank
        grid = parallel.on_master(comm, lambda: _auto_grid(cfg, model, subspace, splits, grid))
    if projected is not None and rank == 0:
        _log_trajectory(projected, grid)

    sha = file_sha256(cfg.model.checkpoint) if cfg.model.checkpoint else None
    counts = dataset_attrs(cfg.dataset, splits)
    fingerprint = _fingerprint(cfg, grid, basis, sha, counts, projected)
    attrs = {
        "config": OmegaConf.to_yaml(cfg),
        "checkpoint": str(Path(cfg.model.checkpoint).resolve()) if cfg.model.checkpoint else "",
        "checkpoint_sha256": sha or "",
        "precision": cfg.engine.precision,  # engine/precision.py
        **{k: v for k, v in counts.items()},
        **eigen,  # kind=hessian: directions_eigenvalues, directions_residuals
    }
    if cfg.grid.auto:  # what the range was found by, for the figures' titles
        split = "train" if "train" in splits else cfg.splits[0]
        attrs["range_level"] = parse_level(cfg.grid.auto_level).describe(split)
    # a resident Split is an (inputs, labels) pair; a streamed one (a custom DataLoader) is the
    # engine's Streamed: the engine takes both (engine/data.py)
    data = {s: splits[s] for s in cfg.splits}
    bn_data = splits["train" if "train" in splits else cfg.splits[0]]
    compute(
        model,
        subspace,
        data,
        grid,
        cfg.engine,
        bn_data=bn_data,
        out=Path(cfg.out),
        overwrite=cfg.overwrite,
        fingerprint=fingerprint,
        attrs=attrs,
        trajectory=None if projected is None else stored(projected),
        comm=comm,
        collective=hdf5.use_mpio("io", cfg.io),
        chunk_points=cfg.chunk_points,
        data_parallel=cfg.data_parallel,
    )
    return Path(cfg.out)


def _auto_grid(cfg: SurfaceConfig, model: Any, subspace: Subspace, splits: dict, grid: Grid):
    """grid.auto=true (rank 0): axes of grid.x/grid.y's num over the span where the train loss
    first reaches grid.auto_level along each direction (auto_range.py)."""
    split = "train" if "train" in splits else cfg.splits[0]
    evaluator = Evaluator(model, subspace, {split: splits[split]}, cfg.engine, splits[split])
    axes = []
    for i, num in enumerate((len(grid.x), *(() if grid.y is None else (len(grid.y),)))):
        along = loss_along(evaluator, split, i, grid.ndim)
        span = find_span(along, cfg.grid.auto_level, max_coord=cfg.grid.auto_max, name="xy"[i])
        axes.append(span.axis(num, cfg.grid.auto_margin))
    return Grid.from_spec(axes[0], axes[1] if len(axes) > 1 else None)


def _hessian_directions(
    cfg: SurfaceConfig, model: Any, origin: ParamDict, splits: dict, ndim: int
) -> tuple[list[ParamDict], None, dict[str, Any]]:
    """directions.kind=hessian: the top `ndim` Hessian eigenvectors of the mean training loss
    at the origin (directions/hessian.py), the same on every rank; their eigenvalues and
    residuals for the file's attributes."""
    train = splits.get("train")
    if not isinstance(train, Split):
        raise UserError(
            "directions.kind=hessian needs the data set's train split in memory (its mean loss "
            "is differentiated); use a resident data set or directions.load=<eigenvectors file>"
        )
    axes = hessian_axes(model, origin, train.inputs, train.labels, ndim, loss=cfg.engine.loss,
                        seed=cfg.directions.seed, arithmetic=cfg.engine.precision)  # fmt: skip
    eigen = {"directions_eigenvalues": axes.eigenvalues, "directions_residuals": axes.residuals}
    return axes.basis, None, eigen


def summarise(path: Path, interpolation: bool) -> None:
    """Rank 0, after the run: the file gets <split>_ppl (a per-token loss) and, for a line
    between two nets (directions.kind=models, 1D), the loss barrier of every split
    (connectivity.py), which is also logged."""
    ds = results.load(path)
    loss = json.loads(ds.attrs.get("fingerprint", "{}")).get("loss", "ce")
    arrays, attrs, lines = results.summary(ds, loss, interpolation)
    if arrays or attrs:
        surface_file.write_summary(path, arrays, attrs)
    for line in lines:
        log.info(line)


def _command(cfg: SurfaceConfig, comm: Any) -> None:
    path = compute_surface(cfg, comm)
    if comm.Get_rank() == 0:
        summarise(path, interpolation=cfg.directions.kind == "models" and cfg.grid.y is None)
        log.info("surface file: %s", path)
        if cfg.plot:
            from landscape_hpc.plot import plot_surface_file

            for png in plot_surface_file(path):
                log.info("plot: %s", png)


main = hydra_command("surface", _command)

if __name__ == "__main__":
    main()
