"""Linear mode connectivity of gpt_tiny on the embedded corpus: the loss barrier between two nets
trained from different seeds vs between two fine-tunes of one shared pre-trained net on two
halves of the corpus (Neyshabur et al. 2020 report a high barrier for the first, a low one for
the second). Resumable: every trained net and every measured pair is written to --out as it is
done, and a rerun skips what is there.

The design, fixed before any run (issue 26, item 6):
- data: dataset=text (landscape_hpc/corpus.py), context 64, split seed 0, test_fraction 0.1;
  TRAIN_WINDOWS windows drawn (seed 0) from the training documents for every from-scratch and
  pre-training run; the training documents cut in two halves by document (even / odd position in
  their sorted list), HALF_WINDOWS windows drawn from each for the fine-tunes; the barrier
  measured on EVAL_WINDOWS windows of the validation documents (primary endpoint) and of the
  pre-training windows (secondary). The test split is not read.
- model: gpt_tiny (depth 2, width 64, 4 heads: 120k parameters), adam, weight decay 0, batch 64.
- scratch pair i: nets with seeds 2i and 2i+1 (init and shuffling), EPOCHS epochs at LR.
- fine-tune pair i: one net pre-trained with seed 100+i as a scratch net is, then a copy
  fine-tuned on each half for FT_EPOCHS epochs at FT_LR (shuffle seeds 200+i, 300+i).
- barrier (Frankle et al. 2020): max over t in [0, 1] (GRID_T points) of
  L(t) − ((1−t)L(0) + tL(1)), from lh.interpolate.
- N_PAIRS pairs per condition; per condition the mean and a 95% t interval; scratch − fine-tune
  by Welch's t-test, with the smallest difference the design detects at 80% power (two-sided
  α = 0.05, from the observed standard deviations).

    python scripts/lm_barrier.py --out docs/lm_barrier            # everything, resumable
    python scripts/lm_barrier.py --out docs/lm_barrier --report   # the table from what is done
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import landscape_hpc as lh
from landscape_hpc.config.common import DatasetConfig, ModelConfig
from landscape_hpc.config.train import TrainConfig
from landscape_hpc.corpus import VOCAB, corpus_files, split_documents, windows
from landscape_hpc.models import build_model
from landscape_hpc.stats import mean_interval, welch_difference
from landscape_hpc.train import train

CONTEXT = 64
TEST_FRACTION = 0.1
TRAIN_WINDOWS = 6000
HALF_WINDOWS = 2000
EVAL_WINDOWS = 1000
EPOCHS = 2
LR = 3e-3
FT_EPOCHS = 1
FT_LR = 1e-3
BATCH = 64
GRID_T = 11
N_PAIRS = 4


def corpus_windows() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The runs' data: pre-training windows, the two halves, validation (module docstring)."""
    files = corpus_files()
    docs = split_documents(len(files), 0, TEST_FRACTION, None)

    def drawn(indices: list[int], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        pieces = [windows(files[i].read_bytes(), CONTEXT) for i in indices]
        inputs = torch.cat([p[0] for p in pieces])  # (N, T)
        labels = torch.cat([p[1] for p in pieces])  # (N, T)
        pick = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))[:n]
        return inputs[pick], labels[pick]

    train_docs = docs["train"]
    return {
        "train": drawn(train_docs, TRAIN_WINDOWS, 0),
        "half_a": drawn(train_docs[0::2], HALF_WINDOWS, 1),
        "half_b": drawn(train_docs[1::2], HALF_WINDOWS, 2),
        "validation": drawn(docs["validation"], EVAL_WINDOWS, 3),
    }


def trained(
    out: Path, name: str, data: dict, seed: int, split: str, epochs: int, lr: float, start=None
) -> torch.nn.Module:
    """The net `name`, trained (and saved as out/nets/name.pt) unless it is there already."""
    path = out / "nets" / f"{name}.pt"
    model = (
        copy.deepcopy(start)
        if start is not None
        else build_model(ModelConfig(name="gpt_tiny", init_seed=seed), (CONTEXT,), VOCAB)
    )
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    cfg = TrainConfig(
        model=ModelConfig(name="gpt_tiny", init_seed=seed),
        dataset=DatasetConfig(name="text", context=CONTEXT),
        loss="lm",
        optimizer="adam",
        lr=lr,
        weight_decay=0.0,
        batch_size=BATCH,
        epochs=epochs,
        seed=seed,
        save_every=0,
        device="cpu",
    )
    splits = {
        "train": _split(data[split]),
        "test": _split(data["validation"]),
        "validation": _split(data["validation"]),
    }
    model.train()
    started = time.perf_counter()
    train(model, splits, cfg, out / "runs" / name)
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    print(f"{name}: trained in {time.perf_counter() - started:.0f} s", flush=True)
    return model


def _split(pair: tuple[torch.Tensor, torch.Tensor]):
    from landscape_hpc.data import Split

    return Split(*pair)


def barrier(out: Path, name: str, a, b, data: dict) -> dict:
    """The pair's barrier on validation and pre-training windows (out/pairs/name.json)."""
    path = out / "pairs" / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    evaluated = {
        "validation": data["validation"],
        "train": tuple(x[:EVAL_WINDOWS] for x in data["train"]),
    }
    ds = lh.interpolate(a, b, evaluated, t=(0.0, 1.0, GRID_T), loss="lm", progress=False)
    row = {
        "pair": name,
        **{f"barrier_{s}": float(ds.attrs[f"barrier_{s}"]) for s in evaluated},
        **{f"barrier_t_{s}": float(ds.attrs[f"barrier_t_{s}"]) for s in evaluated},
        "loss_validation": [float(v) for v in ds["validation_loss"].values],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    print(f"{name}: barrier {row['barrier_validation']:.4f} (validation)", flush=True)
    return row


def run(out: Path) -> None:
    data = corpus_windows()
    for i in range(N_PAIRS):
        a = trained(out, f"scratch_{2 * i}", data, 2 * i, "train", EPOCHS, LR)
        b = trained(out, f"scratch_{2 * i + 1}", data, 2 * i + 1, "train", EPOCHS, LR)
        barrier(out, f"scratch_{i}", a, b, data)
        base = trained(out, f"pretrained_{i}", data, 100 + i, "train", EPOCHS, LR)
        fa = trained(out, f"finetune_{i}_a", data, 200 + i, "half_a", FT_EPOCHS, FT_LR, base)
        fb = trained(out, f"finetune_{i}_b", data, 300 + i, "half_b", FT_EPOCHS, FT_LR, base)
        barrier(out, f"finetune_{i}", fa, fb, data)


def report(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((out / "pairs").glob("*.json"))]
    lines = [
        f"pairs done: {len(rows)} of {2 * N_PAIRS}",
        "",
        "| condition | split | pairs | mean barrier (nats/token) | 95% CI |",
        "|---|---|---|---|---|",
    ]
    groups = {}
    for kind in ("scratch", "finetune"):
        for split in ("validation", "train"):
            v = np.array([r[f"barrier_{split}"] for r in rows if r["pair"].startswith(kind)])
            groups[kind, split] = v
            if len(v):
                m, lo, hi = mean_interval(v)
                lines.append(f"| {kind} | {split} | {len(v)} | {m:.4f} | [{lo:.4f}, {hi:.4f}] |")
    lines += [
        "",
        "Descriptive, not an endpoint: the validation loss at t = 0.5 minus the mean of the ends",
        "(negative: the midpoint is below the chord).",
        "",
        "| pair | barrier (validation) | at t | L(0) | L(0.5) | L(1) | midpoint − chord |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        curve = r["loss_validation"]
        ends, mid = (curve[0] + curve[-1]) / 2, curve[len(curve) // 2]
        lines.append(
            f"| {r['pair']} | {r['barrier_validation']:.4f} | {r['barrier_t_validation']:.1f} | "
            f"{curve[0]:.3f} | {mid:.3f} | {curve[-1]:.3f} | {mid - ends:+.4f} |"
        )
    s, f = groups["scratch", "validation"], groups["finetune", "validation"]
    if len(s) >= 2 and len(f) >= 2:
        w = welch_difference(s, f)
        lines += [
            "",
            f"validation, scratch − fine-tune: {w.diff:.4f} nats/token, 95% CI "
            f"[{w.lo:.4f}, {w.hi:.4f}], Welch t = {w.t:.2f}, "
            f"df = {w.df:.1f}, p = {w.p:.3g}; smallest difference detectable at 80% "
            f"power: {w.mdd:.4f}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/lm_barrier"))
    parser.add_argument("--report", action="store_true", help="only the table from what is done")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not args.report:
        run(args.out)
    text = report(args.out)
    (args.out / "report.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
