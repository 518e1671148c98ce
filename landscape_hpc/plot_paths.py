"""Paths drawn on a surface's contours (matplotlib): the stored PCA trajectory with its learning
rate drops (Li et al. 2018, fig. 9), the PCA axis labels, and other training runs projected on
the same plane (`plot --trajectory RUN_DIR`, repeatable; `lh.project` does the projection).

    python -m landscape_hpc.plot pca.h5 --trajectory runs/adam --trajectory runs/sgd_seed1
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Optional

import numpy as np
from matplotlib.axes import Axes

from landscape_hpc.errors import UserError
from landscape_hpc.files.surface_read import Surface

#: colours of projected runs (the stored trajectory is black or white, drops red)
COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:pink", "tab:olive")
Paths = Mapping[str, tuple[np.ndarray, np.ndarray]]


def lr_drop_indices(lrs) -> np.ndarray:
    """Indices of checkpoints whose learning rate is lower than the previous one's; NaN
    (unknown) never counts as a drop."""
    lrs = np.asarray(lrs, dtype=np.float64)
    return np.flatnonzero(lrs[1:] < lrs[:-1]) + 1


def trajectory(ax: Axes, x, y, lrs=None, color: str = "black"):
    """The optimisation path (checkpoints in training order) as a line with dots, and red dots
    where the learning rate dropped (Li et al. 2018, fig. 9). Returns (path, drops) Line2Ds;
    drops is None without learning rates."""
    x, y = np.asarray(x), np.asarray(y)
    (path,) = ax.plot(x, y, "-o", color=color, lw=1.2, ms=3, label="trajectory", zorder=3)
    drops = None
    if lrs is not None:
        i = lr_drop_indices(lrs)
        (drops,) = ax.plot(x[i], y[i], "o", color="red", ms=5, label="lr drop", zorder=4)
    ax.legend(fontsize=7, loc="best")
    return path, drops


def pc_labels(ax: Axes, ratios) -> None:
    """Axis labels "PC1: 64.0%" / "PC2: 12.0%": the variance each PCA direction explains."""
    setters = (ax.set_xlabel, ax.set_ylabel)
    for i, (setter, ratio) in enumerate(zip(setters, np.atleast_1d(ratios))):
        setter(f"PC{i + 1}: {100 * ratio:.1f}%")


def other_paths(ax: Axes, paths: Optional[Paths]) -> list:
    """Each projected run as a coloured line with dots, a square at its last checkpoint, named
    in the legend. Returns the Line2Ds, in the order of `paths`."""
    lines = []
    for i, (label, (x, y)) in enumerate((paths or {}).items()):
        colour = COLOURS[i % len(COLOURS)]
        (line,) = ax.plot(x, y, "-o", color=colour, lw=1.2, ms=3, label=label, zorder=3)
        ax.plot(x[-1:], y[-1:], "s", color=colour, ms=6, zorder=4)
        lines.append(line)
    if lines:
        ax.legend(fontsize=7, loc="best")
    return lines


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trajectory",
        action="append",
        metavar="RUN_DIR",
        help="draw another training run's checkpoints projected on the surface's plane "
        "(a train run folder, a folder of *.pt or a glob; repeatable)",
    )
    p.add_argument(
        "--origin",
        help="the surface's centre checkpoint for --trajectory (default: the one the file names)",
    )
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load --trajectory checkpoints with weights_only=False (only files you trust)",
    )


def project_runs(s: Surface, opts: argparse.Namespace) -> Optional[dict[str, tuple]]:
    """{label: (x, y)} of every --trajectory run on the plane of `s`, or None without any."""
    runs = getattr(opts, "trajectory", None)
    if not runs:
        return None
    if s.y is None:
        raise UserError(f"--trajectory draws paths on a plane; {s.path} is a 1D surface")
    from landscape_hpc.api.project import project

    origin = None
    if opts.origin:
        from landscape_hpc.files.checkpoint import load_state_dict_file

        origin = load_state_dict_file(opts.origin, opts.trust_checkpoint, "--origin")
    projected = project(
        s.path, runs, origin=origin, trust=opts.trust_checkpoint, key="--trajectory"
    )
    return {label: (p.coords[:, 0], p.coords[:, 1]) for label, p in projected.items()}
