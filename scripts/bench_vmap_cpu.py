"""The vmap strategy's CPU rewrites, switched on one at a time, against the peer (issue 24).

On the mlp over the digits train split (1,437 samples, 441 points of a random filter-normalised
plane), in one process, alternating, the fastest of --rounds each:

    before          vmap with every point of a chunk in one pass and each point's first Linear
                    its own product (what the engine did before these rewrites)
    pass cap        a pass's largest activation kept within memory.CPU_PASS_BYTES
    + shared first  the first Linear as one product on the shared batch (engine/shared_input.py)
    + batch x2      the same at twice the batch (a size autotune now also times on a CPU)
    theirs          loss-landscapes 3.0.6 `random_plane`, the same model and samples as one batch

The rewrites are switched off in this process only, by the two module attributes the engine
reads (stacked.first_linear, memory.CPU_PASS_BYTES). Every variant's losses are compared with
the first's (max relative difference). Nothing is asserted: docs/benchmarks.md records it.

    python scripts/bench_vmap_cpu.py              # ~1 minute on a quiet 2-core machine
    python scripts/bench_vmap_cpu.py --quick      # seconds: 25 points, 300 samples, one round
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_surface as bench  # noqa: E402  (scripts/bench_surface.py: workloads and the peer)

from landscape_hpc.config import EngineConfig  # noqa: E402
from landscape_hpc.engine import memory, stacked  # noqa: E402
from landscape_hpc.engine.evaluate import Evaluator  # noqa: E402

BATCH = 256


def variants(model: nn.Module, data: dict, coords: torch.Tensor) -> dict[str, Evaluator]:
    """One Evaluator per variant, each built (and its first call made) under its settings."""
    first, cap = stacked.first_linear, memory.CPU_PASS_BYTES
    settings = {
        "before": (False, 2**62, BATCH),
        "pass cap": (False, cap, BATCH),
        "+ shared first": (True, cap, BATCH),
        "+ batch x2": (True, cap, 2 * BATCH),
    }
    built = {}
    try:
        for name, (shared, pass_bytes, batch) in settings.items():
            stacked.first_linear = first if shared else (lambda *args: None)
            memory.CPU_PASS_BYTES = pass_bytes
            options = EngineConfig(strategy="vmap", batch_size=batch)
            built[name] = Evaluator(model, bench.make_subspace(model), data, options)
            built[name](coords)  # built and traced under its settings
    finally:
        stacked.first_linear, memory.CPU_PASS_BYTES = first, cap
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(bench.THREADS)
    missing = bench.peer_missing()
    workload = (bench.PEER_QUICK if args.quick else bench.PEER_FULL)[0]  # the mlp
    model = bench.peer_model(workload)
    inputs, labels = bench.make_data(workload)
    steps = workload.grid[0]
    coords = bench.grid_coords(steps, steps)
    evaluators = variants(model, {"train": (inputs, labels)}, coords)
    runs = {name: (lambda e=e: e(coords)["train"].loss) for name, e in evaluators.items()}
    if missing is None:
        import loss_landscapes
        from loss_landscapes.metrics import Loss

        metric = Loss(nn.CrossEntropyLoss(), inputs, labels)

        def theirs() -> None:
            torch.manual_seed(0)
            loss_landscapes.random_plane(model, metric, bench.PEER_DISTANCE, steps, "filter")

        theirs()  # warm-up
        runs["theirs"] = theirs
    else:
        print(f"the peer is skipped: {missing}")
    rounds = 1 if args.quick else args.rounds
    info = bench.machine()
    print(
        f"{info['cpu']}, {info['cpus']} CPUs, torch {info['torch']} with {bench.THREADS} threads; "
        f"mlp/digits, {inputs.shape[0]} samples, {coords.shape[0]} points, best of {rounds}"
    )
    reference = runs["before"]()
    for name, run in runs.items():
        if name != "theirs":
            diff = np.max(np.abs(run() - reference) / np.abs(reference))
            print(f"  {name}: losses against before, max rel. difference {diff:.1e}")
    gate = bench.QuietGate(0.0 if args.quick else 60.0)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            gate.wait()
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    rate = {name: coords.shape[0] / seconds for name, seconds in best.items()}
    print("| variant | points/s | × before | × theirs |\n|---|---:|---:|---:|")
    for name, r in rate.items():
        vs_theirs = f"{r / rate['theirs']:.2f}" if "theirs" in rate else "-"
        print(f"| {name} | {r:.0f} | {r / rate['before']:.2f} | {vs_theirs} |")


if __name__ == "__main__":
    main()
