"""The training path moving over the contours: one frame per checkpoint (issue 31).

    python -m landscape_hpc.plot runs/pca/surface/surface.h5 --kind animation  # _path.gif
    python -m landscape_hpc.plot s.h5 --kind animation --format mp4            # needs ffmpeg

A surface along PCA directions (directions.kind=pca) stores the projected trajectory
(trajectory/x, y, epoch, lr; files/surface.py). Frame i draws the contours, the path up to
checkpoint i and a marker on it; its title names the epoch and the loss *of the surface at the
projected point* (bilinear in the grid's cells), which is not the checkpoint's own loss: the
projection drops the part of the checkpoint off the plane of the two directions.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter
from matplotlib.axes import Axes

from landscape_hpc.errors import UserError
from landscape_hpc.files.surface_read import Surface

#: formats of an animation (png, the plot command's default, means gif here)
ANIMATION_FORMATS = ("gif", "mp4")


def bilinear(x: np.ndarray, y: np.ndarray, z: np.ndarray, px, py) -> np.ndarray:
    """z (ny, nx) over the axes (x, y) at the points (px, py) (n,), bilinear in each cell;
    points outside the grid take the nearest edge's value. NaN where a corner is NaN."""
    px, py = np.atleast_1d(np.asarray(px, np.float64)), np.atleast_1d(np.asarray(py, np.float64))
    i = np.clip(np.searchsorted(x, px) - 1, 0, len(x) - 2)  # (n,) cell column
    j = np.clip(np.searchsorted(y, py) - 1, 0, len(y) - 2)  # (n,) cell row
    tx = np.clip((px - x[i]) / (x[i + 1] - x[i]), 0.0, 1.0)
    ty = np.clip((py - y[j]) / (y[j + 1] - y[j]), 0.0, 1.0)
    bottom = (1 - tx) * z[j, i] + tx * z[j, i + 1]
    top = (1 - tx) * z[j + 1, i] + tx * z[j + 1, i + 1]
    return (1 - ty) * bottom + ty * top


def path_of(s: Surface) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored trajectory's (x, y, epoch) (n,); a UserError when the file holds none."""
    t = s.trajectory
    if t is None or "y" not in t or s.y is None:
        raise UserError(
            f"{s.path} holds no 2D training trajectory to animate; make the surface along PCA "
            "directions of a training run (directions.kind=pca with directions.trajectory=the "
            "run's checkpoints, grid.y set)"
        )
    x, y = np.atleast_1d(t["x"]), np.atleast_1d(t["y"])
    epoch = np.atleast_1d(t["epoch"]) if "epoch" in t else np.arange(len(x))
    return x, y, epoch


#: draws the still background of every frame: (ax, surface, metric name) -> None
Background = Callable[[Axes, Surface, str], None]


def animate(s: Surface, metric_name: str, path: Path, background: Background, fps=4.0) -> Path:
    """Writes the animation of the path over `metric_name`'s surface to `path` (.gif with
    Pillow, .mp4 with ffmpeg), drawn over `background` (plot.py's contours); one frame per
    checkpoint. Returns `path`."""
    tx, ty, epoch = path_of(s)
    if path.suffix == ".mp4" and shutil.which("ffmpeg") is None:
        raise UserError("--format mp4 needs ffmpeg on the PATH; install it or use --format gif")
    z = s.metrics[metric_name]
    values = bilinear(s.x, s.y, z, tx, ty)  # (n,) the surface under each checkpoint
    fig, ax = plt.subplots(figsize=(5.2, 4.3))
    background(ax, s, metric_name)
    (line,) = ax.plot([], [], "-o", color="black", lw=1.2, ms=3, zorder=3)
    (head,) = ax.plot([], [], "o", color="red", ms=8, zorder=4)

    def frame(i: int):
        line.set_data(tx[: i + 1], ty[: i + 1])
        head.set_data(tx[i : i + 1], ty[i : i + 1])
        ax.set_title(f"{s.path.stem}: epoch {int(epoch[i])}, {metric_name} {values[i]:.4g}")
        return line, head

    frame(0)
    fig.tight_layout()  # with a title in place, so that the frames' titles fit

    anim = FuncAnimation(fig, frame, frames=len(tx), blit=False)
    writer = FFMpegWriter(fps=fps) if path.suffix == ".mp4" else PillowWriter(fps=fps)
    anim.save(str(path), writer=writer, dpi=100)
    plt.close(fig)
    return path


def animate_file(
    s: Surface, opts: argparse.Namespace, out: Path, target: Callable, background: Background
) -> list[Path]:
    """The command's --kind animation: one file per loss metric of `s`, named
    <stem>_<metric>_path.<gif|mp4>; `target` checks a path is not an input (plot._target)."""
    path_of(s)  # refuse before anything is drawn
    fmt = opts.format if opts.format in ANIMATION_FORMATS else "gif"
    names = [n for n in sorted(s.metrics, reverse=True) if n.endswith("_loss")] or sorted(s.metrics)
    return [
        animate(s, name, target(out / f"{s.path.stem}_{name}_path.{fmt}", opts), background)
        for name in names
    ]
