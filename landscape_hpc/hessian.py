"""Curvature of the loss at a point of weight space: Hessian-vector products, the extreme
eigenvalues (Lanczos), and the trace (Hutchinson). As loss-landscape's `plot_hessian_eigen.py`
and PyHessian do, without ever forming the Hessian.

Everything works on a flat parameter vector θ (P,) and a function loss(θ) -> scalar (a LossFn,
built by `landscape_hpc.engine.flat.flat_loss`), so the maths is independent of the model's
structure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from landscape_hpc.engine.flat import LossFn


def hvp(loss: LossFn, theta: Tensor, v: Tensor) -> Tensor:
    """H(θ)·v by reverse-over-reverse differentiation (Pearlmutter 1994, as PyHessian): the
    gradient with its graph, then the gradient of <∇L(θ), v>. On CPU it took half the time (or
    less) of forward-over-reverse (torch.func.jvp of torch.func.grad) for the registry's mlp, and
    about the same for mpo_cnn (docs/benchmarks.md)."""
    with torch.enable_grad():
        point = theta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(point), point, create_graph=True)
        if not grad.requires_grad:  # the loss is linear in θ: H = 0
            return torch.zeros_like(theta)
        (product,) = torch.autograd.grad(grad, point, grad_outputs=v, allow_unused=True)
    return torch.zeros_like(theta) if product is None else product.detach()


@dataclass
class LanczosResult:
    """One Lanczos run: the Ritz values of its tridiagonal (ascending; the ends approximate λ_min
    and λ_max), the iterations done (Hessian-vector products), whether it converged, the
    relative move of the extreme Ritz values at the last step, and the relative residual
    β_k·|s_k| / max|θ| of the worse extreme Ritz pair (an upper bound of ‖H y − θ y‖, scaled)."""

    ritz: Tensor
    steps: int
    converged: bool
    change: float
    residual: float

    @staticmethod
    def unconverged(what: str, steps: int, tol: float) -> str:
        """The warning for Lanczos runs that reached `steps` before `tol`."""
        return (
            f"Lanczos did not converge at {what} within lanczos_steps={steps} "
            f"(lanczos_tol={tol}): the eigenvalues may be loose; raise lanczos_steps"
        )

    def report(self) -> dict[str, Any]:
        """The convergence numbers, for CSV rows and file attributes."""
        return {
            "iterations": self.steps,
            "converged": self.converged,
            "change": self.change,
            "residual": self.residual,
        }


def lanczos_run(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    steps: int = 30,
    seed: int = 0,
    dtype=torch.float64,
    device: torch.device | str = "cpu",
    tol: float = 0.0,
) -> LanczosResult:
    """Lanczos on a symmetric operator for at most `steps` iterations: it stops early once both
    extreme Ritz values move by less than `tol` (relative to the largest |Ritz value|) in one
    step, from the third step on, or when the Krylov space is exhausted (exact). tol = 0: always
    `steps` iterations (converged only when exhausted).

    Full re-orthogonalisation keeps it stable at the small step counts used here. The start
    vector is drawn on the CPU from `seed` (the same on every device), then moved to `device`.
    """
    steps = min(steps, dim)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=g, dtype=dtype).to(device)
    q /= q.norm()
    basis = [q]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    previous = None
    converged, change, residual = False, float("inf"), float("inf")
    ritz = torch.zeros(0, dtype=dtype)
    for j in range(steps):
        w = matvec(basis[j]).to(dtype)
        alpha = torch.dot(w, basis[j])
        alphas.append(alpha)
        w = w - alpha * basis[j] - (betas[-1] * basis[j - 1] if j > 0 else 0)
        for b in basis:  # full re-orthogonalisation
            w = w - torch.dot(w, b) * b
        beta = w.norm()
        ritz, vectors = torch.linalg.eigh(_tridiagonal(alphas, betas).cpu())
        scale = max(float(ritz.abs().max()), 1e-30)
        ends = vectors[-1, [0, -1]].abs()  # last components of the extreme Ritz vectors
        residual = float(beta.cpu() * ends.max()) / scale
        if previous is not None:
            change = max(abs(float(ritz[0] - previous[0])), abs(float(ritz[-1] - previous[1])))
            change /= scale
        previous = (ritz[0], ritz[-1])
        exhausted = bool(beta < 1e-10)
        if exhausted or (tol > 0 and j >= 2 and change < tol):
            converged = True
            break
        if j == steps - 1:
            break
        betas.append(beta)
        basis.append(w / beta)
    return LanczosResult(ritz.to(dtype), len(alphas), converged, change, residual)


def _tridiagonal(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
    k = len(alphas)
    t = torch.diag(torch.stack(alphas))
    if k > 1:
        off = torch.stack(betas[: k - 1])
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return t


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    dim: int,
    steps: int = 30,
    seed: int = 0,
    dtype=torch.float64,
    device: torch.device | str = "cpu",
    tol: float = 0.0,
) -> Tensor:
    """The Ritz values of `lanczos_run` (ascending): the first and last converge to the
    operator's smallest and largest eigenvalues."""
    return lanczos_run(matvec, dim, steps, seed, dtype, device, tol).ritz


def extreme_eigenvalues(
    loss: LossFn, theta: Tensor, steps: int = 30, seed: int = 0
) -> tuple[float, float]:
    """(smallest, largest) Hessian eigenvalue at θ by Lanczos on Hessian-vector products."""
    eig = lanczos(
        lambda v: hvp(loss, theta, v.to(theta.dtype)),
        theta.numel(),
        steps,
        seed,
        device=theta.device,
    )
    return float(eig[0]), float(eig[-1])


def hutchinson_trace(loss: LossFn, theta: Tensor, samples: int = 100, seed: int = 0) -> float:
    """tr H ≈ mean of vᵀ H v over Rademacher vectors v."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(samples):
        v = (torch.randint(0, 2, theta.shape, generator=g) * 2 - 1).to(theta)
        total += float(torch.dot(v, hvp(loss, theta, v)))
    return total / samples


class PointHessian:
    """H(θ) at one point as an operator that keeps the gradient's graph: the forward and the
    first backward (create_graph) run once, and each product is one more backward of <∇L, v>
    through that graph (retain_graph), as PyHessian does: a product then costs one backward
    instead of a forward and two backwards (`hvp`). The graph is what `hvp` holds at its peak
    anyway (the loss over every batch is summed before its backward), so keeping it costs no
    more memory than one plain product; it lives as long as this object.

    `matmat` runs several products in one pass (torch.autograd.grad's is_grads_batched, a vmap
    over the backward) when `batched`; models whose backward vmap cannot batch fall back to a
    loop, once, for good. batched=None: on CUDA only. On 2 CPU threads the vmap did not pay: 1.1×
    the loop's time for mlp on the digits, 5× for mpo_cnn (its conv backward runs through vmap's
    slow fallback; docs/benchmarks.md); on a GPU it is not yet measured."""

    def __init__(self, loss: LossFn, theta: Tensor, batched: bool | None = None) -> None:
        self.theta = theta
        self.batched = theta.is_cuda if batched is None else batched
        with torch.enable_grad():
            self.point = theta.detach().requires_grad_(True)
            (self.grad,) = torch.autograd.grad(loss(self.point), self.point, create_graph=True)
        self.linear = not self.grad.requires_grad  # the loss is linear in θ: H = 0

    def matvec(self, v: Tensor) -> Tensor:
        """H v (P,), in θ's dtype."""
        if self.linear:
            return torch.zeros_like(self.theta)
        (product,) = torch.autograd.grad(
            self.grad, self.point, grad_outputs=v.to(self.theta), retain_graph=True,
            allow_unused=True,
        )  # fmt: skip
        return torch.zeros_like(self.theta) if product is None else product.detach()

    def matmat(self, vs: Tensor) -> Tensor:
        """(H v_b)_b (B, P) for the rows of `vs` (B, P)."""
        if self.linear:
            return torch.zeros(vs.shape, dtype=self.theta.dtype, device=self.theta.device)
        if self.batched and len(vs) > 1:
            try:
                (products,) = torch.autograd.grad(
                    self.grad, self.point, grad_outputs=vs.to(self.theta),
                    retain_graph=True, is_grads_batched=True,
                )  # fmt: skip
                return products.detach()
            except (RuntimeError, NotImplementedError):
                self.batched = False  # an op without a batching rule: loop from now on
        return torch.stack([self.matvec(v) for v in vs])


def hutchinson_probes(
    matmat: Callable[[Tensor], Tensor],
    dim: int,
    samples: int,
    seed: int = 0,
    group: int = 8,
    blocks: list[Tensor] | None = None,
) -> Tensor:
    """Hutchinson's terms per probe and block, (samples, len(blocks)): Σ_{i∈b} v_i (H v)_i for
    `samples` Rademacher probes v (the same as `hutchinson_trace`'s for one seed), `group`
    products per pass. Their mean over probes estimates tr H_bb (E[v_i (Hv)_i] = H_ii), so one
    set of probes gives the trace of every block at once; blocks=None: one block, all of θ (the
    mean is then `hutchinson_trace`'s estimate)."""
    g = torch.Generator().manual_seed(seed)
    blocks = [torch.arange(dim)] if blocks is None else blocks
    terms = []
    for first in range(0, samples, group):
        count = min(group, samples - first)  # drawn one by one, as hutchinson_trace draws them
        vs = torch.stack([torch.randint(0, 2, (dim,), generator=g) * 2 - 1 for _ in range(count)])
        vs = vs.to(torch.float64)  # (B, P)
        products = vs * matmat(vs).to(torch.float64).cpu()  # (B, P)
        terms.append(torch.stack([products[:, b].sum(1) for b in blocks], dim=1))  # (B, blocks)
    return torch.cat(terms)
