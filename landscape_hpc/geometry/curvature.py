"""Curvature of the landscape, the `hessian` experiment: the extreme Hessian eigenvalues at a point
and over a surface grid (Li et al. 2018, "are we really seeing convexity?"; loss-landscape's
`plot_hessian_eigen.py`; PyHessian's trace).

At a point (the model, its checkpoint or init) it prints and saves λ_max, λ_min (Lanczos on
Hessian-vector products, landscape_hpc/hessian.py) and tr H (Hutchinson). Over a surface it takes
the grid and directions of a surface file made by `python -m landscape_hpc.surface` and writes
`max_eig` and `min_eig` at every grid point into that file, plus a map of |λ_min / λ_max|:
near 0 where the landscape is convex, large where negative curvature dominates.

    python -m landscape_hpc.geometry hessian model=mlp model.checkpoint=ck.pt     # one point
    python -m landscape_hpc.geometry hessian surface=runs/s/surface.h5            # the grid
    python -m landscape_hpc.geometry hessian surface=s.h5 lanczos_steps=40 max_samples=500
    mpirun -n 4 python -m landscape_hpc.geometry hessian surface=s.h5             # 3 workers

Surface mode rebuilds the model and the data set from the surface file itself (its `config`
attribute, the checkpoint it names with that file's SHA-256 checked, its directions): the
model/dataset keys of this command are not used there (`surface_checkpoint=` when the checkpoint
has moved). The loss is the surface's `engine.loss`; BN layers use each point's running
statistics. Lanczos stops at `lanczos_tol` or `lanczos_steps`. The maps (max_eig, min_eig,
hessian_done, settings and Lanczos report: docs/file-format.md) resume (only points not done),
refuse other settings unless overwrite=true. One point per task of the MPI pool; rank 0 writes.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from torch import nn
from tqdm import tqdm

from landscape_hpc import parallel
from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import Split, subset
from landscape_hpc.devices import rank_device
from landscape_hpc.engine.losses import LOSSES
from landscape_hpc.engine.precision import PRECISIONS
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.files.directions import read_directions
from landscape_hpc.files.hessian_maps import HessianMaps, read_maps
from landscape_hpc.files.source import locate_checkpoint, read_surface_source
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.curvature_job import MapJob, make_job, map_job
from landscape_hpc.hessian import LanczosResult
from landscape_hpc.problem import Problem, load_problem

log = logging.getLogger(__name__)

_JOB_KEY = "hessian_job"


def load_problem_and_split(
    comm: Any, cfg: HessianConfig, model_cfg: ModelConfig, dataset_cfg: DatasetConfig
) -> tuple[Problem, Split]:
    """The problem (model and data) on this rank's device, and its differentiated split
    (cfg.split, at most cfg.max_samples of it). Collective: every rank calls it."""
    problem = load_problem(model_cfg, dataset_cfg, rank_device(comm, cfg.device))
    problem.require([cfg.split], "split")
    split = problem.splits[cfg.split]
    if cfg.max_samples is not None:
        split = subset(split, cfg.max_samples, dataset_cfg.seed)
    return problem, split


def check_config(cfg: HessianConfig) -> None:
    check_choice("loss", cfg.loss, LOSSES)
    check_choice("precision", cfg.precision, PRECISIONS)
    if cfg.double and cfg.precision != "fp32":
        raise UserError(
            f"precision={cfg.precision} with double=true: lower precisions apply to float32; "
            "drop double=true or set precision=fp32"
        )
    if cfg.lanczos_steps < 2:
        raise UserError(f"lanczos_steps={cfg.lanczos_steps} must be at least 2")
    if not cfg.lanczos_tol >= 0:
        raise UserError(f"lanczos_tol={cfg.lanczos_tol} must be 0 (all steps) or positive")
    if cfg.trace_samples < 0:
        raise UserError(f"trace_samples={cfg.trace_samples} must be 0 (no trace) or positive")
    if cfg.batch_size < 1:
        raise UserError(f"batch_size={cfg.batch_size} must be at least 1")
    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise UserError(f"max_samples={cfg.max_samples} must be at least 1 (or null for all)")


# ---------------------------------------------------------------------------------------------
# at a point


@dataclass
class PointResult:
    max_eig: float
    min_eig: float
    trace: float  # NaN when trace_samples = 0
    ritz: np.ndarray  # (steps,) Lanczos Ritz values, ascending
    lanczos: dict[str, Any]  # LanczosResult.report(): iterations, converged, change, residual
    num_params: int
    num_samples: int
    seconds: float


def _point_task(what: str) -> Any:
    job, cfg, state = parallel.worker_state(_JOB_KEY)
    if what == "lanczos":
        return job.run_lanczos(state)
    return job.trace(state, cfg.trace_samples)


def run_point(cfg: HessianConfig, comm: Any = None) -> Optional[PointResult]:
    """The command's point mode: the problem cfg names, then `point_curvature`."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    problem, split = load_problem_and_split(comm, cfg, cfg.model, cfg.dataset)
    return point_curvature(problem.model, split, cfg, comm)


def point_curvature(
    model: nn.Module, split: Split, cfg: HessianConfig, comm: Any = None
) -> Optional[PointResult]:
    """λ_max, λ_min and tr H at the model's weights on `split` (cfg: the Lanczos and Hutchinson
    settings, cfg.loss); the Lanczos run and the Hutchinson probes are two tasks of the pool (in
    parallel on two workers). Returns the result on rank 0 (the library's lh.hessian calls it)."""
    comm = parallel.world_if_none(comm)
    job = make_job(model, split, cfg, cfg.loss)
    state = {k: v.detach() for k, v in job.model.state_dict().items()}
    start = time.perf_counter()
    tasks = ["lanczos"] + (["trace"] if cfg.trace_samples > 0 else [])
    values: dict[str, Any] = {}
    with parallel.worker_pool(_JOB_KEY, (job, cfg, state)):
        for result in parallel.run_tasks(comm, _point_task, tasks):
            values[result.task] = result.value
    if comm.Get_rank() != 0:
        return None
    run: LanczosResult = values["lanczos"]
    ritz = run.ritz.numpy().astype(np.float64)
    if cfg.lanczos_tol > 0 and not run.converged:
        log.warning(LanczosResult.unconverged("the point", cfg.lanczos_steps, cfg.lanczos_tol))
    return PointResult(
        max_eig=float(ritz[-1]),
        min_eig=float(ritz[0]),
        trace=float(values.get("trace", float("nan"))),
        ritz=ritz,
        lanczos=run.report(),
        num_params=sum(state[k].numel() for k in job.keys),
        num_samples=len(split.labels),
        seconds=time.perf_counter() - start,
    )


def write_point(result: PointResult, cfg: HessianConfig, out_dir: Path) -> Path:
    """hessian_point.csv: one row, its columns in the order below."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "hessian_point.csv"
    row = {
        "max_eig": result.max_eig,
        "min_eig": result.min_eig,
        "abs_min_over_max": abs(result.min_eig / result.max_eig),
        "trace": result.trace,
        "lanczos_steps": len(result.ritz),
        "trace_samples": cfg.trace_samples,
        "num_params": result.num_params,
        "num_samples": result.num_samples,
        "seconds": round(result.seconds, 3),
        "lanczos_max_steps": cfg.lanczos_steps,
        "lanczos_tol": cfg.lanczos_tol,
        "precision": cfg.precision,
        **{f"lanczos_{k}": v for k, v in result.lanczos.items() if k != "iterations"},
    }
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    return path


def summarize_point(result: PointResult, cfg: HessianConfig) -> str:
    ratio = abs(result.min_eig / result.max_eig)
    lines = [
        f"Hessian of the mean {cfg.split} loss of {cfg.model.name} "
        f"({result.num_params} parameters, {result.num_samples} samples):",
        f"  max eigenvalue {result.max_eig:.6g}, min eigenvalue {result.min_eig:.6g}, "
        f"|min/max| {ratio:.4g}  ({len(result.ritz)} Lanczos steps)",
    ]
    if np.isfinite(result.trace):
        lines.append(f"  trace ≈ {result.trace:.6g} (Hutchinson, {cfg.trace_samples} probes)")
    lines.append(f"  {result.seconds:.1f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# over a surface grid


def map_fingerprint(cfg: HessianConfig, loss: str, num_samples: int) -> dict:
    """The settings that make two maps the same computation (so a file can be resumed)."""
    return {
        "split": cfg.split,
        "max_samples": cfg.max_samples,
        "num_samples": num_samples,
        "lanczos_steps": cfg.lanczos_steps,
        "lanczos_tol": cfg.lanczos_tol,
        "seed": cfg.seed,
        "double": cfg.double,
        "loss": loss,
        # only when not fp32, so maps made before the key resume
        **({"precision": cfg.precision} if cfg.precision != "fp32" else {}),
    }


def _map_task(flat: int) -> tuple[float, float, dict[str, Any]]:
    job: MapJob = parallel.worker_state(_JOB_KEY)
    return job.point(flat)


def run_map(cfg: HessianConfig, comm: Any = None) -> Optional[dict[str, Any]]:
    """The command's surface mode: the model, data and directions cfg.surface names, its maps
    opened for writing, then `map_curvature`. Returns a summary dict on rank 0."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    path = Path(cfg.surface)
    # every rank reads the (read-only) file before rank 0 opens it for writing
    source = read_surface_source(path, cfg.model, cfg.dataset)
    source = locate_checkpoint(source, path, cfg.surface_checkpoint)
    problem, split = load_problem_and_split(comm, cfg, source.model, source.dataset)
    origin = {k: v.detach() for k, v in problem.model.state_dict().items()}
    basis = read_directions(path, origin, problem.param_keys)[: source.grid.ndim]
    job = map_job(problem.model, split, basis, source.grid, cfg, source.loss)
    if source.bn == "recompute" and comm.Get_rank() == 0:
        log.warning(
            "the surface used engine.bn=recompute; the Hessian uses each point's stored running "
            "statistics (engine.bn=eval)"
        )
    comm.Barrier()  # all reads done
    fingerprint = map_fingerprint(cfg, source.loss, len(split.labels))
    maps = HessianMaps.open(path, source.grid, fingerprint, cfg.overwrite, comm)
    info = map_curvature(job, maps, cfg, comm)
    return None if info is None else {**info, "model": source.model.name}


def map_curvature(
    job: MapJob, maps: Any, cfg: HessianConfig, comm: Any = None, progress: bool = True
) -> Optional[dict[str, Any]]:
    """Computes the pending max_eig / min_eig points of `maps` (rank 0's store: a surface file's
    HessianMaps, or the library's in memory — pending(), write(), close(); None on the other
    ranks), one task per point; rank 0 writes each as it arrives and closes the store. Returns
    a summary dict on rank 0 (lh.hessian_map calls it too)."""
    comm = parallel.world_if_none(comm)
    rank = comm.Get_rank()
    pending = maps.pending() if maps is not None else np.array([], dtype=np.int64)
    seconds, start, unconverged = [], time.perf_counter(), 0
    tasks = [int(i) for i in pending]
    hidden = rank != 0 or not tasks or not progress
    bar = tqdm(total=len(tasks), unit="pt", desc="hessian", disable=hidden)
    try:
        with parallel.worker_pool(_JOB_KEY, job):
            for result in parallel.run_tasks(
                comm, _map_task, tasks, describe=lambda i: f"grid point {i}"
            ):
                maps.write(result.task, *result.value)
                seconds.append(result.seconds)
                unconverged += not result.value[2]["converged"]
                bar.update()
    finally:
        bar.close()
        if maps is not None:
            maps.close()
    if rank != 0:
        return None
    if cfg.lanczos_tol > 0 and unconverged:
        what = f"{unconverged} of {len(pending)} points"
        log.warning(LanczosResult.unconverged(what, cfg.lanczos_steps, cfg.lanczos_tol))
    return {
        "points": len(pending),
        "grid_points": job.grid.size,
        "seconds_per_point": float(np.mean(seconds)) if seconds else float("nan"),
        "wall_seconds": time.perf_counter() - start,
        "num_params": job.num_params,
        "num_samples": job.num_samples,
    }


def summarize_map(path: Path, info: dict[str, Any]) -> str:
    maps = read_maps(path)
    hi, lo = maps.max_eig, maps.min_eig
    ratio = np.abs(lo / hi)
    finite = np.isfinite(hi) & np.isfinite(lo)
    diverged = int((maps.done & ~finite).sum())
    lines = [
        f"Hessian maps of {info['model']} ({info['num_params']} parameters, "
        f"{info['num_samples']} samples) in {path}:",
        f"  {info['points']} points computed now, {int(maps.done.sum())} of "
        f"{info['grid_points']} done in all"
        + (f" ({diverged} diverged: NaN eigenvalues)" if diverged else ""),
    ]
    if info["points"]:
        lines.append(f"  {info['seconds_per_point']:.3f} s per point on a worker")
    if finite.any():
        lines.append(
            f"  max_eig in [{np.nanmin(hi):.4g}, {np.nanmax(hi):.4g}], min_eig in "
            f"[{np.nanmin(lo):.4g}, {np.nanmax(lo):.4g}], |min/max| in "
            f"[{np.nanmin(ratio):.3g}, {np.nanmax(ratio):.3g}]"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the Hydra app


def _command(cfg: HessianConfig, comm: Any) -> Optional[Report]:
    if cfg.surface is None:
        result = run_point(cfg, comm)
        if result is None:
            return None
        out = Path(cfg.out_dir)
        files = [write_point(result, cfg, out)]
        if cfg.plot:
            from landscape_hpc.geometry import figures

            files.append(figures.plot_ritz(result.ritz, out / "hessian_ritz.png", cfg.model.name))
        return Report(summarize_point(result, cfg), files)
    info = run_map(cfg, comm)
    if info is None:
        return None
    path = Path(cfg.surface)
    files = [path]
    if cfg.plot:
        from landscape_hpc.geometry import figures

        files.append(figures.plot_maps(path, path.with_name(f"{path.stem}_hessian.png")))
    return Report(summarize_map(path, info), files)


main = experiment_main("hessian", _command)
