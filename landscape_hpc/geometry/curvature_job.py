"""The curvature kernel (no MPI, no files): the extreme Hessian eigenvalues (Lanczos on
Hessian-vector products) and the trace (Hutchinson) of a model's mean loss on its data at any
full state, and at the points of a surface grid. The `hessian` experiment (geometry/curvature.py)
and the library's `lh.hessian` / `lh.hessian_map` (api/curvature.py) run these; a pool task
holds one and calls it per point."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape_hpc.config import HessianConfig
from landscape_hpc.data import Split
from landscape_hpc.engine.flat import LossFn, flat_loss
from landscape_hpc.engine.precision import precision
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.grid import Grid
from landscape_hpc.hessian import LanczosResult, PointHessian, hutchinson_probes, lanczos_run


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

    @contextmanager
    def operator(self, state: dict[str, Tensor]) -> Iterator[PointHessian]:
        """H at `state` as an operator keeping its gradient's graph (hessian.PointHessian: one
        backward per product), inside the job's precision (engine/precision.py) for the graph
        and every product."""
        loss, theta = self.loss_fn(state)
        with precision(self.precision, theta.device):
            yield PointHessian(loss, theta)

    def run_lanczos(self, state: dict[str, Tensor]) -> LanczosResult:
        """Lanczos at `state` (Ritz values ascending, on the CPU: ends ≈ λ_min, λ_max)."""
        with self.operator(state) as op:
            n, device = op.theta.numel(), op.theta.device
            return lanczos_run(op.matvec, n, self.steps, self.seed, device=device, tol=self.tol)

    def extremes(self, state: dict[str, Tensor]) -> tuple[float, float, dict[str, Any]]:
        """(λ_max, λ_min) of the Hessian of the mean loss at `state`, and Lanczos' report."""
        run = self.run_lanczos(state)
        return float(run.ritz[-1]), float(run.ritz[0]), run.report()

    def trace_terms(
        self, state: dict[str, Tensor], samples: int, blocks: list[Tensor] | None = None
    ) -> Tensor:
        """Hutchinson's (samples, blocks) terms at `state` (hessian.hutchinson_probes)."""
        with self.operator(state) as op:
            return hutchinson_probes(op.matmat, op.theta.numel(), samples, self.seed, blocks=blocks)

    def trace(self, state: dict[str, Tensor], samples: int) -> float:
        """tr H at `state`, Hutchinson's estimate of `samples` Rademacher probes."""
        return float(self.trace_terms(state, samples).mean())


def make_job(model: nn.Module, split: Split, cfg: HessianConfig, loss: str) -> CurvatureJob:
    """The kernel for `model` (a template: a copy is cast to float64 with double and put in
    eval mode) on `split`, with cfg's Lanczos settings and precision."""
    dtype = torch.float64 if cfg.double else torch.float32
    model = copy.deepcopy(model).to(dtype).eval()
    inputs = split.inputs.to(dtype) if split.inputs.is_floating_point() else split.inputs
    keys = [name for name, _ in model.named_parameters()]
    steps, tol = cfg.lanczos_steps, cfg.lanczos_tol
    return CurvatureJob(model, keys, inputs, split.labels, loss, steps, cfg.seed, cfg.batch_size,
                        dtype, tol, cfg.precision)  # fmt: skip


@dataclass
class MapJob:
    """The kernel at the points of a surface grid: θ(a, b) = origin + a·d_x + b·d_y."""

    kernel: CurvatureJob
    subspace: Subspace
    grid: Grid

    def point(self, flat: int) -> tuple[float, float, dict[str, Any]]:
        device = next(iter(self.subspace.origin.values())).device
        coords = torch.from_numpy(self.grid.coords(np.array([flat]))[0]).to(device)  # (ndim,)
        return self.kernel.extremes(self.subspace.point(coords))

    @property
    def num_params(self) -> int:
        return sum(self.subspace.origin[k].numel() for k in self.kernel.keys)

    @property
    def num_samples(self) -> int:
        return len(self.kernel.labels)


def map_job(
    model: nn.Module,
    split: Split,
    basis: list[dict[str, Tensor]],
    grid: Grid,
    cfg: HessianConfig,
    loss: str,
) -> MapJob:
    """The map's job around the model's own weights (the surface's origin) along `basis` (one
    direction per grid axis), the kernel on `split` with cfg's Lanczos settings."""
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return MapJob(make_job(model, split, cfg, loss), Subspace(origin, basis), grid)
