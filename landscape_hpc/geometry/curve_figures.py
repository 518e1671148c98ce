"""The `curve` command's PNGs: loss and accuracy along t for the trained curve (solid) and the
straight line (dashed), per split, with the loss barriers in the legend, and the bend's
training (minibatch loss per step); and the loss over the plane through θ_a, the bend and
θ_b with both paths drawn on it (Garipov et al. 2018, Figure 1). Figures import no
experiment module; they take what they draw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: {split: {"curve" | "line": (loss (Q,), acc (Q,))}}
Metrics = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


def plot_curve(
    t: np.ndarray,
    metrics: Metrics,
    barriers: dict[str, dict[str, tuple[float, float]]],
    losses: Sequence[float],
    kind: str,
    path: Path,
) -> Path:
    """Loss (and accuracy, where there is one) vs t for both paths, and the training losses."""
    has_acc = any(np.isfinite(m["line"][1]).any() for m in metrics.values())
    panels = 3 if has_acc else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.9))
    for i, (s, m) in enumerate(metrics.items()):
        color = f"C{i % 10}"
        for ax, which in zip(axes[: panels - 1], (0, 1)):
            for path_kind, style in (("line", "--"), ("curve", "-")):
                label = f"{s} {path_kind}"
                if which == 0:
                    label += f" (barrier {barriers[s][path_kind][0]:.3g})"
                ax.plot(t, m[path_kind][which], style, color=color, label=label)
    axes[0].set_ylabel("loss")
    axes[0].set_title(f"loss along the {kind} curve and the line")
    if has_acc:
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_title("accuracy along the paths")
    for ax in axes[: panels - 1]:
        ax.set_xlabel("position t (θ_a → θ_b)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes[-1].plot(np.arange(1, len(losses) + 1), losses, lw=0.8)
    axes[-1].set_xlabel("step")
    axes[-1].set_ylabel("minibatch loss at θ(t), t ~ U(0, 1)")
    axes[-1].set_title("training of the bend")
    axes[-1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_plane(
    x: np.ndarray,
    y: np.ndarray,
    metrics: dict[str, tuple[np.ndarray, np.ndarray]],
    points: np.ndarray,
    curve: np.ndarray,
    line: np.ndarray,
    kind: str,
    path: Path,
) -> Path:
    """A filled contour of the loss (log-spaced levels) per split over the plane (x (nx,),
    y (ny,), loss (ny, nx)), the curve (solid), the line (dashed) and θ_a, bend, θ_b marked;
    points (3, 2), curve and line (Q, 2) in the plane's coordinates."""
    splits = list(metrics)
    fig, axes = plt.subplots(1, len(splits), figsize=(6.0 * len(splits), 4.6), squeeze=False)
    for ax, s in zip(axes[0], splits):
        loss = np.asarray(metrics[s][0], np.float64)
        finite = loss[np.isfinite(loss)]
        lo, hi = max(float(finite.min()), 1e-6), float(finite.max())
        levels = np.geomspace(lo, max(hi, lo * 1.0001), 25)
        filled = ax.contourf(x, y, np.clip(loss, lo, hi), levels=levels, cmap="viridis_r",
                             norm=matplotlib.colors.LogNorm(lo, hi))  # fmt: skip
        ax.contour(x, y, np.clip(loss, lo, hi), levels=levels[::3], colors="k",
                   linewidths=0.4, alpha=0.5)  # fmt: skip
        fig.colorbar(filled, ax=ax, label=f"{s} loss (log scale)", format="%.3g")
        ax.plot(line[:, 0], line[:, 1], "--", color="white", lw=1.6, label="line")
        ax.plot(curve[:, 0], curve[:, 1], "-", color="tab:red", lw=2.0, label=f"{kind} curve")
        for (px, py), name, marker in zip(points, ("θ_a", "bend", "θ_b"), ("o", "s", "o")):
            ax.plot(px, py, marker, color="white", mec="black", ms=8, zorder=5)
            ax.annotate(name, (px, py), textcoords="offset points", xytext=(7, -12),
                        color="white", fontsize=10, weight="bold")  # fmt: skip
        ax.set_xlabel("u = (θ_b − θ_a)/‖θ_b − θ_a‖")
        ax.set_ylabel("v: toward the bend, orthogonal to u")
        ax.set_title(f"{s} loss over the plane of θ_a, bend, θ_b")
        ax.legend(fontsize=8, loc="upper right", framealpha=0.7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
