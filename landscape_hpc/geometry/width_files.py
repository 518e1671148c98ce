"""The width command's CSV files: width.csv (one row per optimum and ray), width_curves.csv
(the loss and accuracy along every ray) and width_nets.csv (the means over nets,
width_nets.py). Written through the csv module: a label or an optimum's path holding a comma
or a quote is quoted, so every reader sees the same columns."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from landscape_hpc.geometry import width_nets

WIDTH_COLUMNS = (
    "label", "optimum", "ray", "width", "crossed", "level", "loss_at_optimum", "max_loss",
    "relative_width", "angle_deg", "optimum_norm",
)  # fmt: skip


def write_width(result: Any, out_dir: Path) -> list[Path]:
    """The three files of a width.WidthResult (not imported here: width.py imports this)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "width.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(WIDTH_COLUMNS)
        for o, label in enumerate(result.labels):
            for i in range(result.widths.shape[1]):
                values = (
                    result.widths[o, i], int(result.crossed[o, i]), result.levels[o],
                    result.losses[o, i, 0], np.nanmax(result.losses[o, i]),
                    result.relative[o, i], result.angles[o, i], result.norms[o],
                )  # fmt: skip
                writer.writerow([label, result.optima[o], i, *(f"{v:.6g}" for v in values)])
    curves = out_dir / "width_curves.csv"
    with open(curves, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "ray", "distance", "loss", "acc"])
        for o, label in enumerate(result.labels):
            for i in range(result.losses.shape[1]):
                for r, loss, acc in zip(result.distances, result.losses[o, i], result.accs[o, i]):
                    writer.writerow([label, i, f"{r:.6g}", f"{loss:.6g}", f"{acc:.6g}"])
    nets = width_nets.write_csv(result.over_nets(), out_dir / "width_nets.csv")
    return [table, curves, nets]
