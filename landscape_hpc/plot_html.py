"""The interactive figure of a surface (issue 31): one self-contained HTML file, drawn by plotly.

    python -m landscape_hpc.plot s.h5 --kind html          # s_surface.html next to the file
    fig = lh.plot(ds, kind="html")                         # a plotly Figure: fig.show() inline
    lh.plot("s.h5", kind="html", out="figs/")              # the same file as the command's

A 2D surface draws a 3D surface (turn it with the mouse) beside a contour view of one metric at
a time (a menu picks train/test loss, accuracy, ...), a linear/log10 toggle (plotly's own
buttons), hover values (x, y and the split's loss and accuracy at that point), missing points as
gaps (null in the figure's data), the stored PCA path on the contours, and axis titles saying
what the axes are (direction kind, normalisation, PCA variance explained). A 1D surface draws
its curves: loss on the left axis, accuracy on the right, the same log toggle. The HTML embeds
plotly's JavaScript (`include_plotlyjs=True`): it opens offline and fetches nothing.

plotly is the `[html]` extra (`pip install "landscape_hpc[html]"`); without it this figure is
refused with that line. The figure is built here from arrays (`figure`, `figure_1d`) or a
surface file's contents (`surface_figure`); writing it is `write`, at the edge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from landscape_hpc.errors import UserError
from landscape_hpc.files.surface_read import Surface

INSTALL_HINT = 'pip install "landscape_hpc[html]"'
_WHAT = {"loss": "loss", "acc": "accuracy (%)", "ppl": "perplexity"}
#: the metrics the log toggle applies to (positive by nature); accuracy stays linear
_LOG_METRICS = ("loss", "ppl")


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise UserError(
            f"the html figure needs plotly, which is not installed: {INSTALL_HINT}"
        ) from None
    return go


def _values(a: Any) -> list:
    """An array as nested lists of floats with None (JSON null, a gap) where it is not finite."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return float(a) if np.isfinite(a) else None
    return [_values(row) for row in a] if a.ndim > 1 else [_one(v) for v in a]


def _one(v: float) -> Optional[float]:
    return float(v) if np.isfinite(v) else None


def _log10(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, np.log10(np.where(a > 0, a, 1.0)), np.nan)


def _order(metrics: Mapping[str, np.ndarray]) -> list[str]:
    """Loss first (train before test), then accuracy, then perplexity."""
    rank = {"loss": 0, "acc": 1, "ppl": 2}
    return sorted(
        metrics, key=lambda n: (rank.get(n.rpartition("_")[2], 3), not n.startswith("train_"), n)
    )


def _hover(metrics: Mapping[str, np.ndarray], name: str, ndim: int):
    """(customdata, hovertemplate): x, y and the loss, accuracy (perplexity) of name's split."""
    split = name.rpartition("_")[0]
    shown = [f"{split}_{m}" for m in _WHAT if f"{split}_{m}" in metrics]
    custom = np.stack([np.asarray(metrics[n], np.float64) for n in shown], axis=-1)
    lines = ["x = %{x:.4g}"] + (["y = %{y:.4g}"] if ndim == 2 else [])
    lines += [f"{n} = %{{customdata[{i}]:.5g}}" for i, n in enumerate(shown)]
    return _values(custom), "<br>".join(lines) + f"<extra>{name}</extra>"


def figure(
    x: Sequence[float],
    y: Sequence[float],
    metrics: Mapping[str, np.ndarray],
    *,
    axis_titles: Sequence[str] = ("x", "y"),
    trajectory: Optional[Mapping[str, np.ndarray]] = None,
    paths: Optional[Mapping[str, tuple[np.ndarray, np.ndarray]]] = None,
    title: str = "",
) -> Any:
    """A plotly Figure of a 2D surface: {metric: (ny, nx) array, NaN = missing} over the axes x
    (nx,) and y (ny,). trajectory: {x, y, epoch, lr} (n,) drawn on the contours; paths:
    {label: (x, y)} more paths on the same plane, with a legend."""
    go = _plotly()
    from plotly.subplots import make_subplots

    names = _order(metrics)
    if not names:
        raise UserError("the html figure has no metric to draw")
    fig = make_subplots(
        rows=1,
        cols=2,
        specs=[[{"type": "scene"}, {"type": "xy"}]],
        column_widths=[0.55, 0.45],
        horizontal_spacing=0.08,
        subplot_titles=("3D surface (drag to turn)", "contours"),
    )
    xs, ys = _values(x), _values(y)
    linear, logged = [], []
    for k, name in enumerate(names):
        z = np.asarray(metrics[name], np.float64)
        custom, template = _hover(metrics, name, 2)
        common = dict(
            x=xs, y=ys, z=_values(z), customdata=custom, hovertemplate=template, name=name
        )
        fig.add_trace(
            go.Surface(**common, colorscale="Viridis", showscale=False, visible=k == 0),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Contour(
                **common,
                colorscale="Viridis",
                connectgaps=False,
                contours_coloring="heatmap",
                colorbar=dict(title=dict(text=name), x=1.0),
                visible=k == 0,
            ),
            row=1,
            col=2,
        )
        log = _log10(z) if name.rpartition("_")[2] in _LOG_METRICS else z
        linear += [_values(z)] * 2
        logged += [_values(log)] * 2
    surfaces = 2 * len(names)
    extra = _paths(go, fig, trajectory, paths)
    fig.update_layout(
        title=dict(text=title, x=0.5, xanchor="center", y=0.98),
        scene_camera=dict(eye=dict(x=1.7, y=-1.7, z=1.0)),  # matplotlib's azim -60, elev 30
        scene=dict(
            # the 3D view's room is short: "x: PC1 (64.0%)"
            xaxis_title=axis_titles[0].replace(" of the variance", ""),
            yaxis_title=axis_titles[1].replace(" of the variance", ""),
            zaxis_title=names[0],
            aspectmode="cube",  # a long x range does not flatten the surface
        ),
        xaxis=dict(title=dict(text=axis_titles[0])),
        yaxis=dict(title=dict(text=axis_titles[1])),
        legend=dict(x=0.56, y=-0.12, orientation="h"),
        margin=dict(l=10, r=10, t=110, b=60),
        updatemenus=[
            dict(
                type="dropdown",
                x=0.0,
                y=1.2,
                xanchor="left",
                buttons=[
                    dict(
                        label=name,
                        method="update",
                        args=[
                            {"visible": [i // 2 == k for i in range(surfaces)] + [True] * extra},
                            {"scene.zaxis.title.text": name},
                        ],
                    )
                    for k, name in enumerate(names)
                ],
            ),
            dict(
                type="buttons",
                direction="right",
                x=0.14,
                y=1.2,
                xanchor="left",
                buttons=[
                    dict(
                        label="linear",
                        method="restyle",
                        args=[{"z": linear}, list(range(surfaces))],
                    ),
                    dict(
                        label="log10", method="restyle", args=[{"z": logged}, list(range(surfaces))]
                    ),
                ],
            ),
        ],
    )
    return fig


def _paths(go: Any, fig: Any, trajectory, paths) -> int:
    """Draws the stored trajectory (with red dots where the learning rate dropped) and any
    further paths on the contour view; returns the number of traces added."""
    added = 0
    if trajectory is not None and "y" in trajectory:
        tx, ty = np.asarray(trajectory["x"]), np.asarray(trajectory["y"])
        epoch = np.asarray(trajectory.get("epoch", np.arange(len(tx))))
        lr = np.asarray(trajectory.get("lr", np.full(len(tx), np.nan)), np.float64)
        fig.add_trace(
            go.Scatter(
                x=_values(tx),
                y=_values(ty),
                mode="lines+markers",
                name="trajectory",
                line=dict(color="black", width=2),
                marker=dict(size=6),
                customdata=[[int(e), _one(v)] for e, v in zip(epoch, lr)],
                hovertemplate="epoch %{customdata[0]}<br>lr %{customdata[1]:.3g}"
                "<br>(%{x:.4g}, %{y:.4g})<extra>trajectory</extra>",
            ),
            row=1,
            col=2,
        )
        drops = np.flatnonzero(lr[1:] < lr[:-1]) + 1
        fig.add_trace(
            go.Scatter(
                x=_values(tx[drops]),
                y=_values(ty[drops]),
                mode="markers",
                name="lr drop",
                marker=dict(color="red", size=9),
            ),
            row=1,
            col=2,
        )
        added += 2
    for label, (px, py) in (paths or {}).items():
        fig.add_trace(
            go.Scatter(x=_values(px), y=_values(py), mode="lines+markers", name=label),
            row=1,
            col=2,
        )
        added += 1
    return added


def figure_1d(
    x: Sequence[float], metrics: Mapping[str, np.ndarray], *, axis_title: str = "x", title: str = ""
) -> Any:
    """A plotly Figure of a 1D surface: loss (and perplexity) on the left axis, accuracy on the
    right, gaps where a point is missing, a linear/log toggle of the loss axis."""
    go = _plotly()
    from plotly.subplots import make_subplots

    names = _order(metrics)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    xs = _values(x)
    for name in names:
        custom, template = _hover(metrics, name, 1)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=_values(metrics[name]),
                customdata=custom,
                hovertemplate=template,
                name=name,
                mode="lines+markers",
                connectgaps=False,
                line=dict(dash="dash" if name.endswith("_acc") else "solid"),
            ),
            secondary_y=name.endswith("_acc"),
        )
    fig.update_layout(
        title=dict(text=title),
        xaxis_title=axis_title,
        updatemenus=[
            dict(
                type="buttons",
                direction="right",
                x=0.0,
                y=1.15,
                xanchor="left",
                buttons=[
                    dict(label="linear", method="relayout", args=[{"yaxis.type": "linear"}]),
                    dict(label="log", method="relayout", args=[{"yaxis.type": "log"}]),
                ],
            )
        ],
    )
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="accuracy (%)", secondary_y=True)
    return fig


# --- what the axes are ---------------------------------------------------------------------


def axis_titles(attrs: Mapping[str, Any], ratio: Optional[np.ndarray], ndim: int) -> list[str]:
    """Titles of the surface's axes from its attributes: PCA directions with the variance each
    explains, Hessian eigenvectors, model differences, or random directions and their
    normalisation (the command's `config` attribute or the library's directions_* attributes)."""
    names = ("x", "y")[:ndim]
    if ratio is not None and len(ratio) >= ndim:
        return [
            f"{n}: PC{i + 1} ({100 * ratio[i]:.1f}% of the variance)" for i, n in enumerate(names)
        ]
    kind, norm = _directions(attrs)
    if kind == "interpolation":
        return ["t (0 = model a, 1 = model b)"][:ndim]
    if kind == "hessian":
        return [f"{n}: Hessian eigenvector v{i + 1} (unit)" for i, n in enumerate(names)]
    if kind == "models":
        return [f"{n}: model{i + 2} − model" for i, n in enumerate(names)]
    if kind in ("random", "given"):
        what = "random direction" if kind == "random" else "given direction"
        suffix = f", {norm}-normalised" if norm and norm != "none" else ""
        return [f"{n}: {what}{suffix}" for n in names]
    return list(names)


def _directions(attrs: Mapping[str, Any]) -> tuple[Optional[str], Optional[str]]:
    """(direction kind, normalisation) as the file's attributes say, or (None, None)."""
    if "directions" in attrs and attrs["directions"] == "interpolation":
        return "interpolation", None
    if "directions_directions" in attrs:  # the library's
        return str(attrs["directions_directions"]), str(attrs.get("directions_norm", "")) or None
    config = attrs.get("config")
    if isinstance(config, str):
        try:  # the command's YAML, or the library's JSON: plain data, no tags
            import yaml

            parsed = yaml.safe_load(config)
        except Exception:  # a config we cannot read says nothing about the axes
            return None, None
        d = parsed.get("directions") if isinstance(parsed, dict) else None
        if isinstance(d, dict):
            return str(d.get("kind")), str(d.get("norm")) if d.get("kind") == "random" else None
    return None, None


# --- a surface file's figure and the HTML file ---------------------------------------------


def surface_figure(
    s: Surface,
    attrs: Mapping[str, Any],
    paths: Optional[Mapping[str, tuple[np.ndarray, np.ndarray]]] = None,
) -> Any:
    """The figure of a surface read by files/surface_read.py: 2D or 1D as the file is."""
    metrics = {n: v for n, v in s.metrics.items() if np.isfinite(v).any()}
    if s.n_done == 0 or not metrics:
        raise UserError(f"{s.path} has nothing computed yet: run the surface command first")
    title = f"{s.path.stem}: {s.n_done} of {s.size} points"
    if s.range_level:
        title += f" (range: {s.range_level})"
    if s.y is None:
        (axis,) = axis_titles(attrs, s.explained_variance_ratio, 1)
        return figure_1d(s.x, metrics, axis_title=axis, title=title)
    if len(s.x) < 2 or len(s.y) < 2:
        raise UserError(
            f"{s.path} is {len(s.y)}x{len(s.x)} points: the html surface needs at least 2 along "
            "each axis"
        )
    titles = axis_titles(attrs, s.explained_variance_ratio, 2)
    return figure(
        s.x, s.y, metrics, axis_titles=titles, trajectory=s.trajectory, paths=paths, title=title
    )


def write(fig: Any, path: str | Path) -> Path:
    """The figure as one self-contained HTML file (plotly's JavaScript inside, nothing fetched)."""
    path = Path(path)
    fig.write_html(path, include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    return path


def figure_json(html: str) -> dict:
    """The figure ({"data": [...], "layout": {...}}) stored in an HTML file `write` made."""
    start = html.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    decoder = json.JSONDecoder()
    rest = html[start:].lstrip()
    _, end = decoder.raw_decode(rest)  # the div's id
    rest = rest[end:].lstrip().removeprefix(",").lstrip()
    data, end = decoder.raw_decode(rest)
    rest = rest[end:].lstrip().removeprefix(",").lstrip()
    layout, _ = decoder.raw_decode(rest)
    return {"data": data, "layout": layout}
