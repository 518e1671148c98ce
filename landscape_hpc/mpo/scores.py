"""How well a fitted plane draws its pattern, apart from what any plane gives for free.

Per split, over the cells' values (surface orientation, row = y index) and the mask (pattern
orientation, True = low-loss):

    acc_low, acc_high, acc_gap (loss_low, loss_high)   means over all cells; gap = low − high
    trained_acc_low, ... trained_acc_gap                the same over the trained (boundary)
                                                        cells: the paper code's figure-4 metric
    interior_acc_gap, trained_interior_acc_gap          the gap over the interior [2:−2, 2:−2]
                                                        of a framed mask (all of its cells, its
                                                        trained cells): the part drawn at random,
                                                        without the fixed outer ring and frame;
                                                        absent for an unframed mask (NaN in the
                                                        sweep file and summary.csv)
    auc_loss                                            the AUC of −loss against the mask (True =
                                                        positive) over all cells: the chance that
                                                        a low-loss cell has the lower loss, ties
                                                        half
    auc_radial                                          the same AUC of the radial prior
                                                        −√(α² + β²) on the cell coordinates: what
                                                        a plane gives for free (its loss rises
                                                        with the distance from the origin)
    pattern_score                                       auc_loss − auc_radial: the pattern beyond
                                                        the prior (0 for a surface that is the
                                                        prior, > 0 where the fit drew more)
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from landscape_hpc.grid import cell_coords, pattern_to_surface

SPLITS = ("train", "test")
#: the class means and gaps, over all cells ("") and over the trained cells ("trained_")
GAP_COLUMNS = tuple(
    f"{prefix}{name}"
    for prefix in ("", "trained_")
    for name in ("acc_low", "acc_high", "acc_gap", "loss_low", "loss_high")
)
#: the scores that separate the pattern from the radial prior
SCORE_COLUMNS = (
    "interior_acc_gap",
    "trained_interior_acc_gap",
    "auc_loss",
    "auc_radial",
    "pattern_score",
)
#: every per-split metric of metrics.json, the sweep file and summary.csv, in order
METRIC_COLUMNS = GAP_COLUMNS + SCORE_COLUMNS
#: the frame of a framed random mask (mpo/patterns.py random_mask): ring, frame, interior
FRAME_WIDTH = 2


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """The area under the ROC curve of `scores` for the classes `positive` (bool, same shape):
    P(a positive scores above a negative) + ½ P(a tie), from average ranks (Mann–Whitney U).
    NaN when a class is empty or a score is NaN."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0 or np.isnan(scores).any():
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # tied values share the mean of the ranks they span (1-based)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse.ravel()]
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def radial_prior(shape: tuple[int, int]) -> np.ndarray:
    """−√(α² + β²) of each cell of an (H, W) pattern, in surface orientation (row = y index):
    high near the plane's origin, as a plane's −loss is before any fit."""
    x, y = cell_coords(shape)
    return -np.hypot(x[None, :], y[:, None])


def is_framed(mask: np.ndarray) -> bool:
    """Whether `mask` (pattern orientation) has the framed layout of the paper's code: outer
    ring high-loss, rows/columns 1 and −2 low-loss, a non-empty interior inside."""
    h, w = mask.shape
    if min(h, w) <= 2 * FRAME_WIDTH:
        return False
    ring = np.ones((h, w), bool)
    ring[1:-1, 1:-1] = False
    frame = np.zeros((h, w), bool)
    frame[1:-1, 1:-1] = True
    frame[2:-2, 2:-2] = False
    return bool(not mask[ring].any() and mask[frame].all())


def interior_cells(shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool, pattern orientation: the cells inside the frame, [2:−2, 2:−2]."""
    cells = np.zeros(shape, bool)
    cells[FRAME_WIDTH:-FRAME_WIDTH, FRAME_WIDTH:-FRAME_WIDTH] = True
    return cells


def class_gap(values: np.ndarray, low: np.ndarray, cells: np.ndarray) -> float:
    """mean(values of low-loss cells) − mean(values of high-loss cells) among `cells` (all
    arrays in one orientation); NaN when a class has no cell there."""
    return _mean(values[low & cells]) - _mean(values[~low & cells])


def pattern_scores(
    loss: np.ndarray, acc: np.ndarray, mask: np.ndarray, trained: np.ndarray
) -> dict[str, float]:
    """SCORE_COLUMNS of one split (the interior gaps for a framed mask only): `loss`, `acc`
    (H, W) in surface orientation, `mask` and `trained` (H, W) in pattern orientation."""
    low, used = pattern_to_surface(mask), pattern_to_surface(trained)
    out: dict[str, float] = {}
    if is_framed(mask):  # only then: other masks have no such keys (metrics.json stays JSON)
        inside = pattern_to_surface(interior_cells(mask.shape))
        out["interior_acc_gap"] = class_gap(acc, low, inside)
        out["trained_interior_acc_gap"] = class_gap(acc, low, inside & used)
    out["auc_loss"] = auc(-np.asarray(loss, dtype=np.float64), low)
    out["auc_radial"] = auc(radial_prior(mask.shape), low)
    out["pattern_score"] = out["auc_loss"] - out["auc_radial"]
    return out


def pattern_metrics(
    values: dict[str, np.ndarray], mask: np.ndarray, trained: Optional[np.ndarray] = None
) -> dict[str, Any]:
    """METRIC_COLUMNS per split of the cells' `values` ({train_loss, train_acc, ...} (H, W),
    surface orientation): means over low-loss and high-loss cells, acc in percent, gap = low −
    high, over all cells (acc_low, ...) and over the trained (boundary) cells only
    (trained_acc_low, ..., the paper code's figure-4 numbers), then the scores (pattern_scores).
    `trained` (H, W) defaults to every cell."""
    trained = np.ones_like(mask, dtype=bool) if trained is None else trained
    low, used = pattern_to_surface(mask), pattern_to_surface(trained)
    out: dict[str, Any] = {}
    for split in SPLITS:
        loss, acc = values[f"{split}_loss"], values[f"{split}_acc"]
        row: dict[str, float] = {}
        for prefix, cells in (("", np.ones_like(used)), ("trained_", used)):
            row[f"{prefix}acc_low"] = _mean(acc[low & cells])
            row[f"{prefix}acc_high"] = _mean(acc[~low & cells])
            row[f"{prefix}acc_gap"] = row[f"{prefix}acc_low"] - row[f"{prefix}acc_high"]
            row[f"{prefix}loss_low"] = _mean(loss[low & cells])
            row[f"{prefix}loss_high"] = _mean(loss[~low & cells])
        row.update(pattern_scores(loss, acc, mask, trained))
        out[split] = row
    return out


def _mean(values: np.ndarray) -> float:
    """The mean, NaN for no values (a pattern whose class has no trained cell)."""
    return float(values.mean()) if values.size else float("nan")
