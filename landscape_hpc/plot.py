"""Figures of surfaces. Library functions take arrays and a matplotlib Axes; only
`plot_surface_file` reads files and saves figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from landscape_hpc.errors import UserError  # noqa: E402

_LABELS = {"loss": "loss", "acc": "accuracy (%)"}


def contour(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    levels: int | np.ndarray = 20,
    title: str = "",
) -> None:
    """Labelled contour lines of z (ny, nx) over the grid (x, y); NaN cells (pending) are blank."""
    X, Y = np.meshgrid(x, y)  # row = y index, column = x index, as in the surface file
    finite = np.isfinite(z)
    if finite.sum() < 4 or np.nanmin(z[finite]) == np.nanmax(z[finite]):
        ax.imshow(z, origin="lower", extent=(x[0], x[-1], y[0], y[-1]), aspect="auto")
    else:
        cs = ax.contour(X, Y, np.ma.masked_invalid(z), levels=levels, cmap="viridis")
        ax.clabel(cs, inline=True, fontsize=7, fmt="%.3g")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title)
    ax.set_aspect("auto")


def line(ax: Axes, x: np.ndarray, values: np.ndarray, label: str, title: str = "") -> None:
    """A 1D surface: values (nx,) against x."""
    ax.plot(x, values, label=label)
    ax.set_xlabel("x")
    ax.set_title(title)


def plot_surface_file(path: str | Path, out_dir: Optional[str | Path] = None) -> list[Path]:
    """One PNG per computed metric of a surface file (contours for 2D, lines for 1D), written next
    to the file (or in out_dir); returns their paths."""
    path = Path(path)
    out_dir = Path(out_dir) if out_dir else path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise UserError(f"{path} is not an HDF5 surface file") from None
    written = []
    with f:
        if "xcoordinates" not in f:
            raise UserError(f"{path} has no xcoordinates: not a surface file")
        x = f["xcoordinates"][()]
        y = f["ycoordinates"][()] if "ycoordinates" in f else None
        names = [n for n in f if n.endswith(("_loss", "_acc")) and isinstance(f[n], h5py.Dataset)]
        for name in sorted(names):
            z = f[name][()].astype(float)
            if not np.isfinite(z).any():
                continue
            metric = name.rsplit("_", 1)[1]
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            if y is None:
                line(ax, x, z, name, title=f"{path.stem}: {name}")
                ax.set_ylabel(_LABELS[metric])
            else:
                contour(ax, x, y, z, title=f"{path.stem}: {name}")
            fig.tight_layout()
            png = out_dir / f"{path.stem}_{name}_{'1d' if y is None else '2dcontour'}.png"
            fig.savefig(png, dpi=120)
            plt.close(fig)
            written.append(png)
    return written
