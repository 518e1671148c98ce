"""Li et al. (2018), sec. 5 and appendices A–B, at the scale of this machine: do small batches
find flatter minima than large ones, with and without weight decay, under SGD and Adam, and is
that visible without filter normalisation? (issue 29, part 1; parts 3 and 4 from the same nets).
Resumable: every trained and measured net is written to --out/nets/<arm>_s<seed>.json as it is
done, and a rerun skips what is there.

The design, fixed before any run (docs/findings_li.md repeats it):
- data: dataset=digits (the embedded 1,797 8×8 images), split seed 0, test_fraction 0.2 (1,437
  train, 360 test). Training stops on the TRAIN loss only (below); the test split is only
  measured, never used to select or stop.
- net: the registry's mpo_cnn_bn (three 3×3 convs with BN, 200,370 parameters): BN, as
  Li et al.'s VGG-9, since the paper's argument about weight decay is a scale-invariance one.
- arms (2 × 2 × 2): batch SMALL_BATCH = 16 vs LARGE_BATCH = 1024 (the paper: 128 vs 8,192, a
  ratio of 64 on 50,000 images; here 64 on 1,437, the large batch 71% of the split);
  weight decay 0 vs 5e-4; SGD (momentum 0.9, lr 0.05) vs Adam (lr 1e-3). One lr per optimiser
  for both batch sizes, as the paper (no lr scaling).
- matched training loss: each net trains until its train loss over the whole split (eval mode)
  is at most TARGET_LOSS = 0.005, checked after every epoch (train target_train_loss), capped
  at MAX_EPOCHS epochs per batch size; a net that never reaches it is reported and left out of
  the matched comparisons (counted).
- SEEDS = 5 nets per arm (seeds 0–4: the init seed and the shuffling seed).
- sharpness (primary, fixed in advance): on N_DIRECTIONS = 10 filter-normalised random
  directions (seed DIRECTION_SEED), 1D train-loss curves over CURVE_X = [-1.5, 1.5], 61 points
  (lh.lines), on both sides the distance at which the train loss has risen by RISE = 0.1 nats
  above the minimum's (landscape_hpc.sharpness.rise_crossings: linear interpolation, a side
  not reaching it censored at 1.5), mean over the 20 (direction, side) pairs: the "width";
  larger is flatter. Secondary: the same at rise 1.0, and both with raw (unnormalised
  Gaussian, norm="none") directions over ±3× the first raw direction's rise-1.0 distance
  (found by bisection, lh.sharpness), 61 points.
- endpoints: (1) across all matched nets, Spearman's correlation of the filter-normalised width
  (rise 0.1) with the test error, with a 95% Fisher-z interval (the paper: flatter ⇔ lower
  error, so negative); the same for the raw width; (2) per (optimiser, weight decay), small − large
  batch of the width and of the test error: Welch's t-test, 95% interval and the smallest
  difference the design detects at 80% power; (3) appendix B: the share of variance of the first
  two PCA components of each training path (states every epoch; the paper: 40–90%), and the mean
  |cos| of 10 Gaussian directions with the path's end-to-start vector against √(2/(πn)).
- figures: 10 filter-normalised 1D curves per net (appendix A.4's repeatability), and one raw
  and one filter-normalised curve per arm (secs. 5, A.1–A.3).

    python scripts/findings_li.py --out docs/findings_li --runs runs/findings_li     # resumable
    python scripts/findings_li.py --out docs/findings_li --report          # tables, figures
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch

import landscape_hpc as lh
from landscape_hpc.config import TrainConfig
from landscape_hpc.config.common import DatasetConfig, ModelConfig
from landscape_hpc.problem import load_problem
from landscape_hpc.sharpness import rise_crossings
from landscape_hpc.train import train

MODEL = "mpo_cnn_bn"
SMALL_BATCH, LARGE_BATCH = 16, 1024
MAX_EPOCHS = {SMALL_BATCH: 100, LARGE_BATCH: 600}
WEIGHT_DECAYS = (0.0, 5e-4)
OPTIMIZERS = {"sgd": 0.05, "adam": 1e-3}  # name -> lr
TARGET_LOSS = 0.005
SEEDS = 5
N_DIRECTIONS = 10
DIRECTION_SEED = 12345
RISES = (0.1, 1.0)
RISE = 0.1  # the primary endpoint's
CURVE_X = (-1.5, 1.5, 61)  # the filter-normalised curves' axis (spacing 0.05)
N_COS = 10  # Gaussian directions against each path

#: Li et al. 2018, Table 1: VGG-9 on CIFAR-10, test error (%), batch 128 / 8,192 (as printed in
#: the paper; not re-checked against the PDF here, no network on this machine)
PAPER_TABLE_1 = {
    ("sgd", 0.0): (7.37, 11.07),
    ("sgd", 5e-4): (6.00, 10.19),
    ("adam", 0.0): (7.44, 10.91),
    ("adam", 5e-4): (7.80, 9.52),
}


@dataclass(frozen=True)
class Arm:
    optimizer: str
    weight_decay: float
    batch: int

    @property
    def name(self) -> str:
        return f"{self.optimizer}_wd{self.weight_decay:g}_b{self.batch}"


ARMS = [
    Arm(o, wd, b) for o, wd, b in product(OPTIMIZERS, WEIGHT_DECAYS, (SMALL_BATCH, LARGE_BATCH))
]


def _round(values: Any, digits: int = 6) -> Any:
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def measure_net(arm: Arm, seed: int, runs: Path) -> dict[str, Any]:
    """Trains one net of `arm` to the target and measures it (module docstring)."""
    dataset = DatasetConfig(name="digits")
    problem = load_problem(ModelConfig(name=MODEL, init_seed=seed), dataset, "cpu")
    model, splits = problem.model, problem.splits
    cfg = TrainConfig(
        model=ModelConfig(name=MODEL), dataset=dataset, optimizer=arm.optimizer,
        lr=OPTIMIZERS[arm.optimizer], weight_decay=arm.weight_decay, batch_size=arm.batch,
        epochs=MAX_EPOCHS[arm.batch], target_train_loss=TARGET_LOSS, seed=seed, save_every=1,
        out_dir=str(runs / f"{arm.name}_s{seed}"), device="cpu",
    )  # fmt: skip
    start = time.perf_counter()
    final = torch.load(train(model, splits, cfg, Path(cfg.out_dir)), weights_only=True)
    train_seconds = time.perf_counter() - start
    model.eval()
    data = {name: (s.inputs, s.labels) for name, s in splits.items()}
    out: dict[str, Any] = {
        "arm": arm.name, "optimizer": arm.optimizer, "weight_decay": arm.weight_decay,
        "batch": arm.batch, "seed": seed, "epochs": int(final["epoch"]),
        "reached_target": bool(final["train_loss"] <= TARGET_LOSS),
        "train_loss": float(final["train_loss"]), "test_loss": float(final["test_loss"]),
        "train_error": 100.0 - float(final["train_acc"]),
        "test_error": 100.0 - float(final["test_acc"]), "train_seconds": train_seconds,
        "weight_norm": float(torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters()))),
    }  # fmt: skip
    start = time.perf_counter()
    filt = lh.lines(model, data, n=N_DIRECTIONS, x=CURVE_X, seed=DIRECTION_SEED, progress=False)
    # the raw directions' scale differs per net: their axis spans 3x where the first one's train
    # loss has risen by the largest rise (bisection, lh.sharpness), so every curve crosses
    probe = lh.sharpness(model, data, rise=max(RISES), n=1, seed=DIRECTION_SEED, norm="none",
                         start=1e-4, tol=1e-5, progress=False)  # fmt: skip
    reach = 3 * float(probe.width.max())
    raw = lh.lines(model, data, n=N_DIRECTIONS, x=(-reach, reach, CURVE_X[2]), splits=["train"],
                   seed=DIRECTION_SEED, norm="none", progress=False)  # fmt: skip
    for norm, curves in (("filter", filt), ("none", raw)):
        widths, censored = {}, 0
        for rise in RISES:
            per_direction = []
            for i in range(N_DIRECTIONS):
                lo, hi = rise_crossings(curves.x.values, curves.train_loss[i].values, rise)
                per_direction.append([lo.distance, hi.distance])
                censored += lo.censored + hi.censored
            widths[str(rise)] = _round(per_direction)
        out[f"width_{norm}"], out[f"censored_{norm}"] = widths, censored
    out["curves_filter"] = {v: _round(filt[v].values, 5) for v in filt.data_vars}
    out["curve_raw"] = {"x": _round(raw.x.values, 8), "train_loss": _round(raw.train_loss[0], 5)}
    out["measure_seconds"] = time.perf_counter() - start
    out.update(trajectory(model, Path(cfg.out_dir), seed))
    return out


def trajectory(model: torch.nn.Module, run_dir: Path, seed: int) -> dict[str, Any]:
    """Appendix B: PCA of the path (every epoch's state) and random directions against it."""
    paths = sorted((run_dir / "checkpoints").glob("epoch_*.pt"))
    states = [torch.load(p, weights_only=True)["state_dict"] for p in paths]
    states.append(model.state_dict())
    out: dict[str, Any] = {"path_states": len(states)}
    if len(states) >= 3:
        _, path = lh.pca_directions(states, model, n=2)
        out["pca_variance"] = _round(path.explained_variance_ratio)
    keys = [k for k, p in model.named_parameters() if p.dim() > 1]  # ignore=biasbn's tensors
    flat = lambda st: torch.cat([st[k].reshape(-1).double() for k in keys])  # noqa: E731
    delta = flat(states[-1]) - flat(states[0])
    gen = torch.Generator().manual_seed(seed)
    cos = [float(torch.nn.functional.cosine_similarity(
        torch.randn(delta.shape, generator=gen, dtype=torch.float64), delta, dim=0))
        for _ in range(N_COS)]  # fmt: skip
    out["path_cos"] = _round(np.abs(cos))
    out["path_dim"] = int(delta.numel())
    return out


def run(out: Path, runs: Path, seeds: int) -> None:
    (out / "nets").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    logging.getLogger("landscape_hpc").setLevel(logging.WARNING)
    todo = [(arm, s) for s in range(seeds) for arm in ARMS]  # seed-major: arms fill evenly
    for i, (arm, seed) in enumerate(todo):
        path = out / "nets" / f"{arm.name}_s{seed}.json"
        if path.exists():
            continue
        result = measure_net(arm, seed, runs)
        result["machine"] = platform.platform()
        tmp = path.with_suffix(".partial")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
        print(
            f"[{i + 1}/{len(todo)}] {arm.name} s{seed}: {result['epochs']} epochs, "
            f"train loss {result['train_loss']:.4f}, test error {result['test_error']:.2f}%, "
            f"width {np.mean(result['width_filter'][str(RISE)]):.3f}, "
            f"{result['train_seconds'] + result['measure_seconds']:.0f} s",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/findings_li"))
    parser.add_argument("--runs", type=Path, default=Path("runs/findings_li"))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--report", action="store_true", help="the tables and figures")
    args = parser.parse_args(argv)
    if args.report:
        from findings_li_report import report  # scripts/findings_li_report.py

        report(args.out)
    else:
        run(args.out, args.runs, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
