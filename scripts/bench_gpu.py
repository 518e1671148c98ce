"""The GPU figures in one call: what one rank that owns a GPU does, measured side by side.

    python scripts/bench_gpu.py                      # on a GPU machine: about 4 minutes
    python scripts/bench_gpu.py --dry-run            # tiny sizes, on any device (CI: the CPU)
    python scripts/bench_gpu.py --json figures.json  # also write every figure as JSON

(scripts/bench_gpu.sh runs it and then the CUDA tests, tests/test_cuda.py.) Prints, for the
device it runs on:
  1. the device and its matmul peak: float32 (TF32 off), and on a GPU TF32 and bfloat16;
  2. the surface engine on resnet56 at CIFAR-10's shape (synthetic data: speed does not depend on
     pixels) per strategy and engine.precision (fp32, tf32, bf16): points/s, % of the float32
     peak, the projected time of the 51×51, 50,000-sample surface Li et al. report at about an
     hour on 4 GPUs, and each lower precision's largest relative loss error against fp32 on the
     same points (on a CPU tf32 is fp32: its error is 0);
  2b. the same for the transformer workload (gpt_tiny, default size, on windows of 64 tokens,
     the lm loss), as bench_surface.py measures it on the CPU (issue 26);
  3. the MPO training step of the BN pair (mpo_cnn6, mpo_cnn_bn) at 28×28: every cell in one
     batched forward and backward vs loss-patterns' loop of one cell at a time (goal: ≥ 10×);
  4. the values against the CPU path: the largest relative difference of the engine's losses
     (engine.precision=fp32 on both: float32, TF32 off).
The JSON is rewritten after every section, so a run cut short keeps what it measured. Speed is
reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.corpus import VOCAB
from landscape_hpc.directions import direction_keys, random_basis
from landscape_hpc.engine.evaluate import Evaluator, evaluate_points
from landscape_hpc.engine.precision import PRECISIONS, precision, precision_error
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.models import build_model
from landscape_hpc.mpo.objective import objective_batched, objective_loop, training_template
from landscape_hpc.mpo.plane import Plane

#: Li et al. 2018's ResNet-56 surface: 51×51 points over the 50,000 CIFAR-10 training images
PAPER_POINTS, PAPER_SAMPLES = 51 * 51, 50_000

FULL = {
    "matmul_n": 8192,
    "surface_model": "resnet56",
    "surface_samples": 2048,
    "surface_points": 16,
    "surface_batch": 512,
    "mpo_cells": 16,
    "mpo_batch": 128,
    "mpo_steps": 5,
    "lm_samples": 1024,
    "lm_context": 64,
}
DRY = {
    "matmul_n": 256,
    "surface_model": "resnet20",
    "surface_samples": 8,
    "surface_points": 2,
    "surface_batch": 8,
    "mpo_cells": 2,
    "mpo_batch": 8,
    "mpo_steps": 1,
    "lm_samples": 4,
    "lm_context": 16,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Wall time of one call after a warm-up call, the device's queue drained each time."""
    run()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    sync(device)
    return (time.perf_counter() - start) / repeats


def matmul_peaks(device: torch.device, n: int) -> dict[str, float]:
    """TFLOP/s of an n×n matmul: float32 (TF32 off), and on a GPU TF32 and bfloat16."""
    kinds = [("fp32", torch.float32, "fp32")]
    if device.type == "cuda":
        kinds += [("tf32", torch.float32, "tf32"), ("bf16", torch.bfloat16, "fp32")]
    peaks = {}
    for name, dtype, flags in kinds:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with precision(flags, device):  # the TF32 flags as engine.precision sets them
            seconds = seconds_per_call(lambda a=a, b=b: a @ b, device, repeats=5)
        peaks[name] = 2 * n**3 / seconds / 1e12
    return peaks


def _surface_problem(name: str, samples: int, device: torch.device):
    shape = (3, 32, 32)
    model = build_model(ModelConfig(name=name), shape, 10).to(device).eval()
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    basis = random_basis(origin, direction_keys(model, "weights"), 2, 0, "filter", "biasbn")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, *shape, generator=g).to(device)
    y = torch.randint(0, 10, (samples,), generator=g).to(device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x[:1])
    return model, Subspace(origin, basis), (x, y), counter.get_total_flops()


def _lm_problem(samples: int, context: int, device: torch.device):
    """gpt_tiny (default size) on random byte tokens (speed does not depend on the text), its
    per-token loss on labels = inputs (shifted inside the lm loss)."""
    model = build_model(ModelConfig(name="gpt_tiny"), (context,), VOCAB).to(device).eval()
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    basis = random_basis(origin, direction_keys(model, "weights"), 2, 0, "filter", "biasbn")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB - 1, (samples, context), generator=g).to(device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x[:1])
    return model, Subspace(origin, basis), (x, x.clone()), counter.get_total_flops()


def surface_engine(
    device: torch.device, sizes: dict, peak_tflops: float, problem, loss: str = "ce"
) -> list[dict]:
    """Points/s, % of the float32 peak and the error against fp32 per strategy and precision;
    `problem` is (model, subspace, data, FLOPs per sample)."""
    model, subspace, data, flops_per_sample = problem
    samples = len(data[0])
    coords = torch.linspace(-1, 1, sizes["surface_points"], dtype=torch.float64)
    coords = torch.stack([coords, coords.flip(0)], dim=1)
    rows = []
    for strategy in ("vmap", "sequential", "auto"):
        fp32 = None  # this strategy's fp32 values: what the lower precisions are measured against
        for name in PRECISIONS:
            options = EngineConfig(
                batch_size=sizes["surface_batch"],
                memory_mb=16384.0,
                strategy=strategy,
                precision=name,
                loss=loss,
            )
            evaluator = Evaluator(model, subspace, {"train": data}, options)
            values = evaluator(coords)  # auto times its candidates here, once
            if name == "fp32":
                fp32 = values
            seconds = seconds_per_call(lambda e=evaluator: e(coords), device, repeats=1)
            points_per_s = sizes["surface_points"] / seconds
            tflops = flops_per_sample * samples * points_per_s / 1e12
            chosen = evaluator.plan or "the default rule: too few points to time"
            hours = PAPER_POINTS / points_per_s * PAPER_SAMPLES / samples / 3600
            rows.append(
                {
                    "strategy": strategy if strategy != "auto" else f"auto ({chosen})",
                    "precision": name,
                    "points_per_s": points_per_s,
                    "pct_of_fp32_peak": 100 * tflops / peak_tflops,
                    "paper_surface_hours": hours,
                    "max_rel_err_vs_fp32": precision_error(values, fp32)["loss_rel"],
                }
            )
    return rows


def mpo_step(device: torch.device, sizes: dict) -> list[dict]:
    rows = []
    shape = (1, 28, 28)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sizes["mpo_batch"], *shape, generator=g).to(device)
    y = torch.randint(0, 10, (sizes["mpo_batch"],), generator=g).to(device)
    low = (torch.randn(sizes["mpo_cells"], 2, generator=g) * 5).to(device)
    high = (torch.randn(sizes["mpo_cells"], 2, generator=g) * 5).to(device)
    for name in ("mpo_cnn6", "mpo_cnn_bn"):
        models = [build_model(ModelConfig(name=name, init_seed=i), shape, 10) for i in range(3)]
        plane = Plane.init(tuple(models)).to(device)
        template = training_template(models[0]).to(device)
        times = {}
        for mode, objective in (("batched", objective_batched), ("loop", objective_loop)):
            extra = {"chunk_cells": 2 * sizes["mpo_cells"]} if mode == "batched" else {}

            def step(objective=objective, extra=extra, plane=plane, template=template) -> None:
                for t in plane.parameters():
                    t.grad = None
                objective(plane, template, low, high, x, y, 2.5, **extra)

            times[mode] = seconds_per_call(step, device, repeats=sizes["mpo_steps"])
        rows.append(
            {
                "model": name,
                "batched_steps_per_s": 1 / times["batched"],
                "loop_steps_per_s": 1 / times["loop"],
                "speedup": times["loop"] / times["batched"],
            }
        )
    return rows


def values_vs_cpu(device: torch.device, sizes: dict) -> float:
    """The largest relative difference of the engine's losses on `device` and on the CPU."""
    model, subspace, (x, y), _ = _surface_problem(
        sizes["surface_model"], min(sizes["surface_samples"], 256), torch.device("cpu")
    )
    coords = torch.tensor([[0.0, 0.0], [0.5, -0.3]], dtype=torch.float64)
    options = EngineConfig(batch_size=sizes["surface_batch"], strategy="sequential")
    cpu = evaluate_points(model, subspace, coords, {"t": (x, y)}, options)["t"].loss
    moved = subspace.to(device)
    here = evaluate_points(
        model.to(device), moved, coords, {"t": (x.to(device), y.to(device))}, options
    )["t"].loss
    return float(abs(here - cpu).max() / abs(cpu).max())


def _print_surface(rows: list[dict], paper: str | None) -> None:
    head = f"{paper:>14}" if paper else ""
    print(
        f"   {'strategy':<34}{'precision':>10}{'points/s':>10}{'% fp32 peak':>13}"
        f"{head}{'err vs fp32':>13}"
    )
    for r in rows:
        hours = f"{r['paper_surface_hours']:>14.2f}" if paper else ""
        print(
            f"   {r['strategy']:<34}{r['precision']:>10}{r['points_per_s']:>10.2f}"
            f"{r['pct_of_fp32_peak']:>13.1f}{hours}{r['max_rel_err_vs_fp32']:>13.1e}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes (seconds on a CPU)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda:N")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    sizes = DRY if args.dry_run else FULL
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {device} ({name or platform.machine()}), torch {torch.__version__}")
    if device.type == "cpu" and not args.dry_run:
        print("no GPU here: the figures below are the CPU's")
    start = time.perf_counter()
    figures = {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "dry_run": args.dry_run,
        "sizes": sizes,
    }

    def save(**section: object) -> None:
        """The figures so far, rewritten after each section (a run cut short keeps them)."""
        figures.update(section, seconds=time.perf_counter() - start)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")

    peaks = matmul_peaks(device, sizes["matmul_n"])
    save(matmul_tflops=peaks)
    print("\n1. matmul peak, TFLOP/s: " + ", ".join(f"{k} {v:.2f}" for k, v in peaks.items()))

    problem = _surface_problem(sizes["surface_model"], sizes["surface_samples"], device)
    surface = surface_engine(device, sizes, peaks["fp32"], problem)
    save(surface=surface)
    print(
        f"\n2. surface engine, {sizes['surface_model']} at 3×32×32, "
        f"{sizes['surface_samples']} samples, {sizes['surface_points']} points"
    )
    _print_surface(surface, "51×51×50k, h")

    problem = _lm_problem(sizes["lm_samples"], sizes["lm_context"], device)
    lm = surface_engine(device, sizes, peaks["fp32"], problem, loss="lm")
    save(surface_lm=lm)
    print(
        f"\n2b. the transformer workload: gpt_tiny, {sizes['lm_samples']} windows of "
        f"{sizes['lm_context']} tokens, lm loss, {sizes['surface_points']} points"
    )
    _print_surface(lm, None)

    mpo = mpo_step(device, sizes)
    save(mpo=mpo)
    print(
        f"\n3. MPO step at 1×28×28, {sizes['mpo_cells']} + {sizes['mpo_cells']} cells, "
        f"batch {sizes['mpo_batch']} (goal: batched ≥ 10× the loop)"
    )
    for r in mpo:
        print(
            f"   {r['model']:<12} batched {r['batched_steps_per_s']:.2f} steps/s, loop "
            f"{r['loop_steps_per_s']:.2f} steps/s: {r['speedup']:.1f}×"
        )

    diff = values_vs_cpu(device, sizes)
    save(max_rel_diff_vs_cpu=diff)
    print(f"\n4. values vs the CPU path: max relative difference {diff:.2e}")
    print(f"\ntotal: {figures['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
