"""Mode connectivity of small nets on the embedded digits data (issue 32): the loss barrier
between two independently trained nets along four paths: the straight line, the line after
permutation alignment (Ainsworth et al. 2022, lh.align), a trained quadratic Bézier curve
(Garipov et al. 2018, lh.curve) and the Fort & Jastrzebski (2019) tunnel (lh.tunnel).
Resumable: every measured pair is written to --out/pairs/<arch>_<i>.json as it is done, and a
rerun skips what is there.

The design, fixed before any run:
- data: dataset=digits (the embedded 1,797 8×8 images), split seed 0, test_fraction 0.2 (1,437
  train, 360 test). The digits protocol has no validation split; nothing here is selected or
  stopped on any split (fixed epochs, steps and rates), so the test split is only measured.
- architectures: the registry's mlp, hidden (64, 64) (8,970 parameters), and mpo_cnn (three 3×3
  convs 8, 32, 64 → 1024 → 128 → 10, no BN; 153,402). Both trained by the library's
  train_epoch in a plain loop: Adam, lr 1e-3, weight decay 0, batch 64, EPOCHS = 20 epochs, loss ce.
- pair i (i = 0 … N_PAIRS − 1) of an architecture: nets with seed 2i and 2i + 1, each the init
  seed (build_model's init_seed) and the shuffling seed of the training.
- paths, each evaluated on train and test at GRID_T = 21 points t ∈ [0, 1]:
  (a) line: lh.interpolate(a, b);
  (b) aligned line: lh.interpolate(a, lh.align(a, b)) (weight matching, seed 0);
  (c) curve: lh.curve(kind="bezier"), CURVE_STEPS = 500 steps of SGD (momentum 0.9) at lr
      CURVE_LR = 0.05, 128 samples a step, seed i: the library's defaults, Garipov et al.'s
      optimiser;
  (d) tunnel: lh.tunnel, 4 segments (3 points), TUNNEL_STEPS = 200 Adam steps at lr 1e-3 per
      point, 128 samples a step, n_dense = GRID_T (fewer segments and steps than the library's
      8 and 300, to fit the CPU budget; fixed from one net's training time, before any pair).
      lh.tunnel returns the loss along its path but no barrier number; its barrier is computed
      from that loss with the library's own definition (landscape_hpc/connectivity.py
      loss_barrier), as the other paths' are.
- barrier (Frankle et al. 2020): max over the points t of L(t) − ((1−t)L(0) + tL(1)), ≥ 0.
  Primary endpoint: the train-loss barrier (what the curve and tunnel are trained to lower, and
  Garipov et al.'s claim); secondary: the test-loss barrier.
- N_PAIRS = 4 pairs per architecture; per architecture and path the mean barrier with a 95%
  t interval; paired t-tests (scipy.stats.ttest_rel) line vs aligned line and line vs curve,
  with the smallest mean difference the paired design detects at 80% power (two-sided α = 0.05,
  from the observed standard deviation of the differences).

    python scripts/connectivity_study.py --out docs/connectivity            # resumable
    python scripts/connectivity_study.py --out docs/connectivity --report   # the table
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import landscape_hpc as lh
from landscape_hpc.config.common import DatasetConfig, ModelConfig
from landscape_hpc.connectivity import loss_barrier
from landscape_hpc.data import load_dataset
from landscape_hpc.models import build_model
from landscape_hpc.stats import mean_interval, paired_difference
from landscape_hpc.train import make_optimizer, train_epoch

SPLITS = ("train", "test")
PATHS = ("line", "aligned", "curve", "tunnel")


@dataclass(frozen=True)
class Design:
    """The study's fixed sizes (module docstring); a test shrinks them."""

    archs: dict[str, ModelConfig] = field(
        default_factory=lambda: {
            "mlp": ModelConfig(name="mlp", kwargs={"hidden": [64, 64]}),
            "mpo_cnn": ModelConfig(name="mpo_cnn"),
        }
    )
    n_pairs: int = 4
    epochs: int = 20
    lr: float = 1e-3
    batch: int = 64
    grid_t: int = 21
    curve_steps: int = 500
    curve_lr: float = 0.05
    tunnel_steps: int = 200
    tunnel_segments: int = 4


def digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The digits splits as (inputs, labels) pairs (split seed 0, test_fraction 0.2)."""
    splits = load_dataset(DatasetConfig(name="digits", seed=0, test_fraction=0.2))
    return {name: (s.inputs, s.labels) for name, s in splits.items() if name in SPLITS}


def trained(design: Design, arch: str, seed: int, data: dict) -> torch.nn.Module:
    """A net of `arch` with init and shuffling seed `seed`, trained for design.epochs."""
    from landscape_hpc.config.train import TrainConfig
    from landscape_hpc.data import Split

    base = design.archs[arch]
    cfg_model = ModelConfig(name=base.name, kwargs=dict(base.kwargs), init_seed=seed)
    inputs, labels = data["train"]
    model = build_model(cfg_model, tuple(inputs.shape[1:]), 10)
    cfg = TrainConfig(
        model=cfg_model,
        dataset=DatasetConfig(name="digits"),
        optimizer="adam",
        lr=design.lr,
        weight_decay=0.0,
        batch_size=design.batch,
        epochs=design.epochs,
        seed=seed,
        save_every=0,
        device="cpu",
    )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, cfg)
    split = Split(inputs, labels)
    for _ in range(design.epochs):
        train_epoch(model, split, optimizer, design.batch, generator, "ce")
    return model.eval()


def measure(design: Design, arch: str, i: int, data: dict) -> dict[str, Any]:
    """The four paths' barriers for pair i of `arch` (module docstring)."""
    started = time.perf_counter()
    a = trained(design, arch, 2 * i, data)
    b = trained(design, arch, 2 * i + 1, data)
    row: dict[str, Any] = {"arch": arch, "pair": i, "seeds": [2 * i, 2 * i + 1]}
    with torch.no_grad():
        for name, net in (("a", a), ("b", b)):
            for split in SPLITS:
                x, y = data[split]
                row[f"acc_{name}_{split}"] = float((net(x).argmax(1) == y).float().mean() * 100)
    row["train_s"] = time.perf_counter() - started
    t = (0.0, 1.0, design.grid_t)
    quiet = {"progress": False, "bn": "eval"}
    line = lh.interpolate(a, b, data, t=t, **quiet)
    b_aligned = lh.align(a, b, seed=0, inputs=data["test"][0])
    aligned = lh.interpolate(a, b_aligned, data, t=t, **quiet)
    curve = lh.curve(
        a, b, data, kind="bezier", steps=design.curve_steps, lr=design.curve_lr, t=t, seed=i,
        bn="eval",
    )  # fmt: skip
    tunnel = lh.tunnel(
        [a, b], data, n_segments=design.tunnel_segments, n_dense=design.grid_t,
        steps=design.tunnel_steps, seed=i,
    )  # fmt: skip
    for split in SPLITS:
        row[f"line_{split}"] = float(line.attrs[f"barrier_{split}"])
        row[f"aligned_{split}"] = float(aligned.attrs[f"barrier_{split}"])
        row[f"curve_{split}"] = float(curve.barriers[split]["curve"])
        row[f"curve_line_{split}"] = float(curve.barriers[split]["line"])
        row[f"tunnel_{split}"] = loss_barrier(tunnel.t, tunnel.metrics[split]["tunnel"][0])[0]
        row[f"tunnel_line_{split}"] = loss_barrier(tunnel.t, tunnel.metrics[split]["linear"][0])[0]
        row[f"loss_line_{split}"] = [float(v) for v in line[f"{split}_loss"].values]
        row[f"loss_aligned_{split}"] = [float(v) for v in aligned[f"{split}_loss"].values]
        row[f"loss_curve_{split}"] = [float(v) for v in curve.curve[f"{split}_loss"].values]
    row["align_objective"] = [float(v) for v in _objective(b_aligned)]
    row["wall_s"] = time.perf_counter() - started
    return row


def _objective(model: torch.nn.Module) -> tuple[float, float]:
    alignment = getattr(model, "alignment", None)
    before = getattr(alignment, "objective_before", math.nan)
    after = getattr(alignment, "objective_after", math.nan)
    return before, after


def run(out: Path, design: Design = Design()) -> list[dict[str, Any]]:
    """Measures every pair not yet in out/pairs (one JSON each) and returns all rows."""
    data = digits()
    rows = []
    for arch in design.archs:
        for i in range(design.n_pairs):
            path = out / "pairs" / f"{arch}_{i}.json"
            if path.exists():
                rows.append(json.loads(path.read_text()))
                continue
            row = measure(design, arch, i, data)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(row, indent=1))
            rows.append(row)
            print(
                f"{arch}_{i}: " + ", ".join(f"{p} {row[f'{p}_train']:.4f}" for p in PATHS)
                + f" (train barriers), {row['wall_s']:.0f} s", flush=True,
            )  # fmt: skip
    return rows


def align_restarts(out: Path, arch: str, i: int, seeds: list[int], design: Design = Design()):
    """Post hoc, not part of the design: pair i's line after lh.align with other search seeds
    (the order weight matching visits the groups in), to tell a poor local optimum of the
    matching from a property of the pair. Written to out/posthoc_align_<arch>_<i>.json."""
    data = digits()
    a = trained(design, arch, 2 * i, data)
    b = trained(design, arch, 2 * i + 1, data)
    rows = []
    for seed in seeds:
        aligned = lh.align(a, b, seed=seed, inputs=data["test"][0])
        ds = lh.interpolate(a, aligned, data, t=(0.0, 1.0, design.grid_t), progress=False)
        rows.append(
            {
                "align_seed": seed,
                "objective": [float(v) for v in _objective(aligned)],
                **{f"aligned_{s}": float(ds.attrs[f"barrier_{s}"]) for s in SPLITS},
            }
        )
        print(rows[-1], flush=True)
    (out / f"posthoc_align_{arch}_{i}.json").write_text(json.dumps(rows, indent=1))
    return rows


def report(out: Path, design: Design = Design()) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((out / "pairs").glob("*.json"))]
    lines = [f"pairs done: {len(rows)} of {len(design.archs) * design.n_pairs}", ""]
    for arch in design.archs:
        mine = sorted((r for r in rows if r["arch"] == arch), key=lambda r: r["pair"])
        if not mine:
            continue
        acc = np.array([[r[f"acc_{e}_test"] for e in "ab"] for r in mine])
        lines += [
            f"### {arch}: {len(mine)} pairs, end nets' test accuracy {acc.min():.1f}–"
            f"{acc.max():.1f}%, {sum(r['wall_s'] for r in mine):.0f} s",
            "",
            "| path | split | mean barrier (nats) | 95% CI | per pair |",
            "|---|---|---|---|---|",
        ]
        for split in SPLITS:
            for p in PATHS:
                v = np.array([r[f"{p}_{split}"] for r in mine])
                m, lo, hi = mean_interval(v)
                each = ", ".join(f"{x:.3f}" for x in v)
                lines.append(f"| {p} | {split} | {m:.4f} | [{lo:.4f}, {hi:.4f}] | {each} |")
        lines += [
            "",
            "| comparison | split | mean difference | 95% CI | t | p | MDD (80% power) |",
            "|---|---|---|---|---|---|---|",
        ]
        for split in SPLITS:
            line = np.array([r[f"line_{split}"] for r in mine])
            for other in ("aligned", "curve", "tunnel"):
                s = paired_difference(
                    line, np.array([r[f"{other}_{split}"] for r in mine])
                ).as_dict()
                lines.append(
                    f"| line − {other} | {split} | {s['diff']:.4f} | [{s['lo']:.4f}, "
                    f"{s['hi']:.4f}] | {s['t']:.2f} | {s['p']:.3g} | {s['mdd']:.4f} |"
                )
        lines.append("")
    lines.append(f"machine: {platform.machine()} {platform.processor() or ''}".rstrip())
    return "\n".join(lines)


def figure(out: Path, path: Path, design: Design = Design()) -> None:
    """Barriers per path (one dot per pair, the mean and its 95% CI), a panel per architecture
    and split."""
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted((out / "pairs").glob("*.json"))]
    archs = [a for a in design.archs if any(r["arch"] == a for r in rows)]
    fig, axes = plt.subplots(
        len(SPLITS), len(archs), figsize=(4 * len(archs), 3.2 * len(SPLITS)), squeeze=False
    )
    for j, arch in enumerate(archs):
        mine = [r for r in rows if r["arch"] == arch]
        for k, split in enumerate(SPLITS):
            ax = axes[k, j]
            for x, p in enumerate(PATHS):
                v = np.array([r[f"{p}_{split}"] for r in mine])
                m, lo, hi = mean_interval(v)
                ax.plot(x + np.linspace(-0.12, 0.12, len(v)), v, "o", color="0.6", ms=4)
                if math.isfinite(lo):
                    ax.errorbar(x + 0.25, m, yerr=[[m - lo], [hi - m]], fmt="s", color="C3",
                                capsize=3)  # fmt: skip
                else:
                    ax.plot(x + 0.25, m, "s", color="C3")
            ax.set_xticks(range(len(PATHS)), PATHS)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{arch}, {split} loss")
            ax.set_ylabel("barrier (nats)")
    fig.suptitle("loss barrier per path: pairs (grey), mean and 95% t interval (red)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/connectivity"))
    parser.add_argument("--report", action="store_true", help="only the table from what is done")
    parser.add_argument(
        "--align-restarts", metavar="ARCH:I", help="post hoc: pair I's alignment, seeds 0-4"
    )
    parser.add_argument("--figure", type=Path, help="also draw the barriers to this PNG")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.align_restarts:
        arch, i = args.align_restarts.split(":")
        align_restarts(args.out, arch, int(i), [0, 1, 2, 3, 4])
        return 0
    if not args.report:
        run(args.out)
    text = report(args.out)
    (args.out / "report.md").write_text(text + "\n")
    print(text)
    if args.figure is not None:
        figure(args.out, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
