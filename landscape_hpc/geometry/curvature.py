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

import copy
import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from landscape_hpc import parallel
from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import Split, subset
from landscape_hpc.devices import rank_device
from landscape_hpc.engine.flat import LossFn, flat_loss
from landscape_hpc.engine.losses import LOSSES
from landscape_hpc.engine.precision import PRECISIONS, precision
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.files.directions import read_directions
from landscape_hpc.files.hessian_maps import HessianMaps, read_maps
from landscape_hpc.files.source import SurfaceSource, locate_checkpoint, read_surface_source
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.grid import Grid
from landscape_hpc.hessian import LanczosResult, hutchinson_trace, hvp, lanczos_run
from landscape_hpc.problem import Problem, load_problem

log = logging.getLogger(__name__)

_JOB_KEY = "hessian_job"


# ---------------------------------------------------------------------------------------------
# the per-point kernel (no MPI, no files)


@dataclass
class CurvatureJob:
    """A model template, the data, and the settings: the curvature at any full state."""

    model: nn.Module
    keys: list[str]  # the differentiated tensors (the parameters; buffers stay fixed)
    inputs: Tensor
    labels: Tensor
    loss: str
    steps: int
    seed: int
    batch_size: int
    dtype: torch.dtype
    tol: float = 0.0  # Lanczos stops once the extreme Ritz values move less (0: all steps)
    precision: str = "fp32"  # of the Hessian-vector products (Lanczos' own algebra: float64)

    def loss_fn(self, state: dict[str, Tensor]) -> tuple[LossFn, Tensor]:
        """loss(θ) over the job's data, and θ at `state` (cast to the job's dtype)."""
        state = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in state.items()}
        return flat_loss(
            self.model, state, self.keys, self.inputs, self.labels, self.batch_size, self.loss
        )

    def run_lanczos(self, state: dict[str, Tensor]) -> LanczosResult:
        """Lanczos at `state` (Ritz values ascending, on the CPU: ends ≈ λ_min, λ_max)."""
        loss, theta = self.loss_fn(state)
        n, device = theta.numel(), theta.device

        def matvec(v: Tensor) -> Tensor:
            with precision(self.precision, device):
                return hvp(loss, theta, v.to(theta.dtype))

        return lanczos_run(matvec, n, self.steps, self.seed, device=device, tol=self.tol)

    def extremes(self, state: dict[str, Tensor]) -> tuple[float, float, dict[str, Any]]:
        """(λ_max, λ_min) of the Hessian of the mean loss at `state`, and Lanczos' report."""
        run = self.run_lanczos(state)
        return float(run.ritz[-1]), float(run.ritz[0]), run.report()

    def trace(self, state: dict[str, Tensor], samples: int) -> float:
        loss, theta = self.loss_fn(state)
        with precision(self.precision, theta.device):
            return hutchinson_trace(loss, theta, samples, self.seed)


def make_job(model: nn.Module, split: Split, cfg: HessianConfig, loss: str) -> CurvatureJob:
    """The kernel for `model` (a template: a copy is cast to float64 with double and put in
    eval mode) on `split`, with cfg's Lanczos settings."""
    dtype = torch.float64 if cfg.double else torch.float32
    model = copy.deepcopy(model).to(dtype).eval()
    inputs = split.inputs.to(dtype) if split.inputs.is_floating_point() else split.inputs
    keys = [name for name, _ in model.named_parameters()]
    steps, tol = cfg.lanczos_steps, cfg.lanczos_tol
    return CurvatureJob(model, keys, inputs, split.labels, loss, steps, cfg.seed, cfg.batch_size,
                        dtype, tol, cfg.precision)  # fmt: skip


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
    """λ_max, λ_min and tr H at the model's weights; the Lanczos run and the Hutchinson probes
    are two tasks of the pool (in parallel on two workers). Returns the result on rank 0."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    problem, split = load_problem_and_split(comm, cfg, cfg.model, cfg.dataset)
    job = make_job(problem.model, split, cfg, cfg.loss)
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


def map_fingerprint(cfg: HessianConfig, source: SurfaceSource, num_samples: int) -> dict:
    """The settings that make two maps the same computation (so a file can be resumed)."""
    return {
        "split": cfg.split,
        "max_samples": cfg.max_samples,
        "num_samples": num_samples,
        "lanczos_steps": cfg.lanczos_steps,
        "lanczos_tol": cfg.lanczos_tol,
        "seed": cfg.seed,
        "double": cfg.double,
        "loss": source.loss,
        # only when not fp32, so maps made before the key resume
        **({"precision": cfg.precision} if cfg.precision != "fp32" else {}),
    }


@dataclass
class MapJob:
    kernel: CurvatureJob
    subspace: Subspace
    grid: Grid

    def point(self, flat: int) -> tuple[float, float, dict[str, Any]]:
        device = next(iter(self.subspace.origin.values())).device
        coords = torch.from_numpy(self.grid.coords(np.array([flat]))[0]).to(device)  # (ndim,)
        return self.kernel.extremes(self.subspace.point(coords))


def _map_task(flat: int) -> tuple[float, float, dict[str, Any]]:
    job: MapJob = parallel.worker_state(_JOB_KEY)
    return job.point(flat)


def run_map(cfg: HessianConfig, comm: Any = None) -> Optional[dict[str, Any]]:
    """Computes the pending max_eig / min_eig points of cfg.surface, one task per point; rank 0
    writes each into the file as it arrives. Returns a summary dict on rank 0."""
    comm = parallel.world_if_none(comm)
    rank = comm.Get_rank()
    check_config(cfg)
    path = Path(cfg.surface)
    # every rank reads the (read-only) file before rank 0 opens it for writing
    source = read_surface_source(path, cfg.model, cfg.dataset)
    source = locate_checkpoint(source, path, cfg.surface_checkpoint)
    problem, split = load_problem_and_split(comm, cfg, source.model, source.dataset)
    origin = {k: v.detach().clone() for k, v in problem.model.state_dict().items()}
    basis = read_directions(path, origin, problem.param_keys)[: source.grid.ndim]
    kernel = make_job(problem.model, split, cfg, source.loss)
    job = MapJob(kernel, Subspace(origin, basis), source.grid)
    if source.bn == "recompute" and rank == 0:
        log.warning(
            "the surface used engine.bn=recompute; the Hessian uses each point's stored running "
            "statistics (engine.bn=eval)"
        )
    comm.Barrier()  # all reads done

    fingerprint = map_fingerprint(cfg, source, len(split.labels))
    maps = HessianMaps.open(path, source.grid, fingerprint, cfg.overwrite, comm)
    pending = maps.pending() if maps is not None else np.array([], dtype=np.int64)
    seconds, start, unconverged = [], time.perf_counter(), 0
    tasks = [int(i) for i in pending]
    bar = tqdm(total=len(tasks), unit="pt", desc="hessian", disable=rank != 0 or not tasks)
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
        "grid_points": source.grid.size,
        "seconds_per_point": float(np.mean(seconds)) if seconds else float("nan"),
        "wall_seconds": time.perf_counter() - start,
        "model": source.model.name,
        "num_params": sum(origin[k].numel() for k in problem.param_keys),
        "num_samples": len(split.labels),
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
