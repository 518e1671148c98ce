"""`lh.plot`: the interactive figure of a surface, from a Dataset or a surface file.

    fig = lh.plot(ds, kind="html")                  # a plotly Figure; fig.show() in a notebook
    lh.plot("s.h5", kind="html", out="s.html")      # the same file as the plot command's
    dirs, path = lh.pca_directions(states)
    fig = lh.plot(lh.surface(model, data, directions=dirs), kind="html", path=path)
    lh.plot("pca.h5", paths=lh.project("pca.h5", runs=["runs/adam", "runs/sgd"]))  # more runs

The same code path as `python -m landscape_hpc.plot s.h5 --kind html` (plot_html.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np
import xarray as xr

from landscape_hpc import plot_html
from landscape_hpc.errors import UserError, UserTypeError, check_choice
from landscape_hpc.files.surface_read import Surface, read_attrs, read_surface
from landscape_hpc.paths import check_no_alias

KINDS = ("html",)


def plot(
    source: Any,
    kind: str = "html",
    out: Optional[str | Path] = None,
    metric: Optional[list[str]] = None,
    path: Any = None,
    paths: Optional[Mapping[str, Any]] = None,
) -> Any:
    """The interactive figure of a surface (plotly; the `[html]` extra).

    Args:
        source: a surface Dataset (`lh.surface`, `lh.load`) or a surface file's path.
        kind: "html": a 3D surface and contours of one metric at a time (a menu picks it), a
            linear/log10 toggle, hover values, missing points as gaps, the PCA path; a 1D
            surface draws its curves.
        out: where to write the self-contained HTML file (plotly's JavaScript inside); None
            writes nothing.
        metric: only these metrics, e.g. ["train_loss", "train_acc"].
        path: the projected trajectory of `lh.pca_directions` (its `coords`, `epochs`, `lrs`,
            `explained_variance_ratio`), drawn on a Dataset's contours; a surface file made
            along PCA directions holds its own.
        paths: more paths on the contours, with a legend: `lh.project`'s result ({label:
            ProjectedTrajectory}) or {label: (x, y)}.

    Returns:
        the plotly Figure (`fig.show()`, `fig.write_html(...)`).
    """
    check_choice("kind", kind, KINDS)
    if isinstance(source, (str, Path)):
        s, attrs = read_surface(source), read_attrs(source)
    elif isinstance(source, xr.Dataset):
        s, attrs = _from_dataset(source), dict(source.attrs)
    else:
        raise UserTypeError(
            f"plot(source=...) got a {type(source).__name__}; pass a surface Dataset "
            "(lh.surface, lh.load) or the path of a surface file"
        )
    if path is not None:
        s.trajectory = {n: np.asarray(v) for n, v in path.datasets().items()}
        s.explained_variance_ratio = np.asarray(path.explained_variance_ratio)
    if metric:
        missing = [m for m in metric if m not in s.metrics]
        if missing:
            raise UserError(f"metric={missing} is not in the surface; it has {sorted(s.metrics)}")
        s.metrics = {m: s.metrics[m] for m in metric}
    drawn = {str(k): _xy(v) for k, v in paths.items()} if paths else None
    fig = plot_html.surface_figure(s, attrs, drawn)
    if out is not None:
        if isinstance(source, (str, Path)):
            check_no_alias({"out": Path(out)}, {"source": Path(source)})
        plot_html.write(fig, out)
    return fig


def _xy(path: Any) -> tuple[np.ndarray, np.ndarray]:
    coords = path.coords if hasattr(path, "coords") else np.column_stack(path)
    coords = np.asarray(coords, np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise UserError(f"paths=: a path of shape {coords.shape}; give (x, y) or lh.project's")
    return coords[:, 0], coords[:, 1]


def _from_dataset(ds: xr.Dataset) -> Surface:
    if "x" not in ds.coords:
        raise UserError("plot(ds): ds has no x coordinate; pass a Dataset from lh.surface")
    dims = ("y", "x") if "y" in ds.coords else ("x",)
    metrics = {
        str(n): np.asarray(ds[n].transpose(*dims), np.float64)
        for n in ds.data_vars
        if str(n).endswith(("_loss", "_acc", "_ppl"))
    }
    if not metrics:
        raise UserError("plot(ds): ds holds no *_loss or *_acc variable; pass lh.surface's")
    done = np.isfinite(np.stack(list(metrics.values()))).any(axis=0)
    y = np.asarray(ds["y"], np.float64) if "y" in ds.coords else None
    name = Path(str(ds.attrs.get("source_file", "surface")))
    return Surface(name, np.asarray(ds["x"], np.float64), y, metrics, int(done.sum()), False)
