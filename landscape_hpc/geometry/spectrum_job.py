"""The spectrum kernel (no MPI, no files), on a CurvatureJob at a full state: the top-k
eigenpairs with their eigenvectors as parameter dicts, the spectral density by stochastic
Lanczos quadrature (probes in chunks, one pool task each), and the curvature of parameter
blocks (λ_max of each diagonal block H_bb by Lanczos; their traces from the Hutchinson probes).
The `hessian` command's point mode and `lh.hessian` run these (geometry/curvature.py)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from landscape_hpc import params
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.curvature_job import CurvatureJob
from landscape_hpc.params import ParamDict
from landscape_hpc.spectrum import Quadrature, slq, top_eigenpairs


@dataclass
class TopEigen:
    """The k largest Hessian eigenvalues (descending), their residuals ‖Hv − λv‖ and unit
    eigenvectors (dicts over the differentiated parameters, the model's dtype and device)."""

    values: np.ndarray  # (k,)
    residuals: np.ndarray  # (k,)
    vectors: list[ParamDict]
    steps: int
    converged: bool

    def worst_relative_residual(self) -> float:
        return float(self.residuals.max() / max(abs(self.values[0]), 1e-30))


@dataclass
class Density:
    """The ESD: φ on `grid` (Gaussian σ), the raw quadrature, the halves' convergence signal."""

    grid: np.ndarray  # (bins,)
    values: np.ndarray  # (bins,) integrates to 1
    sigma: float  # in eigenvalue units
    nodes: np.ndarray  # (n_probes, steps) Ritz values per probe
    weights: np.ndarray  # (n_probes, steps) their quadrature weights (rows sum to 1)
    halves_change: float  # ½∫|φ_first half − φ_second half| (0 = the probes agree)
    trace: float  # P · the first moment: tr H from the same probes


@dataclass
class Block:
    """One parameter block: its name, the flat indices of its entries in θ, and its results."""

    name: str
    index: Tensor  # (n_b,) int64 positions in θ
    keys: list[str] = field(default_factory=list)
    max_eig: float = float("nan")
    residual: float = float("nan")
    trace: float = float("nan")
    trace_std_error: float = float("nan")


def eigenpairs(job: CurvatureJob, state: dict[str, Tensor], k: int, steps: int) -> TopEigen:
    """The k largest eigenpairs at `state`, to lanczos_tol (residuals relative to |λ_1|)."""
    with job.operator(state) as op:
        pairs = top_eigenpairs(op.matvec, op.theta.numel(), k, steps, job.tol, job.seed,
                               op.theta.device)  # fmt: skip
        like = {key: state[key] for key in job.keys}
        vectors = [params.unflatten(v.to(op.theta.dtype), like, job.keys) for v in pairs.vectors]
    return TopEigen(pairs.values.numpy(), pairs.residuals.numpy(), vectors, pairs.steps,
                    pairs.converged)  # fmt: skip


def probe_chunks(n_probes: int, workers: int) -> list[tuple[int, int]]:
    """(first, count) of the SLQ probes per pool task: as many chunks as workers (each task
    builds the point's gradient graph once and runs its probes in lockstep)."""
    edges = np.linspace(0, n_probes, min(n_probes, max(1, workers)) + 1).round().astype(int)
    return [(int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def quadrature(
    job: CurvatureJob, state: dict[str, Tensor], n_probes: int, steps: int, chunk: tuple[int, int]
) -> Quadrature:
    """SLQ at `state` for the probes `chunk` = (first, count) of `n_probes` (seeded by job.seed:
    the chunks of any split are the same probes)."""
    with job.operator(state) as op:
        first, count = chunk
        return slq(op.matmat, op.theta.numel(), n_probes, steps, job.seed, op.theta.device,
                   probes=slice(first, first + count))  # fmt: skip


def density_of(parts: list[Quadrature], sigma_fraction: float, bins: int) -> Density:
    """The chunks' quadratures joined (in probe order) and broadened: σ = sigma_fraction × the
    nodes' span."""
    quad = Quadrature(np.concatenate([q.nodes for q in parts]),
                      np.concatenate([q.weights for q in parts]), parts[0].dim)  # fmt: skip
    sigma = quad.default_sigma(sigma_fraction)
    grid, values = quad.density(sigma, bins)
    return Density(grid, values, sigma, quad.nodes, quad.weights,
                   quad.halves_change(sigma, bins), quad.trace())  # fmt: skip


def parameter_blocks(shapes: dict[str, torch.Size], patterns: list[str]) -> list[Block]:
    """The blocks `patterns` name over parameters of `shapes` (in θ's order): each pattern
    (fnmatch on the parameter name) one block; ["layers"]: one block per module holding
    parameters (the name up to its last dot). A pattern matching nothing is refused."""
    offsets, start = {}, 0
    for key, shape in shapes.items():
        count = int(torch.Size(shape).numel())
        offsets[key], start = (start, start + count), start + count
    if patterns == ["layers"]:
        groups: dict[str, list[str]] = {}
        for key in shapes:
            groups.setdefault(key.rpartition(".")[0] or key, []).append(key)
        named = list(groups.items())
    else:
        named = []
        for pattern in patterns:
            keys = [key for key in shapes if fnmatch.fnmatchcase(key, pattern)]
            if not keys:
                listed = ", ".join(list(shapes)[:6])
                raise UserError(
                    f"blocks: pattern {pattern!r} matches no parameter; names look like "
                    f"{listed}{', ...' if len(shapes) > 6 else ''} (or use blocks=[layers])"
                )
            named.append((pattern, keys))
    blocks = []
    for name, keys in named:
        index = torch.cat([torch.arange(*offsets[key]) for key in keys])
        blocks.append(Block(name, index, keys))
    return blocks


def block_extreme(
    job: CurvatureJob, state: dict[str, Tensor], index: Tensor, steps: int
) -> tuple[float, float]:
    """(λ_max, residual) of the diagonal block H_bb (the rows and columns `index` of H) by
    Lanczos on v_b ↦ (H [v_b; 0])_b."""
    with job.operator(state) as op:
        on = index.to(op.theta.device)

        def block_matvec(v: Tensor) -> Tensor:
            full = torch.zeros_like(op.theta)
            full[on] = v.to(op.theta.dtype)
            return op.matvec(full)[on]

        pairs = top_eigenpairs(block_matvec, len(index), 1, steps, job.tol, job.seed,
                               op.theta.device)  # fmt: skip
    return float(pairs.values[0]), float(pairs.residuals[0])
