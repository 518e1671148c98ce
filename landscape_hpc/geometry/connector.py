"""m-connectors between m optima (Fort & Jastrzebski 2019, sec. 4.3).

Points of the convex hull of m optima, on the regular barycentric grid of the (m−1)-simplex
(λ = n / resolution), are each optimised inside the space orthogonal to the optima's affine hull
through them (updates projected onto the complement of span{θ_j − θ_1}: the same core as the
tunnel, which is the m = 2 case). Reported: loss and accuracy at every grid point on the linear
simplex (Σ λ_j θ_j) and on the connector (the optimised points), and their maxima.

    python -m landscape_hpc.geometry connector optima=[a.pt,b.pt,c.pt] model=mlp resolution=4
    mpirun -n 4 python -m landscape_hpc.geometry connector optima=[a.pt,b.pt,c.pt,d.pt] \\
        model=resnet20 dataset=cifar10 dataset.root=~/data hyperplane.steps=2000 device=cuda

The paper's claim is about the whole connector, not only its optimised points: with `dense`
(default 4) the polytope the optimised points span (each small simplex of the grid between
them, interpolated piecewise linearly: hyperplane.simplex_interpolation) and the linear simplex
are also evaluated on a grid `dense` times finer, and the summary gives the largest loss and the
distribution (median, 90th percentile) over it.

One pool task per non-vertex grid point, then the evaluation in chunks of points. Writes
connector.csv (one row per grid point: λ, loss and accuracy linear and connector per split),
connector_dense.csv (the same per point of the finer grid) and connector.png (m = 3: both
triangles coloured by loss, over the finer grid; any m: loss per grid point) to out_dir. With
short_dirs.n_directions > 0 also the short directions (geometry/short_dirs.py) at the optima and
at every non-vertex grid point of the linear simplex and of the connector: short_dirs.csv and
short_dirs.png.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from landscape_hpc import parallel
from landscape_hpc.config import ConnectorConfig
from landscape_hpc.errors import MAX_EVALUATIONS, UserError
from landscape_hpc.geometry import short_dirs
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.hull import (
    Optima,
    load_hull_optima,
    run_hull,
    summarize_metrics,
    write_metrics_csv,
)
from landscape_hpc.geometry.hyperplane import simplex_grid, simplex_interpolation

#: the most points of the connector's simplex grid (optimised ones and the optima)
MAX_GRID_POINTS = 2000
#: the most memory of the dense grid's interpolation weights (dense points × grid points)
MAX_DENSE_BYTES = 1 << 30


@dataclass
class ConnectorResult:
    """grid (Q, m) barycentric coordinates (vertices first); per split and kind ("linear",
    "connector"): (loss (Q,), acc (Q,))."""

    optima: list[str]
    grid: np.ndarray
    metrics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    opt_losses: np.ndarray
    # the finer grid (N, m) and its metrics, the same kinds; empty with dense=0
    dense_grid: np.ndarray
    dense_metrics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    # at the optima ("optimum") and the other grid points ("linear", "connector"), or None
    short_dirs: Optional[short_dirs.ShortDirsResult] = None


def check_config(cfg: ConnectorConfig) -> None:
    """Checks the connector's own keys (run_hull checks the shared ones)."""
    m = len(cfg.optima)
    if m < 2:
        raise UserError(
            f"optima lists {m} checkpoint(s); an m-connector needs m ≥ 2 optima, e.g. "
            "optima=[a.pt,b.pt,c.pt]"
        )
    if cfg.resolution < 2:
        raise UserError(
            f"resolution={cfg.resolution} must be at least 2 (1 leaves only the optima themselves)"
        )
    if cfg.dense < 0:
        raise UserError(f"dense={cfg.dense} must be 0 (the grid only) or a positive integer")
    # counted, never built: the grid holds C(resolution + m - 1, m - 1) points
    points = math.comb(cfg.resolution + m - 1, m - 1)
    if points > MAX_GRID_POINTS:
        raise UserError(
            f"resolution={cfg.resolution} with {m} optima makes {points} grid points, over the "
            f"limit of {MAX_GRID_POINTS}: each inner point is optimised, and their deviations "
            "are a points × points matrix; give a smaller resolution"
        )
    fine = math.comb(cfg.resolution * cfg.dense + m - 1, m - 1) if cfg.dense else 0
    if fine * points * 8 > MAX_DENSE_BYTES or fine > MAX_EVALUATIONS:
        raise UserError(
            f"dense={cfg.dense} at resolution={cfg.resolution} makes {fine} dense points, whose "
            f"interpolation weights alone take {fine * points * 8 / 2**30:.3g} GiB (limit "
            f"{MAX_DENSE_BYTES / 2**30:g} GiB; each point is also an evaluation of the loss); "
            "give a smaller dense"
        )
    short_dirs.check_config(cfg.short_dirs, list(cfg.splits))


def run_connector(cfg: ConnectorConfig, comm: Any = None) -> Optional[ConnectorResult]:
    """The command: cfg's m checkpoints and data set, then `connect`; the result on rank 0
    (None on the others)."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    return connect(load_hull_optima(cfg, comm), cfg, comm)


def connect(optima: Optima, cfg: ConnectorConfig, comm: Any = None) -> Optional[ConnectorResult]:
    """The m-connector of the optima (loaded on every rank) with cfg's settings: the core under
    the command and lh.connector. The result on rank 0 (None on the others)."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    m = len(cfg.optima)
    grid = simplex_grid(m, cfg.resolution)  # (Q, m), the m vertices first
    inner = grid[m:]  # (K, m): the points that are optimised
    # coordinates in the hull subspace: (λ_2..λ_m, then one-hot of the point's deviation)
    k = len(inner)
    deviation = np.zeros((len(grid), k))
    deviation[np.arange(m, len(grid)), np.arange(k)] = 1.0
    coords = _coords(grid, deviation)
    fine = simplex_grid(m, cfg.resolution * cfg.dense) if cfg.dense else grid[:0]
    if cfg.dense:
        # a point of a small simplex deviates by the interpolation of its vertices' deviations
        weights = simplex_interpolation(fine, grid, cfg.resolution)
        coords |= {f"{k}_dense": v for k, v in _coords(fine, weights[:, m:]).items()}
    probe = None
    if short_dirs.enabled(cfg):  # at the optima, then the other grid points: linear, optimised
        probes = {"optimum": coords["linear"][:m], "linear": coords["linear"][m:]}
        probes["connector"] = coords["connector"][m:]
        probe = functools.partial(short_dirs.probe, cfg.short_dirs, comm, probes)
    hull = run_hull(optima, cfg, comm, inner, coords, probe)
    if hull is None:
        return None
    coarse = {
        s: {k: kinds[k] for k in ("linear", "connector")} for s, kinds in hull.metrics.items()
    }
    dense = {
        s: {k.removesuffix("_dense"): v for k, v in kinds.items() if k.endswith("_dense")}
        for s, kinds in hull.metrics.items()
    }
    return ConnectorResult(hull.optima, grid, coarse, hull.opt_losses, fine, dense, hull.probed)


def _coords(points: np.ndarray, deviation: np.ndarray) -> dict[str, np.ndarray]:
    """Hull coordinates of barycentric points (λ_2..λ_m, then the weights of the optimised
    points' deviations): on the linear simplex (no deviation) and on the connector."""
    return {
        "linear": np.concatenate([points[:, 1:], np.zeros_like(deviation)], axis=1),
        "connector": np.concatenate([points[:, 1:], deviation], axis=1),
    }


def write_connector(result: ConnectorResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    m = result.grid.shape[1]
    header = [f"lambda_{j + 1}" for j in range(m)]
    files = [
        write_metrics_csv(out_dir / "connector.csv", header, list(result.grid.T), result.metrics)
    ]
    if len(result.dense_grid):
        path = out_dir / "connector_dense.csv"
        columns = list(result.dense_grid.T)
        files.append(write_metrics_csv(path, header, columns, result.dense_metrics))
    if result.short_dirs is not None:
        positions = {k: result.grid[v] for k, v in _short_dirs_indices(result).items()}
        path = out_dir / "short_dirs.csv"
        files.append(short_dirs.write_csv(result.short_dirs, path, positions, header))
    return files


def _short_dirs_indices(result: ConnectorResult) -> dict[str, np.ndarray]:
    """The grid indices of the points whose short directions were measured, per kind."""
    m = result.grid.shape[1]
    inner = np.arange(m, len(result.grid))
    return {"optimum": np.arange(m), "linear": inner, "connector": inner}


def summarize_connector(result: ConnectorResult) -> str:
    m = result.grid.shape[1]
    k = len(result.grid) - m
    lines = [f"{m}-connector of {', '.join(result.optima)}: {k} grid points optimised"]
    lines += summarize_metrics(
        result.metrics, lambda i: f"λ={np.round(result.grid[i], 3).tolist()}"
    )
    if len(result.dense_grid):
        n = len(result.dense_grid)
        lines.append(f"  over {n} points of the finer grid (the whole polytope):")
        lines += summarize_metrics(
            result.dense_metrics, lambda i: f"λ={np.round(result.dense_grid[i], 3).tolist()}"
        )
        for s, kinds in result.dense_metrics.items():
            spread = "; ".join(
                f"{kind} loss median {np.nanmedian(loss):.4g}, 90th percentile "
                f"{np.nanpercentile(loss, 90):.4g}"
                for kind, (loss, _) in kinds.items()
            )
            lines.append(f"  {s}: {spread}")
    if result.short_dirs is not None:
        lines.append(short_dirs.summarize(result.short_dirs))
    return "\n".join(lines)


def _command(cfg: ConnectorConfig, comm: Any) -> Optional[Report]:
    result = run_connector(cfg, comm)
    if result is None:
        return None
    out = Path(cfg.out_dir)
    files = write_connector(result, out)
    if cfg.plot:
        from landscape_hpc.geometry import figures

        dense = (result.dense_grid, result.dense_metrics) if len(result.dense_grid) else None
        files.append(
            figures.plot_connector(result.grid, result.metrics, out / "connector.png", dense)
        )
        if result.short_dirs is not None:
            x = _short_dirs_indices(result)
            label = "grid point (the optima first)"
            files.append(short_dirs.plot(result.short_dirs, x, label, out))
    return Report(summarize_connector(result), files)


main = experiment_main("connector", _command)
