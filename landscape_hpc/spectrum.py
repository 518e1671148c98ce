"""The spectrum of a symmetric operator known only by its products (the Hessian, through
Hessian-vector products): the top-k eigenpairs by Lanczos with full re-orthogonalisation, and the
eigenvalue spectral density (ESD) by stochastic Lanczos quadrature (SLQ; Golub & Meurant 1997,
Ubaru et al. 2017, Ghorbani et al. 2019 sec. 3 — PyHessian's `density`).

    pairs = top_eigenpairs(matvec, dim, k=5)        # pairs.values (k,) descending, .vectors (k, P)
    quad = slq(matmat, dim, n_probes=8, steps=60)   # quad.nodes / quad.weights (n_probes, steps)
    grid, values = quad.density(sigma=0.01 * width)  # the ESD, Gaussian-broadened

Pure maths: the operator is a callable; the Lanczos algebra runs in float64 whatever the products'
dtype, start vectors are drawn on the CPU from the seed (the same bits on every device).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: v (P,) -> H v (P,)
MatVec = Callable[[Tensor], Tensor]
#: V (B, P) -> (H V_b)_b (B, P)
MatMat = Callable[[Tensor], Tensor]

#: SLQ probes run in lockstep in groups whose Krylov bases hold at most this many float64 numbers
#: (256 MiB): more probes per product pass, bounded memory
_LOCKSTEP_NUMBERS = 32 * 2**20


@dataclass
class Eigenpairs:
    """The largest eigenvalues of a symmetric operator (descending) with their unit eigenvectors
    and residuals ‖H y − θ y‖ (Lanczos' β_m·|s_m|, exact with full re-orthogonalisation)."""

    values: Tensor  # (k,) float64, CPU, descending
    vectors: Tensor  # (k, P) float64, on the operator's device, unit norm
    residuals: Tensor  # (k,) float64, CPU
    ritz: Tensor  # (m,) every Ritz value of the last step, ascending (ends ≈ λ_min, λ_max)
    steps: int  # products done
    converged: bool  # every residual ≤ tol·|λ_1| (or the Krylov space exhausted)


def _orthogonalise(w: Tensor, basis: Tensor) -> Tensor:
    """w minus its components along the rows of `basis` (j, P), twice ("twice is enough",
    Giraud et al. 2005): full re-orthogonalisation, which keeps the Ritz pairs clean of ghosts."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _tridiagonal(alphas: list[float], betas: list[float]) -> Tensor:
    """The (j, j) Lanczos matrix T of the α (diagonal) and β (off-diagonal) coefficients."""
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if len(alphas) > 1:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return t


def top_eigenpairs(
    matvec: MatVec,
    dim: int,
    k: int = 1,
    steps: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Eigenpairs:
    """The k largest eigenpairs by Lanczos with full re-orthogonalisation: at most `steps`
    products (at least k), stopping once every one of the k residuals is ≤ tol·|λ_1| (tol = 0:
    all `steps`), or when the Krylov space is exhausted (then exact). A residual r bounds the
    eigenvalue's error by r (and by r²/gap once the eigenvalue is isolated)."""
    if not 1 <= k <= dim:
        raise ValueError(f"k={k} must be in [1, {dim}]")
    steps = min(max(steps, k), dim)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=g, dtype=torch.float64).to(device)
    basis = torch.empty(steps, dim, dtype=torch.float64, device=device)  # (m, P) Krylov basis
    basis[0] = q / q.norm()
    alphas: list[float] = []
    betas: list[float] = []
    converged = False
    for j in range(steps):
        w = matvec(basis[j]).to(torch.float64)  # (P,)
        alphas.append(float(w @ basis[j]))
        w = _orthogonalise(w, basis[: j + 1])
        beta = float(w.norm())
        ritz, s = torch.linalg.eigh(_tridiagonal(alphas, betas))
        top = min(k, j + 1)
        residuals = beta * s[-1, -top:].abs().flip(0)  # (top,) of the largest, descending
        scale = max(float(ritz.abs().max()), 1e-30)
        exhausted = beta <= 1e-10 * scale
        if exhausted or (tol > 0 and j + 1 >= k and bool((residuals <= tol * scale).all())):
            converged = True
            break
        if j + 1 < steps:
            betas.append(beta)
            basis[j + 1] = w / beta
    m = len(alphas)
    top = min(k, m)
    order = torch.arange(m - 1, m - 1 - top, -1)  # the largest Ritz values, descending
    vectors = s[:, order].T.to(device) @ basis[:m]  # (k, P) Ritz vectors
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    return Eigenpairs(ritz[order], vectors, residuals, ritz, m, converged)


@dataclass
class Quadrature:
    """Stochastic Lanczos quadrature of a symmetric operator of dimension `dim`: for probe i, the
    Ritz values θ_ij of its m-step Lanczos run (the nodes) and the squared first components of
    their eigenvectors (the weights, Σ_j w_ij = 1), so that Σ_j w_ij f(θ_ij) ≈ v_iᵀ f(H) v_i,
    exact for polynomials f of degree < 2m. The ESD φ(t) = (1/P) Σ_λ δ(t − λ) is then
    approximated by the mean over probes of Σ_j w_ij δ(t − θ_ij)."""

    nodes: np.ndarray  # (n_probes, m) float64
    weights: np.ndarray  # (n_probes, m) float64, each row sums to 1
    dim: int

    def moment(self, power: int) -> float:
        """(1/P) tr Hᵖ, estimated: the mean over probes of Σ_j w_ij θ_ijᵖ."""
        return float(np.mean(np.sum(self.weights * self.nodes**power, axis=1)))

    def trace(self) -> float:
        """tr H ≈ P · (first moment): Hutchinson's estimate with the same probes."""
        return self.dim * self.moment(1)

    def default_sigma(self, fraction: float = 0.01) -> float:
        """σ = fraction × the width of the nodes' span (λ_max − λ_min estimated), at least 1e-12."""
        return max(fraction * float(self.nodes.max() - self.nodes.min()), 1e-12)

    def grid(self, sigma: float, bins: int = 1000) -> np.ndarray:
        """(bins,) points over the nodes' span, widened by 5σ on each side."""
        return np.linspace(self.nodes.min() - 5 * sigma, self.nodes.max() + 5 * sigma, bins)

    def density(
        self, sigma: float, bins: int = 1000, grid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(grid, φ): the ESD broadened by a Gaussian of standard deviation σ (in eigenvalue
        units), φ(t) = mean_i Σ_j w_ij N(t; θ_ij, σ²) on `grid` (default `self.grid`). It
        integrates to 1 (before the grid's truncation). PyHessian's `density_generate` uses a
        variance of 1e-5·max(1, width) and renormalises on its grid; pass that σ to compare."""
        grid = self.grid(sigma, bins) if grid is None else grid
        return grid, self._density_on(grid, sigma, slice(None))

    def _density_on(self, grid: np.ndarray, sigma: float, probes: slice) -> np.ndarray:
        nodes, weights = self.nodes[probes], self.weights[probes]  # (n, m)
        z = (grid[:, None, None] - nodes[None]) / sigma  # (bins, n, m)
        kernel = np.exp(-0.5 * z**2) / (sigma * np.sqrt(2 * np.pi))
        return np.einsum("bnm,nm->b", kernel, weights) / len(nodes)  # (bins,)

    def halves_change(self, sigma: float, bins: int = 1000) -> float:
        """The convergence signal: the total-variation distance ½∫|φ_A − φ_B| dt between the
        densities of the first and second half of the probes (0: the probes agree; 1: disjoint).
        The full density's own error is about this over √2. NaN with fewer than 2 probes."""
        n = len(self.nodes)
        if n < 2:
            return float("nan")
        grid = self.grid(sigma, bins)
        a = self._density_on(grid, sigma, slice(0, n // 2))
        b = self._density_on(grid, sigma, slice(n // 2, n))
        return float(0.5 * np.trapezoid(np.abs(a - b), grid))


def rademacher(count: int, dim: int, seed: int) -> Tensor:
    """(count, dim) float64 random ±1 vectors, drawn on the CPU from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (count, dim), generator=g) * 2 - 1).to(torch.float64)


def slq(
    matmat: MatMat,
    dim: int,
    n_probes: int = 8,
    steps: int = 60,
    seed: int = 0,
    device: torch.device | str = "cpu",
    probes: slice = slice(None),
) -> Quadrature:
    """SLQ with `n_probes` Rademacher start vectors (normalised, as PyHessian) and `steps` Lanczos
    steps each, fully re-orthogonalised. The probes run in lockstep (one `matmat` of a group of
    probes per step: batched products), in groups sized to bound the Krylov bases' memory.
    `probes`: only these of the n_probes (a pool task's share; the same vectors as in one run)."""
    if n_probes < 1 or steps < 1:
        raise ValueError(f"n_probes={n_probes} and steps={steps} must be at least 1")
    steps = min(steps, dim)
    starts = (rademacher(n_probes, dim, seed) / dim**0.5)[probes]  # (n, P) unit vectors
    group = max(1, min(len(starts), _LOCKSTEP_NUMBERS // max(1, steps * dim)))
    nodes, weights = [], []
    for first in range(0, len(starts), group):
        n, w = _lockstep(matmat, starts[first : first + group].to(device), steps)
        nodes.append(n)
        weights.append(w)
    return Quadrature(np.concatenate(nodes), np.concatenate(weights), dim)


def _lockstep(matmat: MatMat, starts: Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Lanczos from each row of `starts` (B, P) at once; a probe whose Krylov space is exhausted
    keeps its nodes so far (the quadrature is then exact for it)."""
    b, dim = starts.shape
    basis = torch.zeros(b, steps, dim, dtype=torch.float64, device=starts.device)  # (B, m, P)
    basis[:, 0] = starts
    alphas = np.zeros((b, steps))
    betas = np.zeros((b, steps))
    length = np.full(b, steps)
    for j in range(steps):
        w = matmat(basis[:, j]).to(torch.float64)  # (B, P)
        alphas[:, j] = (w * basis[:, j]).sum(1).cpu().numpy()
        for _ in range(2):  # full re-orthogonalisation, twice, per probe
            w = w - torch.einsum("bm,bmp->bp", torch.einsum("bmp,bp->bm", basis[:, : j + 1], w),
                                 basis[:, : j + 1])  # fmt: skip
        norms = w.norm(dim=1)  # (B,)
        betas[:, j] = norms.cpu().numpy()
        for i in range(b):
            if length[i] == steps and betas[i, j] <= 1e-10 * max(1.0, abs(alphas[i, j])):
                length[i] = j + 1
        if j + 1 < steps:
            basis[:, j + 1] = w / norms.clamp_min(1e-300)[:, None]
    nodes = np.zeros((b, steps))
    weights = np.zeros((b, steps))
    for i in range(b):
        m = int(length[i])
        t = _tridiagonal(list(alphas[i, :m]), list(betas[i, : m - 1]))
        theta, s = torch.linalg.eigh(t)
        nodes[i, :m], weights[i, :m] = theta.numpy(), (s[0] ** 2).numpy()
        nodes[i, m:] = theta.numpy()[-1]  # unused slots: zero weight at a real node
    return nodes, weights
