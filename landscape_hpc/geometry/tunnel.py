"""A low-loss tunnel between two optima (Fort & Jastrzebski 2019, sec. 4.2).

The linear path θ_a → θ_b is cut into `n_segments` segments; each inner point θ_i^linear is
optimised inside the hyperplane through it normal to the path (θ_b − θ_a), and consecutive
optimised points are joined by straight lines: the tunnel. Reported: loss and accuracy along the
linear path and along the tunnel (densely, between the points), and the alignment (cosine
similarity matrix) of the deviations δ_i = θ_i^tunnel − θ_i^linear.

    python -m landscape_hpc.geometry tunnel optima=[runs/a/model.pt,runs/b/model.pt] model=mlp
    python -m landscape_hpc.geometry tunnel optima=[a.pt,b.pt] model=resnet20 dataset=cifar10 \\
        dataset.root=~/data n_segments=10 hyperplane.steps=2000 device=cuda
    mpirun -n 3 python -m landscape_hpc.geometry tunnel optima=[a.pt,b.pt] model=mlp

Each inner point is one task of the MPI pool (its optimisation depends only on seed and its
index, so results do not depend on the number of ranks); the dense evaluation follows in chunks
of positions through the evaluation engine (both in geometry/hull.py, shared with the
m-connector). Writes tunnel.csv, tunnel_alignment.csv,
tunnel_points.pt (the deviations, loadable with weights_only=True) and tunnel.png to out_dir.
With short_dirs.n_directions > 0 also the short directions (geometry/short_dirs.py) at the two
optima, the inner points of the linear path and the tunnel's optimised points: short_dirs.csv
and short_dirs.png.

The optimised vector θ is the model's parameters; buffers (BN running statistics) follow the
linear path, as in Li et al.'s interpolations (engine.bn=recompute recomputes them instead).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from landscape_hpc import parallel
from landscape_hpc.config import TunnelConfig
from landscape_hpc.connectivity import loss_barrier
from landscape_hpc.errors import MAX_PATH_POINTS, UserError, check_at_most
from landscape_hpc.geometry import short_dirs
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.block_score import block_score
from landscape_hpc.geometry.hull import (
    Optima,
    load_hull_optima,
    run_hull,
    summarize_metrics,
    write_metrics_csv,
)
from landscape_hpc.geometry.hyperplane import cosine_matrix, hat_weights, segment_positions

#: the most segments of a tunnel: each inner point is a full optimisation in its hyperplane
MAX_SEGMENTS = 1000
_EVALUATED = "each position is a full evaluation of the loss over the data, on both paths"
_OPTIMISED = "each inner point is optimised in its own hyperplane, one after the other"


@dataclass
class TunnelResult:
    """Along t in [0, 1]: {split: {"linear"|"tunnel": (loss (Q,), acc (Q,))}}; `points` the
    positions t_i of the optimised points (ends included), `alignment` the cosine matrix of
    their deviations, `deviations` (K, P)."""

    optima: list[str]
    t: np.ndarray
    points: np.ndarray
    metrics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    alignment: np.ndarray
    deviations: np.ndarray
    opt_losses: np.ndarray
    keys: list[str]
    short_dirs: Optional[short_dirs.ShortDirsResult] = None


def tunnel_coords(t: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subspace coordinates (Q, 1 + K) of the linear path and of the tunnel at positions t:
    θ(t) = θ_a + t(θ_b − θ_a) [+ Σ_i w_i(t) δ_i, w the piecewise-linear hat of point i]."""
    hats = hat_weights(t, points)[:, 1:-1]  # (Q, K): the ends have no deviation
    linear = np.concatenate([t[:, None], np.zeros_like(hats)], axis=1)
    return linear, np.concatenate([t[:, None], hats], axis=1)


def check_config(cfg: TunnelConfig) -> None:
    """Checks the tunnel's own keys (run_hull checks the shared ones)."""
    if len(cfg.optima) != 2:
        raise UserError(
            f"optima lists {len(cfg.optima)} checkpoint(s); a tunnel joins exactly two: "
            "optima=[a.pt,b.pt] (for m ≥ 3 optima use the connector experiment)"
        )
    if cfg.n_segments < 2:
        raise UserError(f"n_segments={cfg.n_segments} must be at least 2 (one inner point)")
    if cfg.n_dense < 2:
        raise UserError(f"n_dense={cfg.n_dense} must be at least 2")
    check_at_most("n_dense", cfg.n_dense, MAX_PATH_POINTS, _EVALUATED)
    check_at_most("n_segments", cfg.n_segments, MAX_SEGMENTS, _OPTIMISED)
    short_dirs.check_config(cfg.short_dirs, list(cfg.splits))


def run_tunnel(cfg: TunnelConfig, comm: Any = None) -> Optional[TunnelResult]:
    """The command: cfg's two checkpoints and data set, then `tunnel_between`; the result on
    rank 0 (None on the others)."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    return tunnel_between(load_hull_optima(cfg, comm), cfg, comm)


def tunnel_between(optima: Optima, cfg: TunnelConfig, comm: Any = None) -> Optional[TunnelResult]:
    """The tunnel between two optima (loaded on every rank) with cfg's settings: the core under
    the command and lh.tunnel. The result on rank 0 (None on the others)."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    points = segment_positions(cfg.n_segments)
    inner = points[1:-1]
    weights = np.stack([1.0 - inner, inner], axis=1)  # (K, 2)
    t = np.union1d(np.linspace(0.0, 1.0, cfg.n_dense), points)
    linear, tunnel = tunnel_coords(t, points)
    probe = None
    if short_dirs.enabled(cfg):  # at the optima, the linear path's inner points, the tunnel's
        at_linear, at_tunnel = tunnel_coords(inner, points)
        at_optima = tunnel_coords(points[[0, -1]], points)[0]
        probes = {"optimum": at_optima, "linear": at_linear, "tunnel": at_tunnel}
        probe = functools.partial(short_dirs.probe, cfg.short_dirs, comm, probes)
    hull = run_hull(optima, cfg, comm, weights, {"linear": linear, "tunnel": tunnel}, probe)
    if hull is None:
        return None
    alignment = cosine_matrix(torch.from_numpy(hull.deviations))
    return TunnelResult(
        hull.optima, t, points, hull.metrics, alignment, hull.deviations, hull.opt_losses,
        hull.keys, hull.probed,
    )  # fmt: skip


def write_tunnel(result: TunnelResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    is_point = np.isin(result.t, result.points).astype(float)
    csv = write_metrics_csv(
        out_dir / "tunnel.csv", ["t", "is_point"], [result.t, is_point], result.metrics
    )
    inner = result.points[1:-1]
    align = out_dir / "tunnel_alignment.csv"
    table = np.concatenate([inner[:, None], result.alignment], axis=1)
    names = ",".join(f"t={x:.4g}" for x in inner)
    np.savetxt(align, table, delimiter=",", header=f"t,{names}", comments="")
    pt = out_dir / "tunnel_points.pt"
    torch.save(
        {
            "optima": result.optima,
            "t": torch.from_numpy(result.points),
            "deviations": torch.from_numpy(result.deviations),  # (K, P), rows = inner points
            "keys": result.keys,
        },
        pt,
    )
    files = [csv, align, pt]
    if result.short_dirs is not None:
        positions = {k: v[:, None] for k, v in _short_dirs_positions(result).items()}
        path = out_dir / "short_dirs.csv"
        files.append(short_dirs.write_csv(result.short_dirs, path, positions, ["t"]))
    return files


def _short_dirs_positions(result: TunnelResult) -> dict[str, np.ndarray]:
    """t of the points whose short directions were measured, per kind."""
    inner = result.points[1:-1]
    return {"optimum": result.points[[0, -1]], "linear": inner, "tunnel": inner}


def summarize_tunnel(result: TunnelResult) -> str:
    k = len(result.points) - 2
    lines = [f"tunnel between {result.optima[0]} and {result.optima[1]}: {k} points optimised"]
    lines += summarize_metrics(result.metrics, lambda i: f"t={result.t[i]:.3f}")
    for s, kinds in result.metrics.items():  # Frankle et al. 2020: the height above the chord
        heights = {kind: loss_barrier(result.t, loss) for kind, (loss, _) in kinds.items()}
        parts = [f"{kind} {h:.4g} at t={where:.3g}" for kind, (h, where) in heights.items()]
        lines.append(f"  loss barrier ({s}): " + "; ".join(parts))
    if k > 1:
        off = result.alignment[~np.eye(k, dtype=bool)]
        neighbours = np.diagonal(result.alignment, 1)
        lines.append(
            f"  deviation alignment: mean cosine {np.nanmean(off):.3f} over all pairs, "
            f"{np.nanmean(neighbours):.3f} between neighbours"
        )
    if k >= 4 and np.isfinite(result.alignment).all():  # the paper's two blocks, or a band
        b = block_score(result.alignment)
        lines.append(
            f"  alignment structure: two blocks (split before point {b.split}) adjusted R² "
            f"{b.adj_blocks:.3f}, banded {b.adj_banded:.3f}: {b.better} fits better "
            f"(difference {b.difference:+.3f})"
        )
    first, last = result.opt_losses.mean(axis=0)
    lines.append(
        f"  point optimisation: minibatch loss {first:.4g} -> {last:.4g} (mean over points)"
    )
    norms = np.linalg.norm(result.deviations, axis=1)
    lines.append(f"  deviation norms |δ_i|: {', '.join(f'{x:.3g}' for x in norms)}")
    if result.short_dirs is not None:
        lines.append(short_dirs.summarize(result.short_dirs))
    return "\n".join(lines)


def _command(cfg: TunnelConfig, comm: Any) -> Optional[Report]:
    result = run_tunnel(cfg, comm)
    if result is None:
        return None
    out = Path(cfg.out_dir)
    files = write_tunnel(result, out)
    if cfg.plot:
        from landscape_hpc.geometry import figures

        png = out / "tunnel.png"
        files.append(
            figures.plot_tunnel(result.t, result.points, result.metrics, result.alignment, png)
        )
        if result.short_dirs is not None:
            x = _short_dirs_positions(result)
            files.append(short_dirs.plot(result.short_dirs, x, "position t (θ_a → θ_b)", out))
    return Report(summarize_tunnel(result), files)


main = experiment_main("tunnel", _command)
