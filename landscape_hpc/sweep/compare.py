"""BN against no BN in a sweep, with statistics (issue 28): per fill probability and pooled over
fills, the difference of means BN − no BN of a score over seeds (Welch: its 95% interval, p and
the smallest difference the design detects at 80% power) and, where a margin was fixed before
the run, an equivalence test (TOST) of |BN − no BN| < margin.

The unit is the fit (one seed of one net at one fill), never a cell: each fit's score is one
number. Pooled over fills, fits of every fill enter both groups alike (a fill that only one net
reached is left out of the pooled row and said so).
"""

from __future__ import annotations

import csv
import math
import numbers
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from landscape_hpc.stats import equivalence_test, welch_difference

#: the scores a comparison can be made on: the paper code's gap over trained cells (points),
#: the interior-only gap of framed masks (points) and the pattern score (AUC difference)
SCORES = {
    "gap": "test_trained_acc_gap",
    "interior": "test_interior_acc_gap",
    "score": "test_pattern_score",
}


def compare(rows: list[dict[str, Any]], score: str = "gap", margin: Optional[float] = None):
    """Rows (one per fill, then "pooled") of BN − no BN of `score` over the done fits."""
    column = SCORES[score]
    groups: dict[float, dict[bool, list[float]]] = defaultdict(lambda: {True: [], False: []})
    for row in rows:
        value = row.get(column)
        if row["status"] == "done" and isinstance(value, numbers.Real) and math.isfinite(value):
            groups[row["fill_prob"]][bool(row["bn"])].append(float(value))
    out = []
    both = {fill: g for fill, g in sorted(groups.items()) if g[True] and g[False]}
    for fill, g in both.items():
        out.append(_row(str(fill), g[True], g[False], score, margin))
    if len(both) > 1:
        bn = [v for g in both.values() for v in g[True]]
        no_bn = [v for g in both.values() for v in g[False]]
        out.append(_row("pooled", bn, no_bn, score, margin))
    return out


def _row(fill: str, bn: list[float], no_bn: list[float], score: str, margin) -> dict[str, Any]:
    d = welch_difference(bn, no_bn)
    row = {
        "fill": fill,
        "score": score,
        "n_bn": len(bn),
        "n_no_bn": len(no_bn),
        "diff": d.diff,
        "lo": d.lo,
        "hi": d.hi,
        "p": d.p,
        "mdd": d.mdd,
        "margin": math.nan if margin is None else margin,
        "tost_p": math.nan,
    }
    if margin is not None:
        row["tost_p"] = equivalence_test(bn, no_bn, margin).p
    return row


#: compare.csv's columns, one row per fill and the pooled one
FIELDS = ("fill", "score", "n_bn", "n_no_bn", "diff", "lo", "hi", "p", "mdd", "margin", "tost_p")


def write_comparison(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """compare.csv through the csv module (floats with 6 significant digits)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def format_comparison(rows: list[dict[str, Any]]) -> str:
    """The comparison as text, a line per fill and the pooled one."""
    if not rows:
        return "BN − no BN: no fill has done fits of both nets"
    head = rows[0]
    lines = [f"BN − no BN of {head['score']} (Welch over fits; 95% CI, p, MDD at 80% power)"]
    for r in rows:
        tost = (
            "" if math.isnan(r["margin"]) else f", TOST |d| < {r['margin']:g}: p={r['tost_p']:.3f}"
        )
        lines.append(
            f"  fill {r['fill']:>6}: {r['diff']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}], "
            f"p={r['p']:.3f}, MDD {r['mdd']:.2f} (n {r['n_bn']} vs {r['n_no_bn']}){tost}"
        )
    return "\n".join(lines)
