"""MPO training step: batched (vmap over cells, one backward per chunk) vs loss-patterns' per-cell
loop (one forward and backward per cell), same plane, cells and batch, in one run.

    python scripts/bench_mpo.py          # 8x8 and 28x28 inputs, 50+50 cells, batch 128
    python scripts/bench_mpo.py --sizes 8 --steps 3 --model mpo_cnn_bn
    python scripts/bench_mpo.py --chunk-cells 25 --malloc default   # chunked, untuned malloc

Prints steps/s, effective GFLOP/s (forward FLOPs counted by torch's FlopCounterMode, ×3 for
forward + backward) next to the measured float32 matmul peak, and the peak RSS of each path
(each measured in its own subprocess). Inputs are synthetic tensors of the real shapes (speed
does not depend on pixels). Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from landscape_hpc.cli import tune_allocator
from landscape_hpc.config import ModelConfig
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 28])
    p.add_argument("--model", default="mpo_cnn")
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
    p.add_argument("--worker", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    chunk = a.chunk_cells or 2 * a.cells
    if a.worker:
        if a.malloc == "tuned":
            tune_allocator()
        mode, size = a.worker
        print(json.dumps(worker(mode, int(size), a.model, a.cells, a.batch, a.steps, chunk)))
        return
    peak = matmul_peak()
    print(f"threads {torch.get_num_threads()}, matmul peak {peak:.1f} GFLOP/s (float32)")
    print(
        f"{a.model}, {a.cells}+{a.cells} cells, batch {a.batch}, {chunk} cells per chunk, "
        f"malloc {a.malloc}, mean of {a.steps} steps"
    )
    print(f"{'input':>7} {'path':>8} {'steps/s':>8} {'GFLOP/s':>8} {'% peak':>7} {'RSS MiB':>8}")
    for size in a.sizes:
        rows = {}
        for mode in ("batched", "loop"):
            cmd = [sys.executable, __file__, "--worker", mode, str(size), "--model", a.model]
            cmd += ["--cells", str(a.cells), "--batch", str(a.batch), "--steps", str(a.steps)]
            cmd += ["--chunk-cells", str(chunk), "--malloc", a.malloc]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows[mode] = r = json.loads(out.strip().splitlines()[-1])
            print(
                f"{size}x{size:<5} {mode:>8} {r['steps_per_s']:8.3f} {r['gflops']:8.1f} "
                f"{100 * r['gflops'] / peak:6.1f}% {r['peak_rss_mb']:8.0f}"
            )
        b, lp = rows["batched"], rows["loop"]
        print(
            f"{'':>7} batched/loop: speed {b['steps_per_s'] / lp['steps_per_s']:.2f}x, "
            f"memory {b['peak_rss_mb'] / lp['peak_rss_mb']:.2f}x"
        )


if __name__ == "__main__":
    main()
