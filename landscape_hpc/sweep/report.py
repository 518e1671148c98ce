"""The sweep's result, whichever route ran it: one row per job (summary.csv), the table per
(model, fill_prob), the paper's figure 4 (bn_sweep.png) and the convergence curves of every job
(bn_sweep_history.png).

Two accuracy gaps are reported side by side: over the *trained* (boundary) cells, the numbers of
the paper's figure 4 as its code (loss-patterns) computes them, and over *all* cells of the mask.
Beside them (mpo/scores.py): the gap over the random interior of framed masks alone (the outer
ring and frame are the same at every fill) and the pattern score, the AUC of −loss against the
mask minus the AUC of the radial prior −√(α² + β²), what any plane gives for free.
Failed and unconverged jobs are rows like the others (never dropped); the table counts them.

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

from landscape_hpc.cli import exit_status
from landscape_hpc.errors import UserError
from landscape_hpc.paths import require_regular
from landscape_hpc.sweep.compare import SCORES, compare, format_comparison, write_comparison

SPLITS = ("train", "test")
#: mpo/scores.py METRIC_COLUMNS (not imported: the report starts without torch); a file or
#: metrics.json made before the scores reads NaN for them
METRICS = tuple(
    f"{prefix}{name}"
    for prefix in ("", "trained_")
    for name in ("acc_low", "acc_high", "acc_gap", "loss_low", "loss_high")
) + ("interior_acc_gap", "trained_interior_acc_gap", "auc_loss", "auc_radial", "pattern_score")
TIMES = ("seconds", "train_seconds", "heldout_seconds", "eval_seconds")
COLUMNS = (
    ["model", "bn", "fill_prob", "seed", "status", "converged", "steps"]
    + [f"{s}_{m}" for s in SPLITS for m in METRICS]
    + [*TIMES, "host", "rank", "reason"]
)
SUMMARY_CSV = "summary.csv"
COMPARE_CSV = "compare.csv"  # BN − no BN per fill and pooled (sweep/compare.py)
FIGURE = "bn_sweep.png"
HISTORY_FIGURE = "bn_sweep_history.png"


def rows_from_sweep_file(path: str | Path) -> list[dict[str, Any]]:
    from landscape_hpc.files.sweep import read_jobs

    return sorted(read_jobs(path), key=_order)


def rows_from_runs(folder: str | Path) -> list[dict[str, Any]]:
    """One row per metrics.json below `folder` (runs of python -m landscape_hpc.mpo), with the
    history.csv beside it."""
    from landscape_hpc.mpo.convergence import HISTORY_COLUMNS, read_history_csv

    rows = []
    for path in sorted(Path(folder).rglob("metrics.json")):
        try:
            row = _row_from_metrics(path, HISTORY_COLUMNS, read_history_csv)
        except UserError:  # already says what is wrong (a ValueError too)
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # json's are ValueErrors
            reason = str(err).splitlines()[0] if str(err) else "malformed"
            raise UserError(
                f"{path} is not a metrics.json of python -m landscape_hpc.mpo "
                f"({type(err).__name__}: {reason}); remove it or rerun that job"
            ) from None
        if row is not None:
            rows.append(row)
    return sorted(rows, key=_order)


def _row_from_metrics(path: Path, history_columns: Any, read_history_csv: Any) -> Any:
    """The table row of one run's metrics.json; None for a run that is not a random-mask one."""
    require_regular(path)  # a FIFO would block the read forever
    m = json.loads(path.read_text())
    job = m.get("job")
    if job is None or job.get("fill_prob") is None:
        return None  # not a random-mask run of this version: nothing to place in the table
    fill = float(job["fill_prob"])
    if not 0.0 < fill < 1.0:  # NaN and inf too (json reads NaN, Infinity)
        raise UserError(
            f"{path}: job.fill_prob={fill} is not a probability in (0, 1); the file was edited "
            "or is not a metrics.json of python -m landscape_hpc.mpo: remove it or rerun that job"
        )
    row: dict[str, Any] = {
        "model": job["model"],
        "bn": bool(job["bn"]),
        "fill_prob": fill,
        "seed": int(job["seed"]),
        "status": "done",
        "converged": bool(m.get("converged", False)),
    }
    for split in SPLITS:
        for col in METRICS:
            row[f"{split}_{col}"] = float(m[split].get(col, math.nan))
    history = read_history_csv(path.parent / "history.csv")
    row.update(
        steps=int(m["steps"]),
        seconds=float(m["wall_seconds"]),
        train_seconds=float(m.get("train_seconds", math.nan)),
        heldout_seconds=float(m.get("heldout_seconds", math.nan)),
        eval_seconds=float(m.get("eval_seconds", math.nan)),
        host=job.get("host", ""),
        rank=int(job.get("rank", 0)),
        reason="",
        history=np.zeros((0, len(history_columns))) if history is None else history,
    )
    return row


def _order(row: dict[str, Any]) -> tuple:
    return (row["model"], row["fill_prob"], row["seed"])


def load_rows(path: str | Path) -> tuple[list[dict[str, Any]], Path]:
    """Rows from a sweep file, a folder holding sweep.h5, or a multirun folder; and the folder
    the outputs go to. A UserError when there is nothing to report."""
    path = Path(path)
    if path.is_file():
        return _sweep_rows(path), path.parent
    if not path.is_dir():
        raise UserError(f"{path} does not exist; give a sweep file or a run folder")
    if (path / "sweep.h5").is_file():
        return _sweep_rows(path / "sweep.h5"), path
    rows = rows_from_runs(path)
    if not rows:
        raise UserError(
            f"{path} holds no sweep.h5 and no metrics.json of random-mask MPO runs; point it at "
            "the sweep's output folder or the multirun folder"
        )
    return rows, path


def _sweep_rows(path: Path) -> list[dict[str, Any]]:
    try:
        return rows_from_sweep_file(path)
    except UserError:  # already says what is wrong (a ValueError too)
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{path} is not a readable sweep file (no jobs/ group, or damaged: {reason}); "
            "point the report at an intact sweep.h5 or rerun the sweep to remake it"
        ) from None


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
    """Per (model, fill_prob) over the done jobs: n, how many converged and failed, mean and std
    (ddof=1, over seeds) of the test acc_gap over trained cells (`gap_*`, the paper code's) and
    over all cells (`gap_all_*`), of the interior-only gap of framed masks (`interior_*`) and
    of the pattern score (`score_*`: AUC of −loss minus the radial prior's), and the mean test
    acc_low / acc_high both ways."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], row["fill_prob"])].append(row)
    table = []
    for (model, fill), members in sorted(groups.items()):
        done = [r for r in members if r["status"] == "done"]
        entry: dict[str, Any] = {
            "model": model,
            # known once a job of the net ran (a pending job's group does not say yet)
            "bn": any(r["bn"] for r in done) if done else None,
            "fill_prob": fill,
            "n": len(done),
            "converged": sum(bool(r.get("converged")) for r in done),
            "failed": sum(r["status"] == "failed" for r in members),
        }
        for name, prefix in (("gap", "trained_"), ("gap_all", "")):
            mean, std = _mean_std([r[f"test_{prefix}acc_gap"] for r in done])
            entry[f"{name}_mean"], entry[f"{name}_std"] = mean, std
        for name, column in (("interior", "interior_acc_gap"), ("score", "pattern_score")):
            mean, std = _mean_std([r.get(f"test_{column}", math.nan) for r in done])
            entry[f"{name}_mean"], entry[f"{name}_std"] = mean, std
        for name, prefix in (("", "trained_"), ("_all", "")):
            entry[f"acc_low{name}"] = _mean_std([r[f"test_{prefix}acc_low"] for r in done])[0]
            entry[f"acc_high{name}"] = _mean_std([r[f"test_{prefix}acc_high"] for r in done])[0]
        table.append(entry)
    return table


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the finite values; NaN where there are too few."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    mean = float(finite.mean()) if len(finite) else math.nan
    std = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
    return mean, std


def format_table(table: list[dict[str, Any]]) -> str:
    lines = [
        f"{'model':<11} {'bn':<3} {'fill':>4} {'n':>2} {'conv':>4} {'fail':>4}  "
        f"{'gap, trained cells':>18} {'low':>5} {'high':>5}  "
        f"{'gap, all cells':>15} {'low':>5} {'high':>5}  "
        f"{'gap, interior':>13}  {'pattern score':>15}"
    ]
    for t in table:
        lines.append(
            f"{t['model']:<11} {_yes_no(t['bn']):<3} {t['fill_prob']:>4.2f} "
            f"{t['n']:>2} {t['converged']:>4} {t['failed']:>4}  "
            f"{_pm(t['gap_mean'], t['gap_std']):>18} {t['acc_low']:5.1f} {t['acc_high']:5.1f}  "
            f"{_pm(t['gap_all_mean'], t['gap_all_std']):>15} "
            f"{t['acc_low_all']:5.1f} {t['acc_high_all']:5.1f}  "
            f"{_pm(t['interior_mean'], t['interior_std']):>13}  "
            f"{_pm(t['score_mean'], t['score_std'], 3):>15}"
        )
    return "\n".join(lines)


def _yes_no(flag: bool | None) -> str:
    return "?" if flag is None else ("yes" if flag else "no")


def _pm(mean: float, std: float, digits: int = 1) -> str:
    return f"{mean:5.{digits}f} ± {std:4.{digits}f}"


def plot_sweep(table: list[dict[str, Any]], path: str | Path) -> Path:
    """The paper's figure 4: (a) test acc_gap vs fill_prob, mean ± std over seeds, one colour
    per net (solid: trained cells, the paper code's metric; dashed: all cells); (b) mean test
    accuracy of the trained low-loss (solid) and high-loss (dotted) cells."""
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
        for name, style, note in (("gap", "o-", "trained cells"), ("gap_all", "s--", "all cells")):
            mean = np.array([t[f"{name}_mean"] for t in rows])
            std = np.nan_to_num(np.array([t[f"{name}_std"] for t in rows]))
            ax_gap.plot(fill, mean, style, color=color, label=f"{label}, {note}")
            if name == "gap":
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
        title="(b) trained low-loss (solid) and high-loss (dotted) cells",
    )
    for ax in (ax_gap, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_histories(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Held-out acc_gap over trained cells vs step, one line per job, one panel per net,
    coloured by fill probability; a dot where a converged fit stopped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fills = sorted({r["fill_prob"] for r in rows})
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for r in rows:
            h = r.get("history")
            if r["model"] != model or h is None or not len(h):
                continue
            color = cmap(fills.index(r["fill_prob"]) / max(len(fills) - 1, 1))
            ax.plot(h[:, 0], h[:, 1], color=color, lw=1, alpha=0.8)
            if r.get("converged"):
                ax.plot(h[-1, 0], h[-1, 1], "o", color=color, ms=3)
        ax.set(title=model, xlabel="step", ylabel="held-out acc_gap, trained cells (points)")
        ax.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], color=cmap(i / max(len(fills) - 1, 1)), label=f"fill {f:g}")
        for i, f in enumerate(fills)
    ]
    axes[0][-1].legend(handles=handles, fontsize=7, title="dot: converged")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    rows: list[dict[str, Any]], folder: str | Path, score: str = "gap", margin: float | None = None
) -> list[Path]:
    """summary.csv, compare.csv and bn_sweep.png into folder; prints the aggregated table and
    BN − no BN of `score` (sweep/compare.py; TOST where a margin is given)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = aggregate(rows)
    print(format_table(table), flush=True)
    comparison = compare(rows, score, margin)
    print(format_comparison(comparison), flush=True)
    paths = [
        write_csv(rows, folder / SUMMARY_CSV),
        write_comparison(comparison, folder / COMPARE_CSV),
    ]
    if any(t["n"] for t in table):
        paths.append(plot_sweep(table, folder / FIGURE))
    if any(len(r.get("history", ())) for r in rows):
        paths.append(plot_histories(rows, folder / HISTORY_FIGURE))
    return paths


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m landscape_hpc.sweep report",
        description="Gather a sweep into summary.csv, bn_sweep.png, bn_sweep_history.png and "
        "print its table.",
    )
    parser.add_argument("path", help="sweep file, its folder, or a Hydra multirun folder")
    parser.add_argument("--out", help="folder for summary.csv and bn_sweep.png (default: path's)")
    parser.add_argument(
        "--score", choices=sorted(SCORES), default="gap", help="what BN − no BN compares"
    )
    parser.add_argument(
        "--margin",
        type=float,
        help="equivalence margin of the score, fixed before the run: adds a TOST per row",
    )
    args = parser.parse_args(argv)

    def body() -> None:
        if args.margin is not None and not (math.isfinite(args.margin) and args.margin > 0):
            raise UserError(f"--margin {args.margin}: give a positive number fixed in advance")
        rows, folder = load_rows(args.path)
        for p in write_outputs(rows, args.out or folder, args.score, args.margin):
            print(f"wrote {p}")

    status = exit_status(body)
    if status:
        sys.exit(status)
