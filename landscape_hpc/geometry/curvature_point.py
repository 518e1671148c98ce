"""The `hessian` experiment at one point (the model, its checkpoint or init): λ_max, λ_min
(Lanczos), tr H (Hutchinson), and on request the top-k eigenpairs (`k`), the spectral density
(`density`, stochastic Lanczos quadrature) and per-block curvature (`blocks`). Each quantity is
a task of the MPI pool (the density's probes in one chunk per worker, one task per block), so a
point spreads over the workers; rank 0 gathers the result. `lh.hessian` calls `point_curvature`,
the command `run_point`; files and figures: geometry/curvature_files.py."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from landscape_hpc import parallel
from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import Split, subset
from landscape_hpc.devices import rank_device
from landscape_hpc.engine.losses import LOSSES
from landscape_hpc.engine.precision import PRECISIONS
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.geometry import spectrum_job
from landscape_hpc.geometry.curvature_job import CurvatureJob, make_job
from landscape_hpc.geometry.spectrum_job import Block, Density, TopEigen
from landscape_hpc.hessian import LanczosResult
from landscape_hpc.problem import Problem, load_problem

log = logging.getLogger(__name__)

_JOB_KEY = "hessian_point"


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
    if cfg.k < 0:
        raise UserError(f"k={cfg.k} must be 0 (no eigenpairs) or a positive count")
    for key in ("eigen_steps", "n_probes", "density_steps", "density_bins"):
        if getattr(cfg, key) < 1:
            raise UserError(f"{key}={getattr(cfg, key)} must be at least 1")
    if not cfg.density_sigma > 0:
        raise UserError(f"density_sigma={cfg.density_sigma} must be > 0 (a fraction, e.g. 0.01)")


def check_against_model(cfg: HessianConfig, shapes: dict[str, torch.Size]) -> list[Block]:
    """The settings that depend on the model: k against its parameter count, the blocks."""
    count = sum(int(torch.Size(s).numel()) for s in shapes.values())
    if cfg.k > count:
        raise UserError(f"k={cfg.k} is larger than the model's {count} parameters; lower k")
    return spectrum_job.parameter_blocks(shapes, list(cfg.blocks)) if cfg.blocks else []


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
    eigen: Optional[TopEigen] = None  # k > 0: values (k,) descending, residuals, vectors
    density: Optional[Density] = None  # density: grid, values, sigma, nodes, weights, ...
    blocks: list[Block] = field(default_factory=list)  # per-block max_eig, trace
    trace_std_error: float = float("nan")  # of the Hutchinson mean

    @property
    def eigenvalues(self) -> Optional[np.ndarray]:
        """The top-k eigenvalues, descending (None with k = 0)."""
        return None if self.eigen is None else self.eigen.values

    @property
    def eigenvectors(self) -> Optional[list[dict[str, torch.Tensor]]]:
        """The top-k unit eigenvectors as parameter dicts (lh.surface(directions=...[:2]))."""
        return None if self.eigen is None else self.eigen.vectors


def _point_task(task: tuple[str, int]) -> Any:
    job, cfg, state, blocks, chunks = parallel.worker_state(_JOB_KEY)
    what, i = task
    if what == "lanczos":
        return job.run_lanczos(state)
    if what == "trace":  # column 0: all of θ, then one per block
        count = sum(state[k].numel() for k in job.keys)
        return job.trace_terms(
            state, cfg.trace_samples, [torch.arange(count)] + [b.index for b in blocks]
        )
    if what == "eigen":
        return spectrum_job.eigenpairs(job, state, cfg.k, cfg.eigen_steps)
    if what == "density":
        return spectrum_job.quadrature(job, state, cfg.n_probes, cfg.density_steps, chunks[i])
    return spectrum_job.block_extreme(job, state, blocks[i].index, cfg.eigen_steps)


def run_point(cfg: HessianConfig, comm: Any = None) -> Optional[PointResult]:
    """The command's point mode: the problem cfg names, then `point_curvature`."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    problem, split = load_problem_and_split(comm, cfg, cfg.model, cfg.dataset)
    return point_curvature(problem.model, split, cfg, comm)


def point_curvature(
    model: nn.Module, split: Split, cfg: HessianConfig, comm: Any = None
) -> Optional[PointResult]:
    """λ_max, λ_min, tr H and what cfg asks beyond (k, density, blocks) at the model's weights
    on `split` (cfg.loss); every quantity is a task of the pool (the Lanczos run, the Hutchinson
    probes, the top-k run, density chunks, blocks: in parallel over the workers). Returns the
    result on rank 0 (the library's lh.hessian calls it)."""
    comm = parallel.world_if_none(comm)
    job = make_job(model, split, cfg, cfg.loss)
    state = {k: v.detach() for k, v in job.model.state_dict().items()}
    blocks = check_against_model(cfg, {k: state[k].shape for k in job.keys})
    start = time.perf_counter()
    tasks: list[tuple[str, int]] = [("lanczos", 0)]
    tasks += [("trace", 0)] if cfg.trace_samples > 0 else []
    tasks += [("eigen", 0)] if cfg.k > 0 else []
    chunks = spectrum_job.probe_chunks(cfg.n_probes, max(1, comm.Get_size() - 1))
    tasks += [("density", i) for i in range(len(chunks))] if cfg.density else []
    tasks += [("block", i) for i in range(len(blocks))]
    values: dict[tuple[str, int], Any] = {}
    with parallel.worker_pool(_JOB_KEY, (job, cfg, state, blocks, chunks)):
        for result in parallel.run_tasks(comm, _point_task, tasks):
            values[result.task] = result.value
    if comm.Get_rank() != 0:
        return None
    return _gather(values, cfg, job, state, split, blocks, time.perf_counter() - start)


def _gather(
    values: dict[tuple[str, int], Any],
    cfg: HessianConfig,
    job: CurvatureJob,
    state: dict[str, torch.Tensor],
    split: Split,
    blocks: list[Block],
    seconds: float,
) -> PointResult:
    """The tasks' values as one PointResult (rank 0), with the warnings of unconverged runs."""
    run: LanczosResult = values[("lanczos", 0)]
    ritz = run.ritz.numpy().astype(np.float64)
    if cfg.lanczos_tol > 0 and not run.converged:
        log.warning(LanczosResult.unconverged("the point", cfg.lanczos_steps, cfg.lanczos_tol))
    terms = values.get(("trace", 0))
    trace = float(terms[:, 0].mean()) if terms is not None else float("nan")
    error = float(terms[:, 0].std() / len(terms) ** 0.5) if terms is not None else float("nan")
    for i, block in enumerate(blocks):
        block.max_eig, block.residual = values[("block", i)]
        if terms is not None:
            column = terms[:, i + 1]
            block.trace = float(column.mean())
            block.trace_std_error = float(column.std() / len(column) ** 0.5)
    eigen = values.get(("eigen", 0))
    if eigen is not None and cfg.lanczos_tol > 0 and not eigen.converged:
        log.warning(
            f"the top-{cfg.k} Lanczos run did not converge within eigen_steps={cfg.eigen_steps}: "
            f"worst residual {eigen.worst_relative_residual():.2g}·|λ_1| > lanczos_tol="
            f"{cfg.lanczos_tol}; raise eigen_steps"
        )
    density = None
    if cfg.density:
        parts = [values[t] for t in sorted(t for t in values if t[0] == "density")]
        density = spectrum_job.density_of(parts, cfg.density_sigma, cfg.density_bins)
    return PointResult(
        max_eig=float(ritz[-1]),
        min_eig=float(ritz[0]),
        trace=trace,
        ritz=ritz,
        lanczos=run.report(),
        num_params=sum(state[k].numel() for k in job.keys),
        num_samples=len(split.labels),
        seconds=seconds,
        eigen=eigen,
        density=density,
        blocks=blocks,
        trace_std_error=error,
    )
