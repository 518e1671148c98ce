"""The `curve` command's PNG: loss and accuracy along t for the trained curve (solid) and the
straight line (dashed), per split, with the loss barriers in the legend, and the bend's
training (minibatch loss per step). Figures import no experiment module; they take what they
draw."""

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
