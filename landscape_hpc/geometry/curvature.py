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

import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from landscape_hpc import parallel
from landscape_hpc.config import HessianConfig
from landscape_hpc.files.directions import read_directions
from landscape_hpc.files.hessian_maps import HessianMaps, read_maps
from landscape_hpc.files.source import locate_checkpoint, read_surface_source
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.curvature_files import (  # noqa: F401 (write_point re-exported)
    summarize_point,
    write_point,
    write_point_files,
)
from landscape_hpc.geometry.curvature_job import MapJob, map_job
from landscape_hpc.geometry.curvature_point import (  # noqa: F401 (the point mode, re-exported)
    PointResult,
    check_config,
    load_problem_and_split,
    point_curvature,
    run_point,
)
from landscape_hpc.hessian import LanczosResult

log = logging.getLogger(__name__)

_JOB_KEY = "hessian_job"


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
        files = write_point_files(result, cfg, Path(cfg.out_dir))
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
