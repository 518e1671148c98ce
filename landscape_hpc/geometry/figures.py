"""PNGs of the geometry experiments: one function per figure, each taking the arrays it draws
(figures import no experiment module; the experiments import this one only when they plot), and
`_save` laying out, writing and closing every figure.

    plot_maps          hessian (surface)  max_eig, min_eig, |min/max| over the grid
    plot_ritz          hessian (point)    the Lanczos Ritz values
    plot_intrinsic_dim subspace           accuracy and final loss vs the hyperplane dimension d
    plot_tunnel        tunnel             loss/accuracy along the linear path and the tunnel
    plot_connector     connector          the linear simplex vs the m-connector
    plot_width         width              loss along the rays, widths per optimum
    plot_short_dirs    tunnel, connector  short directions per point, their distances
    plot_wedge         wedge              random-hyperplane runs, the tunnel between two wedges
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from matplotlib.tri import Triangulation  # noqa: E402

from landscape_hpc.files.hessian_maps import read_maps  # noqa: E402

#: {split: {kind: (loss (Q,), acc (Q,))}}, kind e.g. "linear", "tunnel", "connector"
Metrics = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


def _save(fig: plt.Figure, path: Path, dpi: int = 130) -> Path:
    """Lays the figure out (tight, unless it was made with a layout engine such as
    layout="constrained"), writes it to `path` and closes it."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _colors() -> list[str]:
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


# --- hessian ------------------------------------------------------------------------------------


def plot_maps(path: Path, out: Path) -> Path:
    """max_eig, min_eig and |min/max| over the grid of the surface file `path` (2D: heat maps
    with contours; 1D: lines)."""
    maps = read_maps(path)
    x, y, hi, lo = maps.x, maps.y, maps.max_eig, maps.min_eig
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(lo / hi)
    if y is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        axes[0].plot(x, hi, "o-", label="max eigenvalue")
        axes[0].plot(x, lo, "o-", label="min eigenvalue")
        axes[0].axhline(0, color="grey", lw=0.8)
        axes[0].legend()
        axes[1].plot(x, ratio, "o-", color="C3")
        axes[1].set_title("|min / max|")
        for ax in axes:
            ax.set_xlabel("x")
            ax.grid(alpha=0.3)
    else:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
        panels = (
            (hi, "max eigenvalue", "viridis"),
            (lo, "min eigenvalue", "viridis"),
            (ratio, "|min / max|", "magma"),
        )
        for ax, (z, title, cmap) in zip(axes, panels):
            mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(z), shading="nearest", cmap=cmap)
            fig.colorbar(mesh, ax=ax)
            if np.isfinite(z).sum() >= 4 and len(x) > 1 and len(y) > 1:
                ax.contour(x, y, np.ma.masked_invalid(z), levels=8, colors="white", linewidths=0.6)
            ax.set_title(title)
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            ax.set_aspect("auto")
    fig.suptitle(f"Hessian eigenvalues over {path.name}")
    return _save(fig, out, dpi=120)


def plot_ritz(ritz: np.ndarray, out: Path, name: str) -> Path:
    """The Lanczos Ritz values (ascending) at a point: a coarse picture of the spectrum's
    spread."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.stem(np.arange(len(ritz)), ritz)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("Ritz value index (ascending)")
    ax.set_ylabel("eigenvalue estimate")
    ax.set_title(f"{name}: Lanczos Ritz values, max {ritz[-1]:.4g}, min {ritz[0]:.4g}")
    ax.grid(alpha=0.3)
    return _save(fig, out, dpi=120)


# --- subspace (intrinsic dimension) --------------------------------------------------------------


def plot_intrinsic_dim(
    rows: list[dict[str, Any]],
    path: Path,
    title: str,
    threshold: Optional[float] = None,
    flip: Optional[int] = None,
    d_int90: Optional[int] = None,
) -> Path:
    """Accuracy vs d (classifiers) and the final loss vs d, log-scaled d, from the rows of
    results.csv; the success threshold and the wedge's expected flip d = D − n as guides where
    given; the full model's test accuracy (the baseline row), 90% of it and d_int90."""
    full = [r for r in rows if r.get("full") == 1]
    rows = [r for r in rows if r.get("full") != 1]
    d = np.array([r["d"] for r in rows])
    loss = np.array([r["final_loss"] for r in rows], dtype=float)
    has_acc = any(np.isfinite(r["test_acc"]) for r in rows)
    if has_acc and full and np.isfinite(full[0]["test_acc"]):
        base = full[0]["test_acc"]
        fig_lines = [(base, "-", f"every parameter: {base:.1f}%"), (0.9 * base, ":", "90% of it")]
    else:
        fig_lines = []
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.5, 4))
    axes = np.atleast_1d(axes)
    if has_acc:
        for split, style in (("train", "o--"), ("test", "o-")):
            axes[0].plot(d, [r[f"{split}_acc"] for r in rows], style, label=split)
        for y, style, label in fig_lines:
            axes[0].axhline(y, color="grey", ls=style, lw=1, label=label)
        if d_int90 is not None:
            axes[0].axvline(d_int90, color="C2", ls="--", label=f"d_int90 = {d_int90}")
        axes[0].set_ylabel("accuracy (%)")
        axes[0].set_title("accuracy after training in a random d-plane")
        axes[0].legend()
    ax = axes[-1]
    ax.plot(d, loss, "o-", color="C3")
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls=":", label=f"success threshold {threshold:g}")
    if flip is not None:
        ax.axvline(flip, color="C0", ls="--", label=f"D − n = {flip}")
    if threshold is not None or flip is not None:
        ax.legend()
    if np.all(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    ax.set_ylabel("final training loss")
    ax.set_title("final loss")
    for a in axes:
        a.set_xscale("log")
        a.set_xticks(d, [str(v) for v in d], minor=False)
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("hyperplane dimension d")
        a.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path, dpi=120)


# --- tunnel and connector -----------------------------------------------------------------------


def plot_tunnel(
    t: np.ndarray, points: np.ndarray, metrics: Metrics, alignment: np.ndarray, path: Path
) -> Path:
    """Loss and accuracy vs position t (metrics' kinds "linear" dashed, "tunnel" solid, the
    optimised `points` as dots) and the cosine matrix of the deviations (`alignment`)."""
    has_acc = any(np.isfinite(m["linear"][1]).any() for m in metrics.values())
    panels = 3 if has_acc else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.9))
    colors = _colors()
    for i, (s, m) in enumerate(metrics.items()):
        on_point = np.isin(t, points)
        for ax, which in zip(axes[: panels - 1], (0, 1)):
            ax.plot(t, m["linear"][which], "--", color=colors[i], label=f"{s} linear")
            ax.plot(t, m["tunnel"][which], "-", color=colors[i], label=f"{s} tunnel")
            ax.plot(t[on_point], m["tunnel"][which][on_point], "o", color=colors[i], ms=3)
    axes[0].set_ylabel("loss")
    axes[0].set_title("loss along the path")
    if has_acc:
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_title("accuracy along the path")
    for ax in axes[: panels - 1]:
        ax.set_xlabel("position t (θ_a → θ_b)")
        ax.legend(fontsize=7)
    inner = points[1:-1]
    half = (inner[1] - inner[0]) / 2 if len(inner) > 1 else 0.5  # pixel centres on the t_i
    lo, hi = inner[0] - half, inner[-1] + half
    image = axes[-1].imshow(alignment, vmin=-1, vmax=1, cmap="coolwarm", extent=(lo, hi, hi, lo))
    fig.colorbar(image, ax=axes[-1], fraction=0.046)
    axes[-1].set_title("cos(δ_i, δ_j) of the deviations")
    axes[-1].set_xlabel("t_j")
    axes[-1].set_ylabel("t_i")
    return _save(fig, path)


def plot_connector(
    grid: np.ndarray,
    metrics: Metrics,
    path: Path,
    dense: Optional[tuple[np.ndarray, Metrics]] = None,
) -> Path:
    """m = 3: the linear triangle and the connector coloured by loss (first split, one scale),
    over the finer grid `dense` (points, metrics) when given; every m: the loss at each grid
    point (barycentric `grid` (Q, m)), linear dashed vs connector solid."""
    split = next(iter(metrics))
    m = grid.shape[1]
    triangles = m == 3
    fig, axes = plt.subplots(
        1, 3 if triangles else 1, figsize=(14 if triangles else 6, 4.2), layout="constrained"
    )
    axes = np.atleast_1d(axes)
    lines = axes[-1]
    order = np.argsort(metrics[split]["linear"][0], kind="stable")
    colors = _colors()
    for i, (s, kinds) in enumerate(metrics.items()):
        lines.plot(kinds["linear"][0][order], "--", color=colors[i], label=f"{s} linear simplex")
        lines.plot(
            kinds["connector"][0][order], "-o", ms=3, color=colors[i], label=f"{s} connector"
        )
    lines.set_xlabel("grid point (sorted by the linear loss)")
    lines.set_ylabel("loss")
    lines.set_title(f"{m}-connector vs linear simplex")
    lines.legend(fontsize=7)
    if triangles:
        # barycentric -> plane: vertices at (0, 0), (1, 0), (1/2, √3/2)
        shown, shown_metrics = dense if dense is not None else (grid, metrics)
        x = shown[:, 1] + 0.5 * shown[:, 2]
        y = (np.sqrt(3) / 2) * shown[:, 2]
        tri = Triangulation(x, y)
        values = [shown_metrics[split][kind][0] for kind in ("linear", "connector")]
        vmin = min(np.nanmin(v) for v in values)
        vmax = max(np.nanmax(v) for v in values)
        for ax, kind, z in zip(axes[:2], ("linear simplex", "connector"), values):
            image = ax.tripcolor(tri, z, shading="gouraud", vmin=vmin, vmax=vmax, cmap="viridis")
            ax.plot(grid[:, 1] + 0.5 * grid[:, 2], (np.sqrt(3) / 2) * grid[:, 2], "k.", ms=3)
            corners = ((0, 0, -12, -10), (1, 0, 12, -10), (0.5, np.sqrt(3) / 2, 0, 5))
            for j, (vx, vy, dx, dy) in enumerate(corners):
                ax.annotate(
                    f"θ_{j + 1}",
                    (vx, vy),
                    xytext=(dx, dy),
                    textcoords="offset points",
                    fontsize=8,
                    ha="center",
                )
            ax.set_xlim(-0.08, 1.08)
            ax.set_ylim(-0.1, 0.95)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(f"{split} loss: {kind}")
        fig.colorbar(image, ax=axes[1], fraction=0.05, label=f"{split} loss")
    return _save(fig, path)


# --- width --------------------------------------------------------------------------------------


def plot_width(
    labels: list[str],
    distances: np.ndarray,
    losses: np.ndarray,
    levels: np.ndarray,
    widths: np.ndarray,
    crossed: np.ndarray,
    path: Path,
    split: str = "train",
) -> Path:
    """Left: loss vs distance (thin: every ray, thick: the mean; dotted: each level). Right: the
    mean width per optimum ± std, every ray's width a dot (hollow: lower bound, not crossed).
    Per optimum o and ray i: losses (O, n, R) at `distances` (R,), levels (O,), widths and
    crossed (O, n)."""
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    colors = _colors()
    rng = np.random.default_rng(0)  # horizontal jitter of the dots only
    for o, label in enumerate(labels):
        c = colors[o % len(colors)]
        for ray in losses[o]:
            curves.plot(distances, ray, "-", color=c, alpha=0.15, lw=0.8)
        mean = np.nanmean(losses[o], axis=0)
        curves.plot(distances, mean, "-", color=c, lw=2, label=f"{label} (mean)")
        curves.axhline(levels[o], ls=":", color=c, lw=1.2, label=f"{label} level")
        w, hit = widths[o], crossed[o]
        bars.bar(o, np.mean(w), yerr=np.std(w), color=c, alpha=0.5, capsize=4)
        x = o + rng.uniform(-0.2, 0.2, len(w))
        bars.plot(x[hit], w[hit], "o", color=c, ms=4)
        bars.plot(x[~hit], w[~hit], "o", mfc="none", color=c, ms=5)
    curves.set_xlabel("distance r along the ray")
    curves.set_ylabel(f"{split} loss")
    if np.all(losses > 0):
        curves.set_yscale("log")
    curves.set_title("loss along random rays from each optimum")
    curves.legend(fontsize=7)
    bars.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
    bars.set_ylabel("width (distance where the level is crossed)")
    bars.set_title("radial tunnel width (mean ± std; hollow: ≥, not crossed)")
    return _save(fig, path)


def plot_short_dirs(
    x: dict[str, np.ndarray],
    counts: dict[str, np.ndarray],
    distance: dict[str, np.ndarray],
    crossed: dict[str, np.ndarray],
    short: float,
    xlabel: str,
    path: Path,
) -> Path:
    """Per kind of point ("optimum" as black squares, "linear" dashed, the optimised kind
    solid): the count of short directions per point at positions x (n_k,), the median distance
    per point, and the fraction of all the kind's directions crossed within r (distance and
    crossed: (n_k, N); the curve ends below 1 when some never crossed)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), layout="constrained")
    n = next(iter(distance.values())).shape[1]
    r_max = max(float(d.max()) for d in distance.values())
    for kind, xs in x.items():
        order = np.argsort(xs, kind="stable")
        style = {"optimum": "s", "linear": "--o"}.get(kind, "-o")
        c = {"optimum": "k", "linear": "C0"}.get(kind, "C1")
        median = np.median(distance[kind], axis=1)
        axes[0].plot(xs[order], counts[kind][order], style, color=c, ms=4, label=kind)
        axes[1].plot(xs[order], median[order], style, color=c, ms=4, label=kind)
        r = np.sort(distance[kind][crossed[kind]])
        frac = np.r_[0, np.arange(1, len(r) + 1) / distance[kind].size]
        axes[2].step(np.r_[0, r, r_max], np.r_[frac, frac[-1]], where="post", color=c, label=kind)
    axes[0].set_ylim(-0.5, n + 0.5)
    axes[0].set_ylabel(f"short directions (of {n})")
    axes[0].set_title(f"directions crossing the level within r < {short:g}")
    axes[1].axhline(short, ls=":", color="0.5", lw=1)
    axes[1].set_ylabel("median distance (never crossed: r_max)")
    axes[1].set_title("median distance to the level per point")
    axes[2].axvline(short, ls=":", color="0.5", lw=1, label=f"short = {short:g}")
    axes[2].set_xlabel("distance r along the direction")
    axes[2].set_ylabel("fraction of directions crossed within r")
    axes[2].set_title("distribution of the distances")
    for ax in axes[:2]:
        ax.set_xlabel(xlabel)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


# --- wedge --------------------------------------------------------------------------------------


def plot_wedge(
    dims: np.ndarray,
    final_loss: np.ndarray,
    success: np.ndarray,
    t: np.ndarray,
    points: np.ndarray,
    linear_loss: np.ndarray,
    tunnel_loss: np.ndarray,
    path: Path,
    *,
    dim: int,
    n: int,
    success_loss: float,
) -> Path:
    """Left: the final loss of every random-hyperplane run (d of each in `dims`) against d, the
    flip d = D − n and the success level. Right: the loss along the linear path and the tunnel
    at positions t, the optimised `points` as dots."""
    fig, (runs, tunnel) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    floor = success_loss / 100  # zero losses drawn on the log axis's floor
    shown = np.maximum(final_loss, floor)
    runs.plot(dims[success], shown[success], "o", color="C2", ms=4, label="succeeded")
    runs.plot(dims[~success], shown[~success], "o", color="C3", ms=4, label="failed")
    ds = np.unique(dims)
    medians = [np.median(shown[dims == d]) for d in ds]
    runs.plot(ds, medians, "-", color="0.4", lw=1)
    runs.axvline(dim - n, ls="--", color="k", lw=1, label=f"d = D − n = {dim - n}")
    runs.axhline(success_loss, ls=":", color="0.5", lw=1, label="success level")
    runs.set_yscale("log")
    runs.set_xlabel("hyperplane dimension d")
    runs.set_ylabel(f"final loss (distance to a wedge; 0 drawn at {floor:g})")
    runs.set_title(f"random hyperplanes, D = {dim}, n = {n}")
    runs.legend(fontsize=7)
    tunnel.plot(t, linear_loss, "--", color="C0", label="linear path")
    tunnel.plot(t, tunnel_loss, "-", color="C1", label="tunnel")
    on_point = np.isin(t, points)
    tunnel.plot(t[on_point], tunnel_loss[on_point], "o", color="C1", ms=3)
    tunnel.set_xlabel("position t (θ_a → θ_b)")
    tunnel.set_ylabel("loss")
    tunnel.set_title("two optima on different wedges")
    tunnel.legend(fontsize=7)
    return _save(fig, path)
