"""Figures of surfaces (Li et al. 2018 figures; the MPO paper's log-scale heat maps).

Library functions take arrays and a matplotlib Axes; files are read through files/surface_read.py
(`read_surface`); only the command (and `plot_surface_file`) saves figures.

    python -m landscape_hpc.plot runs/demo/surface/surface.h5                 # every 2D kind
    python -m landscape_hpc.plot s.h5 --kind contour --vmin 0.1 --vmax 10 --vlevel 0.5
    python -m landscape_hpc.plot s.h5 --kind heatmap --log --format pdf --out figs/
    python -m landscape_hpc.plot s.h5 --kind 3d --zmax 5 --elev 30 --azim -60
    python -m landscape_hpc.plot s.h5 --kind vtp --log --zmax 10              # ParaView
    python -m landscape_hpc.plot a.h5 b.h5 --kind 1d --log --out figs/        # 1D overlaid
    python -m landscape_hpc.plot pca.h5 --kind animation   # the PCA path as a GIF (plot_animation)
    python -m landscape_hpc.plot s.h5 --kind html    # offline HTML to turn and hover (plot_html)
    python -m landscape_hpc.plot pca.h5 --trajectory runs/adam    # other runs' paths (plot_paths)

A surface along PCA directions (directions.kind=pca) also holds the projected training
trajectory: 2D contour, filled and heat-map plots draw it as a line with dots, red where the
learning rate dropped, and label the axes with the variance each direction explains (Li et al.
2018, fig. 9). It reads loss-landscape's surface files too (their -1 sentinel: missing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm

from landscape_hpc import plot_animation, plot_html, plot_paths
from landscape_hpc.cli import exit_status
from landscape_hpc.errors import UserError
from landscape_hpc.files.surface_read import Surface, read_attrs, read_surface
from landscape_hpc.files.vtp import surface_heights, write_vtp
from landscape_hpc.paths import check_no_alias
from landscape_hpc.plot_paths import lr_drop_indices, pc_labels, trajectory  # noqa: F401

KINDS_2D = ("contour", "filled", "heatmap", "3d")
KINDS = ("auto", "1d", *KINDS_2D, "vtp", "animation", "html", "all")
FORMATS = ("png", "pdf", "svg", "gif", "mp4")  # gif, mp4: --kind animation only
_LABELS = {"loss": "loss", "acc": "accuracy (%)", "ppl": "perplexity"}
#: the most contour levels --vlevel may ask for (matplotlib takes minutes over 100,000)
MAX_LEVELS = 1000
_SUFFIX = {"contour": "2dcontour", "filled": "2dcontourf", "heatmap": "2dheat", "3d": "3dsurface"}


def _levels(z: np.ndarray, vmin, vmax, vlevel, metric: str) -> np.ndarray:
    finite = z[np.isfinite(z)]
    lo = float(finite.min()) if vmin is None else vmin
    hi = float(finite.max()) if vmax is None else vmax
    if not hi > lo:  # a flat surface: a level band around its one value
        lo, hi = lo - 0.5, hi + 0.5
    if vlevel is not None:
        if (hi - lo) / vlevel > MAX_LEVELS:
            raise UserError(
                f"--vlevel {vlevel:g} asks for {(hi - lo) / vlevel:.3g} contour levels between "
                f"{lo:.4g} and {hi:.4g} (at most {MAX_LEVELS}); pass a larger --vlevel"
            )
        return np.arange(lo, hi + vlevel / 2, vlevel)
    if metric == "loss" and lo > 0 and hi / lo > 10:
        return np.geomspace(lo, hi, 20)  # dense near the minimum, where the basin's shape is
    return np.linspace(lo, hi, 20)


def contour(ax: Axes, x, y, z, vmin=None, vmax=None, vlevel=None, metric="loss", title=""):
    """Labelled contour lines of z (ny, nx) over (x, y); NaN (pending) cells are left blank."""
    X, Y = np.meshgrid(x, y)  # row = y index, column = x index, as in the surface file
    levels = _levels(z, vmin, vmax, vlevel, metric)
    cs = ax.contour(X, Y, np.ma.masked_invalid(z), levels=levels, cmap="summer")
    ax.clabel(cs, inline=True, fontsize=7, fmt="%.3g")
    _axes(ax, title)
    return cs


def filled(ax: Axes, x, y, z, vmin=None, vmax=None, vlevel=None, metric="loss", title=""):
    X, Y = np.meshgrid(x, y)
    levels = _levels(z, vmin, vmax, vlevel, metric)
    cs = ax.contourf(X, Y, np.ma.masked_invalid(z), levels=levels, cmap="viridis", extend="max")
    ax.figure.colorbar(cs, ax=ax)
    _axes(ax, title)
    return cs


def heatmap(ax: Axes, x, y, z, vmin=None, vmax=None, log=False, title=""):
    """z as a heat map; log=True for a log colour scale (the MPO paper's figures)."""
    finite = z[np.isfinite(z)]
    lo = float(finite.min()) if vmin is None else vmin
    hi = float(finite.max()) if vmax is None else vmax
    norm = LogNorm(max(lo, 1e-12), max(hi, 1e-12)) if log else None
    im = ax.pcolormesh(
        x,
        y,
        np.ma.masked_invalid(z),
        shading="nearest",
        cmap="viridis",
        norm=norm,
        **({} if log else {"vmin": lo, "vmax": hi}),
    )
    ax.figure.colorbar(im, ax=ax)
    _axes(ax, title)
    return im


def surface3d(ax, x, y, z, zmax=None, elev=30.0, azim=-60.0, title=""):
    """A 3D surface (ax from `fig.add_subplot(projection="3d")`, which current matplotlib
    renders; loss-landscape's `Axes3D(fig)` draws a blank figure there), z clipped at zmax."""
    X, Y = np.meshgrid(x, y)
    Z = np.minimum(z, zmax) if zmax is not None else z
    ax.plot_surface(X, Y, np.ma.masked_invalid(Z), cmap="coolwarm", linewidth=0, antialiased=True)
    ax.view_init(elev=elev, azim=azim)
    ax.set_title(title)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


def lines_1d(ax: Axes, x, loss: dict, acc: dict, log: bool = False, title: str = ""):
    """Loss (left axis, solid) and accuracy (right axis, dashed) of several curves, Li et al.
    figures 9-14 style. loss/acc: {label: values (nx,)}."""
    twin = ax.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, values) in enumerate(loss.items()):
        ax.plot(x, values, "-", color=colors[i % len(colors)], label=f"{label} loss")
    for i, (label, values) in enumerate(acc.items()):
        twin.plot(x, values, "--", color=colors[i % len(colors)], label=f"{label} acc")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("x")
    ax.set_ylabel("loss")
    twin.set_ylabel("accuracy (%)")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="best")
    ax.set_title(title)
    return twin


def _axes(ax: Axes, title: str) -> None:
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title)


# --- the file-level side: read, draw, save -------------------------------------------------


def _splits(s: Surface, metric: str) -> list[str]:
    return [n for n in sorted(s.metrics, reverse=True) if n.endswith(f"_{metric}")]


def _draw_2d(s: Surface, kind: str, metric: str, opts: argparse.Namespace, out: Path) -> Path:
    names = _splits(s, metric)
    fig = plt.figure(figsize=(5.2 * len(names), 4.3))
    for i, name in enumerate(names):
        z = s.metrics[name]
        title = f"{s.path.stem}: {name}" + (f"\nrange: {s.range_level}" if s.range_level else "")
        if kind == "3d":
            ax = fig.add_subplot(1, len(names), i + 1, projection="3d")
            surface3d(ax, s.x, s.y, z, opts.zmax, opts.elev, opts.azim, title)
            if s.explained_variance_ratio is not None:
                pc_labels(ax, s.explained_variance_ratio)
            continue
        ax = fig.add_subplot(1, len(names), i + 1)
        if kind == "contour":
            contour(ax, s.x, s.y, z, opts.vmin, opts.vmax, opts.vlevel, metric, title)
        elif kind == "filled":
            filled(ax, s.x, s.y, z, opts.vmin, opts.vmax, opts.vlevel, metric, title)
        else:
            heatmap(ax, s.x, s.y, z, opts.vmin, opts.vmax, opts.log and metric == "loss", title)
        _overlay_trajectory(ax, s, "black" if kind == "contour" else "white")
        plot_paths.other_paths(ax, opts.paths.get(s.path))
    fig.tight_layout()
    path = _target(out / f"{s.path.stem}_{metric}_{_SUFFIX[kind]}.{opts.format}", opts)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _animation_background(ax: Axes, s: Surface, name: str) -> None:
    contour(ax, s.x, s.y, s.metrics[name], metric=name.rsplit("_", 1)[-1])
    if s.explained_variance_ratio is not None:
        pc_labels(ax, s.explained_variance_ratio)


def _overlay_trajectory(ax: Axes, s: Surface, color: str) -> None:
    t = s.trajectory
    if t is not None and "y" in t:
        trajectory(ax, t["x"], t["y"], t.get("lr"), color)
    if s.explained_variance_ratio is not None:
        pc_labels(ax, s.explained_variance_ratio)


def _draw_1d(surfaces: list[Surface], opts: argparse.Namespace, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.3))
    loss, acc = {}, {}
    for s in surfaces:
        tag = s.path.stem if len(surfaces) > 1 else ""
        for name in _splits(s, "loss"):
            loss[f"{tag} {name[:-5]}".strip()] = s.metrics[name]
        for name in _splits(s, "acc"):
            acc[f"{tag} {name[:-4]}".strip()] = s.metrics[name]
    title = " vs ".join(s.path.stem for s in surfaces)
    levels = {s.range_level for s in surfaces if s.range_level}
    if len(surfaces) == 1 and levels:
        title += f"\nrange: {levels.pop()}"
    lines_1d(ax, surfaces[0].x, loss, acc, opts.log, title=title)
    if len(surfaces) == 1 and surfaces[0].explained_variance_ratio is not None:
        pc_labels(ax, surfaces[0].explained_variance_ratio[:1])
    fig.tight_layout()
    stem = surfaces[0].path.stem if len(surfaces) == 1 else "overlay"
    path = _target(out / f"{stem}_1d_loss_acc.{opts.format}", opts)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _export_vtp(s: Surface, opts: argparse.Namespace, out: Path) -> list[Path]:
    written = []
    for name in _splits(s, "loss"):
        height = surface_heights(s.metrics[name], opts.log, opts.zmax)
        suffix = "_log" if opts.log else ""
        path = _target(out / f"{s.path.stem}_{name}{suffix}.vtp", opts)
        written.append(write_vtp(path, s.x, s.y, height, {name: height, **s.metrics}))
    return written


def _target(path: Path, opts: argparse.Namespace) -> Path:
    """`path`, about to be written: never one of the surface files being plotted."""
    inputs = getattr(opts, "inputs", [])
    check_no_alias({"--out": path}, {f"surface[{i}]": p for i, p in enumerate(inputs)})
    return path


def plot_files(paths: Sequence[str | Path], opts: argparse.Namespace) -> list[Path]:
    """Draws what opts asks for; returns the written files."""
    surfaces = [read_surface(p) for p in paths]
    opts.inputs = list(paths)  # what no figure may overwrite (_target)
    for s in surfaces:
        if s.n_done == 0 or not any(np.isfinite(v).any() for v in s.metrics.values()):
            raise UserError(f"{s.path} has nothing computed yet: run the surface command first")
        if s.n_done < s.size:
            print(f"note: {s.path} is {s.n_done} of {s.size} points done; plotting those")
    out = _out_dir(Path(opts.out) if opts.out else surfaces[0].path.parent)
    one_d = [s for s in surfaces if s.y is None]
    two_d = [s for s in surfaces if s.y is not None]
    kinds = _kinds(opts.kind, bool(one_d), bool(two_d))
    if opts.metric:
        for s in surfaces:
            missing = [m for m in opts.metric if m not in s.metrics]
            if missing:
                raise UserError(
                    f"{s.path} holds no {', '.join(missing)}; it has {', '.join(sorted(s.metrics))}"
                )
            s.metrics = {m: s.metrics[m] for m in opts.metric}
    for s in surfaces:
        # e.g. the accuracy of a model that outputs its loss (wedge): NaN at every done point
        empty = sorted(m for m, v in s.metrics.items() if not np.isfinite(v).any())
        if empty and opts.metric:
            raise UserError(f"{s.path}: {', '.join(empty)} has no finite value to plot")
        for m in empty:
            print(f"note: {s.path}: {m} has no finite value (not computed for this model); skipped")
            del s.metrics[m]
    written: list[Path] = []
    opts.paths = {s.path: plot_paths.project_runs(s, opts) for s in surfaces}  # --trajectory
    for s in surfaces if "html" in kinds else []:  # 2D: surface + contours; 1D: curves
        fig = plot_html.surface_figure(s, read_attrs(s.path), opts.paths[s.path])
        written.append(plot_html.write(fig, _target(out / f"{s.path.stem}_surface.html", opts)))
    if "1d" in kinds:
        if not one_d:
            raise UserError("--kind 1d needs 1D surface files (made with grid.y=null)")
        written.append(_draw_1d(one_d, opts, out))
    for s in two_d:
        if (len(s.x) < 2 or len(s.y) < 2) and any(k in KINDS_2D or k == "vtp" for k in kinds):
            raise UserError(
                f"{s.path} is {len(s.y)}x{len(s.x)} points: a 2D plot needs at least 2 along "
                "each axis (plot a single row with --kind 1d from a 1D surface, grid.y=null)"
            )
        for kind in (k for k in kinds if k in KINDS_2D):
            for metric in ("loss", "acc", "ppl"):
                if _splits(s, metric):
                    written.append(_draw_2d(s, kind, metric, opts, out))
        if "vtp" in kinds:
            written += _export_vtp(s, opts, out)
        if "animation" in kinds:
            written += plot_animation.animate_file(s, opts, out, _target, _animation_background)
    if any(k in (*KINDS_2D, "vtp", "animation") for k in kinds) and not two_d:
        raise UserError(f"--kind {opts.kind} needs a 2D surface file; use --kind 1d")
    return written


def _out_dir(out: Path) -> Path:
    """The figures' folder, created; a UserError naming --out when it cannot be."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; pass a folder for the figures")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"--out {out}: cannot create the folder ({err.strerror}); pass another"
        ) from None
    return out


def check_options(opts: argparse.Namespace) -> None:
    """A UserError for option values no figure can use."""
    for name in ("vmin", "vmax", "vlevel", "zmax", "elev", "azim"):
        value = getattr(opts, name)
        if value is not None and not np.isfinite(value):
            raise UserError(f"--{name} {value} must be a finite number")
    if opts.vlevel is not None and opts.vlevel <= 0:
        raise UserError(f"--vlevel {opts.vlevel:g} must be positive (the spacing of the levels)")
    if opts.vmin is not None and opts.vmax is not None and not opts.vmin < opts.vmax:
        raise UserError(f"--vmin {opts.vmin:g} must be below --vmax {opts.vmax:g}")
    if opts.format in plot_animation.ANIMATION_FORMATS and opts.kind != "animation":
        raise UserError(f"--format {opts.format} is for --kind animation; use png, pdf or svg")


def _kinds(kind: str, has_1d: bool, has_2d: bool) -> list[str]:
    if kind == "auto":
        return (["1d"] if has_1d else []) + (list(KINDS_2D) if has_2d else [])
    if kind == "all":
        return (["1d"] if has_1d else []) + ([*KINDS_2D, "vtp"] if has_2d else [])
    return [kind]


def plot_surface_file(path: str | Path, out_dir: Optional[str | Path] = None) -> list[Path]:
    """The quick look the surface command writes next to its file: contours (2D) or lines (1D)."""
    opts = parser().parse_args([str(path), "--kind", "auto"])
    opts.out = out_dir
    s = read_surface(path)
    opts.kind = "1d" if s.y is None else "contour"
    return plot_files([path], opts)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m landscape_hpc.plot",
        description="Plot surface files (ours or loss-landscape's).",
    )
    p.add_argument("files", nargs="+", help="surface files (HDF5)")
    p.add_argument(
        "--kind", default="auto", choices=KINDS, help="what to draw (auto: 1d or every 2D kind)"
    )
    p.add_argument("--metric", nargs="*", help="only these datasets, e.g. train_loss test_loss")
    p.add_argument("--vmin", type=float, help="lowest contour level / colour")
    p.add_argument("--vmax", type=float, help="highest contour level / colour")
    p.add_argument("--vlevel", type=float, help="spacing of contour levels")
    p.add_argument(
        "--log", action="store_true", help="log scale (1D loss axis, heat-map colours, VTK height)"
    )
    p.add_argument("--zmax", type=float, help="clip heights above this (3D, VTK)")
    p.add_argument("--elev", type=float, default=30.0, help="3D view elevation (degrees)")
    p.add_argument("--azim", type=float, default=-60.0, help="3D view azimuth (degrees)")
    p.add_argument("--format", default="png", choices=FORMATS, help="figure format")
    p.add_argument("--out", help="folder for the figures (default: next to the first file)")
    plot_paths.add_options(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    opts = parser().parse_args(argv)

    def body() -> None:
        check_options(opts)
        for path in plot_files(opts.files, opts):
            print(path)

    return exit_status(body)


if __name__ == "__main__":
    sys.exit(main())
