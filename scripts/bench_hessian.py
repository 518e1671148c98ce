"""Hessian map benchmark (CPU): wall time per grid point of `python -m landscape_hpc.geometry
hessian surface=...`, i.e. of one Lanczos run of `lanczos_steps` Hessian-vector products on the
whole training split at one point of a random filter-normalised plane.

For mlp and mpo_cnn on the real digits training split (1,437 images 1×8×8) it prints, per Lanczos
step count, all measured in one run after one warm-up HVP:

    s/point       seconds per grid point: the fastest of `--points` points, and (mean) their mean
    s/HVP         seconds per Hessian-vector product: the fastest point / steps
    steps×HVP     steps × the fastest single HVP: what a point costs when nothing else runs
    HVP/grad      one HVP in units of one gradient (forward + backward of the mean loss)
    HVP/fwd       one HVP in units of one forward (fastest of 7 each)
    fwd-rev/HVP   forward-over-reverse (torch.func.jvp of torch.func.grad) over the HVP used
                  (reverse-over-reverse)

The per-point kernel is the command's own (`MapJob.point`, landscape_hpc/geometry/curvature_job.py),
without the file I/O (one small HDF5 write per point, landscape_hpc/files/hessian_maps.py).

    python scripts/bench_hessian.py                  # a few minutes on a quiet 2-core machine
    python scripts/bench_hessian.py --models mlp --points 5
    python scripts/bench_hessian.py --quick          # seconds
    python scripts/bench_hessian.py --double         # float64, as the command's double=true
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.directions import direction_keys, random_basis
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.geometry.curvature_job import MapJob, make_job
from landscape_hpc.grid import Grid
from landscape_hpc.hessian import hvp
from landscape_hpc.models import build_model

THREADS = 2
MODELS = ("mlp", "mpo_cnn")


def best_of(run: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed calls (other processes only ever slow a run down)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_model(name: str, steps_list: list[int], points: int, double: bool) -> list[dict]:
    splits = load_dataset(DatasetConfig(name="digits"))
    train = splits["train"]
    model = build_model(ModelConfig(name=name), tuple(train.inputs.shape[1:]), 10)
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    keys = direction_keys(model, "weights")
    basis = random_basis(origin, keys, 2, 0, "filter", "biasbn")
    grid = Grid(np.linspace(-1, 1, points + 1), np.zeros(1))  # points on a line, y = 0
    rows = []
    for steps in steps_list:
        cfg = HessianConfig(
            model=ModelConfig(name=name),
            dataset=DatasetConfig(),
            lanczos_steps=steps,
            double=double,
        )
        job = MapJob(make_job(model, train, cfg, "ce"), Subspace(origin, basis), grid)
        loss, theta = job.kernel.loss_fn(job.subspace.point(torch.zeros(2, dtype=torch.float64)))
        v = torch.randn_like(theta)
        hvp(loss, theta, v)  # warm-up: the first JVP loads torch's decompositions
        point_times = []
        for flat in range(1, points + 1):
            start = time.perf_counter()
            job.point(flat)
            point_times.append(time.perf_counter() - start)
        per_point = min(point_times)  # other processes only ever slow a point down

        grad = torch.func.grad(loss)
        repeats = 7 if steps_list[0] > 5 else 2
        # the HVP used (reverse-over-reverse) and the alternative, forward-over-reverse
        # (torch.func.jvp of torch.func.grad), interleaved so that load hits both alike
        t_hvp = t_fwd_rev = math.inf
        for _ in range(repeats):
            t_hvp = min(t_hvp, best_of(lambda: hvp(loss, theta, v), 1))  # noqa: B023
            t_fwd_rev = min(
                t_fwd_rev,
                best_of(lambda: torch.func.jvp(grad, (theta,), (v,)), 1),  # noqa: B023
            )
        t_grad = best_of(lambda: grad(theta), repeats)  # noqa: B023
        with torch.no_grad():
            t_fwd = best_of(lambda: loss(theta), repeats)  # noqa: B023
        rows.append(
            {
                "model": name,
                "params": theta.numel(),
                "samples": len(train.labels),
                "steps": steps,
                "s_per_point": per_point,
                "s_per_point_mean": float(np.mean(point_times)),
                "s_per_hvp": per_point / steps,
                "quiet_s_per_point": steps * t_hvp,
                "hvp_over_grad": t_hvp / t_grad,
                "hvp_over_forward": t_hvp / t_fwd,
                "fwd_rev_over_hvp": t_fwd_rev / t_hvp,
            }
        )
    return rows


def main() -> None:
    # torch 2.14 loads its forward-AD decompositions through torch.jit.script, which warns
    warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 point, 5 Lanczos steps")
    parser.add_argument("--double", action="store_true", help="float64 (double=true)")
    parser.add_argument("--points", type=int, default=3, help="timed grid points per setting")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    steps_list, points = ([5], 1) if args.quick else ([10, 20], args.points)
    load = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {THREADS} threads, {'float64' if args.double else 'float32'}"
    )
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    start = time.perf_counter()
    header = (
        f"{'model':<8} {'params':>7} {'samples':>7} {'lanczos':>7} {'s/point':>8} "
        f"{'(mean)':>8} {'s/HVP':>7} {'steps×HVP':>9} {'HVP/grad':>8} {'HVP/fwd':>8} "
        f"{'fwd-rev/HVP':>11}"
    )
    print(header)
    for name in args.models:
        for r in bench_model(name, steps_list, points, args.double):
            print(
                f"{r['model']:<8} {r['params']:>7} {r['samples']:>7} {r['steps']:>7} "
                f"{r['s_per_point']:>8.3f} {r['s_per_point_mean']:>8.3f} "
                f"{r['s_per_hvp']:>7.4f} {r['quiet_s_per_point']:>9.3f} {r['hvp_over_grad']:>8.2f} "
                f"{r['hvp_over_forward']:>8.2f} {r['fwd_rev_over_hvp']:>11.2f}",
                flush=True,
            )
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
