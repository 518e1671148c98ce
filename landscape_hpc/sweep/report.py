"""The sweep's result, whichever route ran it: one row per job (summary.csv), the table per
(model, fill_prob) and the figure of the paper's figure 4 (bn_sweep.png).

    python -m landscape_hpc.sweep report <sweep.h5 | folder with sweep.h5 | multirun folder>

A multirun folder (python -m landscape_hpc.mpo -m +experiment=bn_sweep) is read through the
metrics.json of each run below it; a sweep file through its job groups.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from landscape_hpc.errors import USER_ERROR_EXIT, UserError

SPLITS = ("train", "test")
METRICS = ("acc_low", "acc_high", "acc_gap", "loss_low", "loss_high")
COLUMNS = (
    ["model", "bn", "fill_prob", "seed", "status"]
    + [f"{s}_{m}" for s in SPLITS for m in METRICS]
    + ["steps", "seconds", "host", "rank", "reason"]
)
SUMMARY_CSV = "summary.csv"
FIGURE = "bn_sweep.png"


def rows_from_sweep_file(path: str | Path) -> list[dict[str, Any]]:
    from landscape_hpc.sweep.file import read_jobs

    return sorted(read_jobs(path), key=_order)


def rows_from_runs(folder: str | Path) -> list[dict[str, Any]]:
    """One row per metrics.json below `folder` (runs of python -m landscape_hpc.mpo)."""
    rows = []
    for path in sorted(Path(folder).rglob("metrics.json")):
        m = json.loads(path.read_text())
        job = m.get("job")
        if job is None or job.get("fill_prob") is None:
            continue  # not a random-mask run of this version: nothing to place in the table
        row: dict[str, Any] = {
            "model": job["model"],
            "bn": bool(job["bn"]),
            "fill_prob": float(job["fill_prob"]),
            "seed": int(job["seed"]),
            "status": "done",
        }
        for split in SPLITS:
            for col in METRICS:
                row[f"{split}_{col}"] = float(m[split][col])
        row.update(
            steps=int(m["steps"]),
            seconds=float(m["wall_seconds"]),
            host=job.get("host", ""),
            rank=int(job.get("rank", 0)),
            reason="",
        )
        rows.append(row)
    return sorted(rows, key=_order)


def _order(row: dict[str, Any]) -> tuple:
    return (row["model"], row["fill_prob"], row["seed"])


def load_rows(path: str | Path) -> tuple[list[dict[str, Any]], Path]:
    """Rows from a sweep file, a folder holding sweep.h5, or a multirun folder; and the folder
    the outputs go to. A UserError when there is nothing to report."""
    path = Path(path)
    if path.is_file():
        try:
            return rows_from_sweep_file(path), path.parent
        except (OSError, KeyError):
            raise UserError(f"{path} is not a sweep file (no jobs/ group)") from None
    if not path.is_dir():
        raise UserError(f"{path} does not exist; give a sweep file or a run folder")
    if (path / "sweep.h5").is_file():
        return rows_from_sweep_file(path / "sweep.h5"), path
    rows = rows_from_runs(path)
    if not rows:
        raise UserError(
            f"{path} holds no sweep.h5 and no metrics.json of random-mask MPO runs; point it at "
            "the sweep's output folder or the multirun folder"
        )
    return rows, path


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row[k]) for k in COLUMNS})
    return path


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, fill_prob) over the done jobs: n, mean and std over seeds of the test
    acc_gap, the mean test acc_low and acc_high, and how many jobs failed."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["fill_prob"])].append(row)
    table = []
    for (model, fill), members in sorted(groups.items()):
        done = [r for r in members if r["status"] == "done"]
        gap = np.array([r["test_acc_gap"] for r in done])
        table.append(
            {
                "model": model,
                "bn": any(r["bn"] for r in members),
                "fill_prob": fill,
                "n": len(done),
                "failed": sum(r["status"] == "failed" for r in members),
                "gap_mean": float(gap.mean()) if len(gap) else math.nan,
                "gap_std": float(gap.std()) if len(gap) else math.nan,
                "acc_low": _mean(done, "test_acc_low"),
                "acc_high": _mean(done, "test_acc_high"),
            }
        )
    return table


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in rows])) if rows else math.nan


def format_table(table: list[dict[str, Any]]) -> str:
    lines = [
        f"{'model':<14} {'bn':<3} {'fill':>5} {'n':>3} {'failed':>6} "
        f"{'test acc_gap':>16} {'acc_low':>8} {'acc_high':>8}"
    ]
    for t in table:
        gap = f"{t['gap_mean']:6.1f} ± {t['gap_std']:4.1f}"
        lines.append(
            f"{t['model']:<14} {'yes' if t['bn'] else 'no':<3} {t['fill_prob']:>5.2f} "
            f"{t['n']:>3} {t['failed']:>6} {gap:>16} {t['acc_low']:8.1f} {t['acc_high']:8.1f}"
        )
    return "\n".join(lines)


def plot_sweep(table: list[dict[str, Any]], path: str | Path) -> Path:
    """The paper's figure 4: (a) test acc_gap vs fill_prob, mean ± std over seeds, one line per
    net; (b) mean test accuracy in low-loss (solid) and high-loss (dotted) cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_gap, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    models = sorted({t["model"] for t in table})
    for i, model in enumerate(models):
        rows = [t for t in table if t["model"] == model and t["n"] > 0]
        fill = np.array([t["fill_prob"] for t in rows])
        label = f"{model} ({'with' if rows and rows[0]['bn'] else 'no'} BN)"
        color = f"C{i}"
        mean = np.array([t["gap_mean"] for t in rows])
        std = np.array([t["gap_std"] for t in rows])
        ax_gap.plot(fill, mean, "o-", color=color, label=label)
        ax_gap.fill_between(fill, mean - std, mean + std, color=color, alpha=0.2)
        ax_acc.plot(fill, [t["acc_low"] for t in rows], "o-", color=color, label=f"{label}, low")
        ax_acc.plot(fill, [t["acc_high"] for t in rows], "o:", color=color, label=f"{label}, high")
    ax_gap.set(
        xlabel="fill probability (share of low-loss cells)",
        ylabel="test acc_gap (points)",
        title="(a) accuracy gap, mean ± std over seeds",
    )
    ax_acc.set(
        xlabel="fill probability (share of low-loss cells)",
        ylabel="test accuracy (%)",
        title="(b) low-loss cells (solid), high-loss cells (dotted)",
    )
    for ax in (ax_gap, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(rows: list[dict[str, Any]], folder: str | Path) -> list[Path]:
    """summary.csv and bn_sweep.png into folder; prints the aggregated table."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = aggregate(rows)
    print(format_table(table), flush=True)
    paths = [write_csv(rows, folder / SUMMARY_CSV)]
    if any(t["n"] for t in table):
        paths.append(plot_sweep(table, folder / FIGURE))
    return paths


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m landscape_hpc.sweep report",
        description="Gather a sweep into summary.csv and bn_sweep.png and print its table.",
    )
    parser.add_argument("path", help="sweep file, its folder, or a Hydra multirun folder")
    parser.add_argument("--out", help="folder for summary.csv and bn_sweep.png (default: path's)")
    args = parser.parse_args(argv)
    try:
        rows, folder = load_rows(args.path)
        for p in write_outputs(rows, args.out or folder):
            print(f"wrote {p}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
