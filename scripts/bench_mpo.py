"""MPO training step: batched (vmap over cells, one backward per chunk) vs loss-patterns' per-cell
loop (one forward and backward per cell), same plane, cells and batch, in one run; and the
evaluation of a fitted plane's cells through the engine (vmap vs one cell at a time).

    python scripts/bench_mpo.py          # the BN pair (mpo_cnn6, mpo_cnn_bn), 8x8 and 28x28
    python scripts/bench_mpo.py --sizes 8 --steps 3 --models mpo_cnn_bn --cells 8 --batch 32
    python scripts/bench_mpo.py --chunk-cells 25 --malloc default   # chunked, untuned malloc
    python scripts/bench_mpo.py --sweep-summary runs/bn_sweep/summary.csv   # per-job time split

Prints steps/s, effective GFLOP/s (forward FLOPs counted by torch's FlopCounterMode, ×3 for
forward + backward) next to the measured float32 matmul peak, and the peak RSS of each path
(each measured in its own subprocess); then evaluation cells/s (`--eval-samples` samples per
split, train and test, BN statistics recomputed per cell for BN nets as the MPO command does).
Inputs are synthetic tensors of the real shapes (speed does not depend on pixels). Speed is
reported, never asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from landscape_hpc.cli import tune_allocator
from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.engine.evaluate import evaluate_points, has_bn
from landscape_hpc.models import build_model
from landscape_hpc.mpo.objective import objective_batched, objective_loop, training_template
from landscape_hpc.mpo.plane import Plane


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * n**3 / (time.perf_counter() - start) / 1e9


def worker(
    mode: str, size: int, model_name: str, cells: int, batch: int, steps: int, chunk: int
) -> dict:
    shape = (1, size, size)
    models = [build_model(ModelConfig(name=model_name, init_seed=i), shape, 10) for i in range(3)]
    plane = Plane.init(tuple(models))
    template = training_template(models[0])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g)
    low, high = torch.randn(cells, 2, generator=g) * 5, torch.randn(cells, 2, generator=g) * 5
    with FlopCounterMode(display=False) as counter:
        models[0].train()(x[:1])
    flops_step = 3 * counter.get_total_flops() * batch * 2 * cells  # fwd + bwd ≈ 3 × fwd

    def step() -> None:
        for t in plane.parameters():
            t.grad = None
        if mode == "batched":
            objective_batched(plane, template, low, high, x, y, 2.5, chunk_cells=chunk)
        else:
            objective_loop(plane, template, low, high, x, y, 2.5)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return {
        "steps_per_s": 1 / seconds,
        "gflops": flops_step / seconds / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def eval_worker(strategy: str, size: int, model_name: str, cells: int, samples: int) -> dict:
    """Cells per second of the final evaluation: `cells` cells on train and test splits of
    `samples` each (train also gives BN nets their recomputed statistics)."""
    shape = (1, size, size)
    models = [build_model(ModelConfig(name=model_name, init_seed=i), shape, 10) for i in range(3)]
    subspace = Plane.init(tuple(models)).to_subspace()
    g = torch.Generator().manual_seed(0)
    data = {
        split: (torch.randn(samples, *shape, generator=g), torch.randint(0, 10, (samples,)))
        for split in ("train", "test")
    }
    coords = torch.randn(cells, 2, generator=g) * 5
    bn = "recompute" if has_bn(models[0]) else "eval"
    options = EngineConfig(bn=bn, strategy=strategy)
    evaluate_points(models[0], subspace, coords[:2], data, options, data["train"][0])  # warm-up
    start = time.perf_counter()
    evaluate_points(models[0], subspace, coords, data, options, data["train"][0])
    seconds = time.perf_counter() - start
    with FlopCounterMode(display=False) as counter:
        models[0].eval()(data["train"][0][:1])
    passes = 3 if bn == "recompute" else 2  # train + test, and the statistics pass
    flops = counter.get_total_flops() * samples * passes * cells
    return {"cells_per_s": cells / seconds, "gflops": flops / seconds / 1e9}


def sweep_split(path: str) -> None:
    """The per-job time split of a finished sweep (summary.csv of `sweep report`): fit steps,
    held-out checks, evaluation of every cell, and the rest (set-up, writes, plane export)."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "done"]
    print(f"{path}: {len(rows)} done jobs")
    print(
        f"{'model':<11} {'jobs':>4} {'s/job':>7} {'fit':>6} {'checks':>7} {'eval':>6} {'other':>6}"
    )
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        total = sum(float(r["seconds"]) for r in mine)
        train = sum(float(r["train_seconds"]) for r in mine)
        checks = sum(float(r["heldout_seconds"]) for r in mine)
        evals = sum(float(r["eval_seconds"]) for r in mine)
        parts = (train - checks, checks, evals, total - train - evals)
        shares = " ".join(f"{100 * x / total:5.1f}%" for x in parts)
        print(f"{model:<11} {len(mine):>4} {total / len(mine):7.1f} {shares}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 28])
    p.add_argument("--models", nargs="+", default=["mpo_cnn6", "mpo_cnn_bn"])
    p.add_argument("--cells", type=int, default=50, help="cells of each class per step")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument(
        "--chunk-cells", type=int, help="cells per vmapped forward/backward (default: all at once)"
    )
    p.add_argument(
        "--malloc",
        choices=("tuned", "default"),
        default="tuned",
        help="glibc malloc as the commands set it (tuned) or as it comes (default)",
    )
    p.add_argument("--eval-cells", type=int, default=64, help="cells per evaluation timing")
    p.add_argument("--eval-samples", type=int, default=200, help="samples per split")
    p.add_argument("--sweep-summary", help="print the per-job time split of this summary.csv")
    p.add_argument("--worker", nargs=3, metavar=("MODE", "SIZE", "MODEL"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.sweep_summary:
        sweep_split(a.sweep_summary)
        return
    chunk = a.chunk_cells or 2 * a.cells
    if a.worker:
        if a.malloc == "tuned":
            tune_allocator()
        mode, size, model = a.worker
        if mode in ("vmap", "sequential"):
            out = eval_worker(mode, int(size), model, a.eval_cells, a.eval_samples)
        else:
            out = worker(mode, int(size), model, a.cells, a.batch, a.steps, chunk)
        print(json.dumps(out))
        return
    peak = matmul_peak()
    print(f"threads {torch.get_num_threads()}, matmul peak {peak:.1f} GFLOP/s (float32)")
    print(
        f"{a.cells}+{a.cells} cells, batch {a.batch}, {chunk} cells per chunk, "
        f"malloc {a.malloc}, mean of {a.steps} steps; evaluation: {a.eval_cells} cells, "
        f"{a.eval_samples} samples per split"
    )

    def run(mode: str, size: int, model: str) -> dict:
        cmd = [sys.executable, __file__, "--worker", mode, str(size), model]
        cmd += ["--cells", str(a.cells), "--batch", str(a.batch), "--steps", str(a.steps)]
        cmd += ["--chunk-cells", str(chunk), "--malloc", a.malloc]
        cmd += ["--eval-cells", str(a.eval_cells), "--eval-samples", str(a.eval_samples)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    print(
        f"{'model':<11} {'input':>6} {'path':>8} {'steps/s':>8} {'GFLOP/s':>8} {'% peak':>7} "
        f"{'RSS MiB':>8}"
    )
    for model in a.models:
        for size in a.sizes:
            rows = {}
            for mode in ("batched", "loop"):
                rows[mode] = r = run(mode, size, model)
                print(
                    f"{model:<11} {size:>3}x{size:<2} {mode:>8} {r['steps_per_s']:8.3f} "
                    f"{r['gflops']:8.1f} {100 * r['gflops'] / peak:6.1f}% {r['peak_rss_mb']:8.0f}"
                )
            b, lp = rows["batched"], rows["loop"]
            print(
                f"{'':>20} batched/loop: speed {b['steps_per_s'] / lp['steps_per_s']:.2f}x, "
                f"memory {b['peak_rss_mb'] / lp['peak_rss_mb']:.2f}x"
            )
            for strategy in ("vmap", "sequential"):
                e = run(strategy, size, model)
                print(
                    f"{model:<11} {size:>3}x{size:<2} eval {strategy:<10} "
                    f"{e['cells_per_s']:8.2f} cells/s {e['gflops']:8.1f} GFLOP/s "
                    f"{100 * e['gflops'] / peak:6.1f}% peak"
                )


if __name__ == "__main__":
    main()
