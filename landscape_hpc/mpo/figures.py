"""PNGs of an MPO run: the pattern, the loss over the plane on a log colour scale (the paper's
figure 1) and the accuracy, train and test side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from landscape_hpc.grid import cell_coords, pattern_to_surface  # noqa: E402
from landscape_hpc.plot import heatmap  # noqa: E402

SPLITS = ("train", "test")


def plot_mpo(out_dir: Path, mask: np.ndarray, values: dict[str, np.ndarray]) -> list[Path]:
    """Writes mask.png, loss.png, acc.png into out_dir; `values` in surface orientation."""
    out_dir = Path(out_dir)
    x, y = cell_coords(mask.shape)
    paths = []

    fig, ax = plt.subplots(figsize=(4.5, 4))
    cmap = ListedColormap(["#f0e442", "#0b3c8c"])  # high-loss, low-loss
    ax.pcolormesh(x, y, pattern_to_surface(mask).astype(float), shading="nearest", cmap=cmap)
    ax.set_title("pattern: dark = low-loss cells")
    ax.set_xlabel("α (right)")
    ax.set_ylabel("β (up)")
    ax.set_aspect("equal")
    paths.append(_save(fig, out_dir / "mask.png"))

    for metric, log, title in (("loss", True, "loss (log scale)"), ("acc", False, "accuracy (%)")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, split in zip(axes, SPLITS):
            heatmap(ax, x, y, values[f"{split}_{metric}"], log=log, title=f"{split} {title}")
            ax.set_aspect("equal")
        paths.append(_save(fig, out_dir / f"{metric}.png"))
    return paths


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
