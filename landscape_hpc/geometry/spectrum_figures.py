"""PNGs of the Hessian's spectrum at a point (the `hessian` command's point mode, lh.hessian's
results): the spectral density on a log scale, as PyHessian's density plot draws it, and the
curvature per parameter block. Figures import no experiment module; they take what they draw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: the density's floor on the log axis (PyHessian adds 1e-7 before its semilogy)
FLOOR = 1e-7


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_density(density: Any, out: Path, name: str) -> Path:
    """log density φ(λ) + 1e-7 over the eigenvalues (a Density of geometry/spectrum_job.py),
    with the SLQ nodes of every probe marked under the curve."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.semilogy(density.grid, density.values + FLOOR, lw=1.2)
    nodes = density.nodes.reshape(-1)
    weights = density.weights.reshape(-1)
    shown = weights > 1e-12
    ax.plot(nodes[shown], np.full(shown.sum(), FLOOR * 3), "|", color="grey", alpha=0.5,
            label="Ritz nodes")  # fmt: skip
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_ylim(FLOOR, None)
    ax.set_title(
        f"{name}: Hessian ESD ({len(density.nodes)} probes × {density.nodes.shape[1]} steps, "
        f"σ={density.sigma:.2g}; halves differ {density.halves_change:.2g})",
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, out)


def plot_blocks(blocks: list[Any], out: Path, name: str) -> Path:
    """λ_max and tr H_bb of each parameter block (Blocks of geometry/spectrum_job.py), bars
    side by side; the trace's standard error as error bars where the trace was estimated."""
    names = [b.name for b in blocks]
    x = np.arange(len(blocks))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.4, 0.6 * len(blocks) + 3), 3.8))
    axes[0].bar(x, [b.max_eig for b in blocks], color="C0")
    axes[0].set_title("largest eigenvalue of the block")
    axes[1].bar(x, [b.trace for b in blocks], yerr=[b.trace_std_error for b in blocks],
                color="C1", capsize=3)  # fmt: skip
    axes[1].set_title("trace of the block (Hutchinson)")
    for ax in axes:
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{name}: curvature per parameter block", fontsize=10)
    return _save(fig, out)
