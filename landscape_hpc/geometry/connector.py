"""m-connectors between m optima (Fort & Jastrzebski 2019, sec. 4.3).

Points of the convex hull of m optima, on the regular barycentric grid of the (m−1)-simplex
(λ = n / resolution), are each optimised inside the space orthogonal to the optima's affine hull
through them (updates projected onto the complement of span{θ_j − θ_1}: the same core as the
tunnel, which is the m = 2 case). Reported: loss and accuracy at every grid point on the linear
simplex (Σ λ_j θ_j) and on the connector (the optimised points), and their maxima.

    python -m landscape_hpc.geometry connector optima=[a.pt,b.pt,c.pt] model=mlp resolution=4
    mpirun -n 4 python -m landscape_hpc.geometry connector optima=[a.pt,b.pt,c.pt,d.pt] \\
        model=resnet20 dataset=cifar10 dataset.root=~/data hyperplane.steps=2000 device=cuda

One pool task per non-vertex grid point, then the evaluation in chunks of grid points. Writes
connector.csv (one row per grid point: λ, loss and accuracy linear and connector per split) and
connector.png (m = 3: both triangles coloured by loss; any m: loss per grid point) to out_dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from landscape_hpc import parallel
from landscape_hpc.config import ConnectorConfig
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.hull import (
    run_hull,
    summarize_metrics,
    write_metrics_csv,
)
from landscape_hpc.geometry.hyperplane import simplex_grid


@dataclass
class ConnectorResult:
    """grid (Q, m) barycentric coordinates (vertices first); per split and kind ("linear",
    "connector"): (loss (Q,), acc (Q,))."""

    optima: list[str]
    grid: np.ndarray
    metrics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    opt_losses: np.ndarray


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


def run_connector(cfg: ConnectorConfig, comm: Any = None) -> Optional[ConnectorResult]:
    """The whole experiment; the result on rank 0 (None on the others)."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    m = len(cfg.optima)
    grid = simplex_grid(m, cfg.resolution)  # (Q, m), the m vertices first
    inner = grid[m:]  # (K, m): the points that are optimised
    # coordinates in the hull subspace: (λ_2..λ_m, then one-hot of the point's deviation)
    k = len(inner)
    deviation = np.zeros((len(grid), k))
    deviation[np.arange(m, len(grid)), np.arange(k)] = 1.0
    linear = np.concatenate([grid[:, 1:], np.zeros_like(deviation)], axis=1)
    connector = np.concatenate([grid[:, 1:], deviation], axis=1)
    hull = run_hull(cfg, comm, inner, {"linear": linear, "connector": connector})
    if hull is None:
        return None
    return ConnectorResult(hull.optima, grid, hull.metrics, hull.opt_losses)


def write_connector(result: ConnectorResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    m = result.grid.shape[1]
    header = [f"lambda_{j + 1}" for j in range(m)]
    return write_metrics_csv(out_dir / "connector.csv", header, list(result.grid.T), result.metrics)


def summarize_connector(result: ConnectorResult) -> str:
    m = result.grid.shape[1]
    k = len(result.grid) - m
    lines = [f"{m}-connector of {', '.join(result.optima)}: {k} grid points optimised"]
    lines += summarize_metrics(
        result.metrics, lambda i: f"λ={np.round(result.grid[i], 3).tolist()}"
    )
    return "\n".join(lines)


def _command(cfg: ConnectorConfig, comm: Any) -> Optional[Report]:
    result = run_connector(cfg, comm)
    if result is None:
        return None
    out = Path(cfg.out_dir)
    files = [write_connector(result, out)]
    if cfg.plot:
        from landscape_hpc.geometry import figures

        files.append(figures.plot_connector(result.grid, result.metrics, out / "connector.png"))
    return Report(summarize_connector(result), files)


main = experiment_main("connector", _command)
