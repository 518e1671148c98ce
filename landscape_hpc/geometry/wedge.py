"""The n-wedge toy landscape's experiments (Fort & Jastrzebski 2019, sec. 3).

The loss is the distance to the nearest n-wedge in D dimensions (`models.nwedge.wedge_distance`):
zero on a union of n-dimensional coordinate subspaces. Two experiments:

(a) Random hyperplanes: from random θ0, train c in θ0 + P·c for random d-dimensional P
    (`geometry.intrinsic_dim.train_in_subspace`). A d-plane meets an n-dimensional wedge generically
    iff d + n ≥ D, so training succeeds (final loss below `success_loss`) from d = D − n on.
(b) A tunnel: two optima on different wedges (θ_a free on the first n coordinates, θ_b on the
    last n) are joined by a linear path of high loss; optimising its inner points in the
    hyperplanes normal to it (the tunnel experiment's core) gives a low-loss tunnel.

    python -m landscape_hpc.geometry wedge                        # D = 40, n = 30
    python -m landscape_hpc.geometry wedge dim=100 n=90 dims=[5,9,10,11,20] trials=5
    mpirun -n 3 python -m landscape_hpc.geometry wedge            # one task per run or point

Writes wedge_subspace.csv (d, trial, final loss, success), wedge_tunnel.csv (t, loss along the
linear path and the tunnel), wedge.png, and the two optima as checkpoints of model=wedge
(wedge_a.pt, wedge_b.pt), so every command runs on them:

    python -m landscape_hpc.geometry tunnel model=wedge model.kwargs.dim=40 model.kwargs.n=30 \\
        optima=[wedge_a.pt,wedge_b.pt] hyperplane.batch_size=null hyperplane.lr=0.01
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from landscape_hpc import parallel
from landscape_hpc.config import WedgeConfig
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.hyperplane import (
    HyperplaneOptions,
    cosine_matrix,
    optimise_hull_point,
    path_losses,
    segment_positions,
    stream_seed,
)
from landscape_hpc.geometry.intrinsic_dim import train_in_subspace
from landscape_hpc.models.nwedge import wedge_distance

_JOB_KEY = "wedge_job"


def wedge_optima(dim: int, n: int, seed: int, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Two minima on different n-wedges: θ_a free on the first n coordinates, θ_b on the last n
    (the other coordinates zero), free values standard normal × scale (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.zeros(dim, dtype=torch.float64)
    b = torch.zeros(dim, dtype=torch.float64)
    a[:n] = scale * torch.randn(n, generator=g, dtype=torch.float64)
    b[dim - n :] = scale * torch.randn(n, generator=g, dtype=torch.float64)
    return a, b


@dataclass
class WedgeJob:
    cfg: WedgeConfig
    optima: Tensor  # (2, D)
    hyperplane: HyperplaneOptions

    def loss(self, theta: Tensor) -> Tensor:
        return wedge_distance(theta, self.cfg.n)

    def subspace_run(self, d: int, trial: int) -> float:
        g = torch.Generator().manual_seed(stream_seed(self.cfg.seed, trial))
        theta0 = self.cfg.init_scale * torch.randn(self.cfg.dim, generator=g, dtype=torch.float64)
        result = train_in_subspace(
            self.loss,
            theta0,
            d,
            steps=self.cfg.steps,
            lr=self.cfg.lr,
            seed=stream_seed(self.cfg.seed + 1, d * 100_003 + trial),
        )
        return result.final_loss

    def tunnel_point(self, t: float) -> np.ndarray:
        weights = torch.tensor([1.0 - t, t], dtype=torch.float64)
        result = optimise_hull_point(self.loss, self.optima, weights, self.hyperplane)
        return (result.theta - weights @ self.optima).numpy()


def _wedge_task(task: tuple[str, int, Any]) -> Any:
    job: WedgeJob = parallel.worker_state(_JOB_KEY)
    kind, i, value = task
    return job.subspace_run(*value) if kind == "subspace" else job.tunnel_point(value)


@dataclass
class WedgeResult:
    dims: np.ndarray  # (R,) d of each run
    trials: np.ndarray  # (R,)
    final_loss: np.ndarray  # (R,)
    success: np.ndarray  # (R,) bool
    t: np.ndarray  # (Q,)
    points: np.ndarray  # (n_segments + 1,)
    linear_loss: np.ndarray  # (Q,)
    tunnel_loss: np.ndarray  # (Q,)
    alignment: np.ndarray  # (K, K)
    optima: Tensor  # (2, D)


def check_config(cfg: WedgeConfig) -> tuple[list[int], HyperplaneOptions]:
    """Checks the config; returns the hyperplane dimensions d and the tunnel points' options."""
    if cfg.dim < 2:
        raise UserError(f"dim={cfg.dim} must be at least 2")
    if not 1 <= cfg.n < cfg.dim:
        raise UserError(f"n={cfg.n} must lie in [1, dim − 1 = {cfg.dim - 1}]")
    default_top = min(cfg.dim, 2 * (cfg.dim - cfg.n) + 2)
    dims = list(cfg.dims) if cfg.dims is not None else list(range(1, default_top + 1))
    bad = [d for d in dims if not 1 <= d <= cfg.dim]
    if bad:
        raise UserError(f"dims={dims}: {bad} outside [1, dim={cfg.dim}]")
    if cfg.trials < 1:
        raise UserError(f"trials={cfg.trials} must be at least 1")
    if cfg.n_segments < 2:
        raise UserError(f"n_segments={cfg.n_segments} must be at least 2 (one inner point)")
    if cfg.n_dense < 2:
        raise UserError(f"n_dense={cfg.n_dense} must be at least 2")
    return dims, HyperplaneOptions.from_config(cfg.hyperplane)


def run_wedge(cfg: WedgeConfig, comm: Any = None) -> Optional[WedgeResult]:
    """Both experiments over the pool (one task per subspace run and per tunnel point); the
    result on rank 0, None on the others."""
    comm = parallel.world_if_none(comm)
    dims, hyperplane = check_config(cfg)
    a, b = wedge_optima(cfg.dim, cfg.n, stream_seed(cfg.seed, 10**6), cfg.init_scale)
    job = WedgeJob(cfg, torch.stack([a, b]), hyperplane)
    runs = [(d, trial) for d in dims for trial in range(cfg.trials)]
    points = segment_positions(cfg.n_segments)
    tasks = [("subspace", i, run) for i, run in enumerate(runs)]
    tasks += [("tunnel", k, float(t)) for k, t in enumerate(points[1:-1])]
    final_loss = np.zeros(len(runs))
    deviations = np.zeros((len(points) - 2, cfg.dim))
    describe = lambda t: f"{t[0]} task {t[1]} ({t[2]})"  # noqa: E731
    with parallel.worker_pool(_JOB_KEY, job):
        for result in parallel.run_tasks(comm, _wedge_task, tasks, describe=describe):
            kind, i, _ = result.task
            if kind == "subspace":
                final_loss[i] = result.value
            else:
                deviations[i] = result.value
    if comm.Get_rank() != 0:
        return None
    t = np.union1d(np.linspace(0.0, 1.0, cfg.n_dense), points)
    devs = torch.from_numpy(deviations)
    linear, tunnel = path_losses(job.loss, a, b, devs, t)
    return WedgeResult(
        np.array([d for d, _ in runs]),
        np.array([trial for _, trial in runs]),
        final_loss,
        final_loss < cfg.success_loss,
        t,
        points,
        linear,
        tunnel,
        cosine_matrix(devs),
        job.optima,
    )


def write_wedge(result: WedgeResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = out_dir / "wedge_subspace.csv"
    table = np.stack(
        [result.dims, result.trials, result.final_loss, result.success.astype(float)], axis=1
    )
    np.savetxt(runs, table, delimiter=",", header="d,trial,final_loss,success", comments="")
    path = out_dir / "wedge_tunnel.csv"
    is_point = np.isin(result.t, result.points).astype(float)
    table = np.stack([result.t, is_point, result.linear_loss, result.tunnel_loss], axis=1)
    np.savetxt(path, table, delimiter=",", header="t,is_point,loss_linear,loss_tunnel", comments="")
    files = [runs, path]
    for name, theta in zip(("wedge_a.pt", "wedge_b.pt"), result.optima):
        torch.save({"theta": theta.float().clone()}, out_dir / name)  # a model=wedge state_dict
        files.append(out_dir / name)
    return files


def summarize_wedge(result: WedgeResult, dim: int, n: int, success_loss: float) -> str:
    ds = np.unique(result.dims)
    fractions = {int(d): float(result.success[result.dims == d].mean()) for d in ds}
    all_succeed = [d for d in ds if fractions[int(d)] == 1.0]
    first = min(
        (d for d in all_succeed if all(fractions[int(e)] == 1.0 for e in ds if e >= d)),
        default=None,
    )
    lines = [
        f"n-wedge, D = {dim}, n = {n}: random hyperplanes succeed (final loss < {success_loss:g}) "
        f"in every run from d = {first} on (theory: d ≥ D − n = {dim - n})"
        if first is not None
        else f"n-wedge, D = {dim}, n = {n}: no d where every run succeeds (theory: d ≥ {dim - n})",
        "  success fraction per d: " + ", ".join(f"{d}: {f:.2f}" for d, f in fractions.items()),
    ]
    i, j = int(np.argmax(result.linear_loss)), int(np.argmax(result.tunnel_loss))
    lines.append(
        f"  tunnel between two wedges: linear path max loss {result.linear_loss[i]:.4g} at "
        f"t={result.t[i]:.3f}, tunnel max loss {result.tunnel_loss[j]:.4g} at t={result.t[j]:.3f}"
        f" (mean loss {result.linear_loss.mean():.4g} vs {result.tunnel_loss.mean():.4g})"
    )
    if len(result.alignment) > 1:
        neighbours = np.diagonal(result.alignment, 1)
        lines.append(f"  mean cosine of neighbouring deviations {np.mean(neighbours):.3f}")
    return "\n".join(lines)


def _command(cfg: WedgeConfig, comm: Any) -> Optional[Report]:
    result = run_wedge(cfg, comm)
    if result is None:
        return None
    out = Path(cfg.out_dir)
    files = write_wedge(result, out)
    if cfg.plot:
        from landscape_hpc.geometry import figures

        png = figures.plot_wedge(
            result.dims,
            result.final_loss,
            result.success,
            result.t,
            result.points,
            result.linear_loss,
            result.tunnel_loss,
            out / "wedge.png",
            dim=cfg.dim,
            n=cfg.n,
            success_loss=cfg.success_loss,
        )
        files.append(png)
    return Report(summarize_wedge(result, cfg.dim, cfg.n, cfg.success_loss), files)


main = experiment_main("wedge", _command)
