"""Tunnel widths with error bars over trained nets, not rays (Fort & Jastrzebski 2019, sec. 4.4).

The rays from one net are many measurements of that one net: their spread says how the width
varies with the direction, not how it varies from one trained net to another. A setting (a
learning rate, a weight decay) measured on several nets trained with it is reported by the
mean over its nets with a t interval over nets, each net's rays averaged first
(stats.nested_mean_interval): n_nets − 1 degrees of freedom, whatever the number of rays. The
optima of one setting share a label (the width command's `labels=`, e.g.
labels=[lr0.1,lr0.1,lr0.1,lr0.01,lr0.01,lr0.01]); one net per label gives NaN bounds, and the
ray spread is then all there is (said as such).

Only rays that crossed the level count (a ray that never does has width ≥ r_max, a lower
bound); a net none of whose rays crossed is left out of its label's mean and counted apart.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from landscape_hpc.stats import nested_mean_interval

#: what the width is measured as: the Euclidean r, ‖r·d‖/‖θ*‖, the angle in degrees
MEASURES = ("width", "relative", "angle")


@dataclass(frozen=True)
class OverNets:
    """One label's width over its nets: the mean of the per-net means and its 95% t interval
    over nets [lo, hi] (NaN for one net), how many nets and crossed rays entered it, how many
    nets had no crossed ray (left out)."""

    label: str
    measure: str
    n_nets: int
    n_rays: int
    mean: float
    lo: float
    hi: float
    uncrossed_nets: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def labels_in_order(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(labels))


def over_nets(
    labels: list[str], values: np.ndarray, crossed: np.ndarray, measure: str = "width"
) -> list[OverNets]:
    """Per label (first-seen order), the mean over its nets of each net's mean over its crossed
    rays, with the t interval over nets. values, crossed: (O, n), one row per net (optimum)."""
    values, crossed = np.asarray(values, np.float64), np.asarray(crossed, bool)
    if values.shape != crossed.shape or values.ndim != 2 or len(labels) != len(values):
        raise ValueError(
            f"labels ({len(labels)}), values {values.shape}, crossed {crossed.shape}: need one "
            "label and one row of rays per net"
        )
    out = []
    for label in labels_in_order(labels):
        rows = [o for o, name in enumerate(labels) if name == label]
        nets = [values[o][crossed[o]] for o in rows if crossed[o].any()]
        n_rays = int(sum(len(g) for g in nets))
        mean, lo, hi = nested_mean_interval(nets) if nets else (np.nan,) * 3
        out.append(OverNets(label, measure, len(nets), n_rays, mean, lo, hi, len(rows) - len(nets)))
    return out


def summarize(rows: list[OverNets]) -> list[str]:
    """A line per label measured on several nets (one net's interval is its rays' spread)."""
    lines = []
    by_label: dict[str, list[OverNets]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    for label, found in by_label.items():
        if found[0].n_nets < 2:
            continue
        parts = [f"{r.measure} {r.mean:.4g} [{r.lo:.4g}, {r.hi:.4g}]" for r in found]
        text = (
            f"  {label} over {found[0].n_nets} nets ({found[0].n_rays} crossed rays, each net's "
            f"averaged first; 95% t interval over nets): " + ", ".join(parts)
        )
        if found[0].uncrossed_nets:
            text += f"; {found[0].uncrossed_nets} net(s) with no crossed ray left out"
        lines.append(text)
    return lines


def write_csv(rows: list[OverNets], path: Path) -> Path:
    """width_nets.csv, through the csv module (a label with a comma or a quote is quoted)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["label", "measure", "n_nets", "n_rays", "mean", "lo", "hi", "uncrossed_nets"]
        )
        for r in rows:
            values = (f"{v:.6g}" for v in (r.mean, r.lo, r.hi))
            writer.writerow([r.label, r.measure, r.n_nets, r.n_rays, *values, r.uncrossed_nets])
    return path
