"""Whether an MPO fit has converged: the held-out check every `eval_every` steps, its history,
and the rule that ends a fit by itself.

The held-out samples come from the *validation split* (`validation_split`): `val_samples`
samples (at most a fifth) carved from the training split by a seeded draw and never in a
training batch, so the
stop rule and every held-out check never read the test split (only the final evaluation does).
Every `eval_every` steps (and before the first and after the last step) the plane is evaluated
on a fixed, seeded held-out set: at most `heldout_samples` samples of the validation split and at
most `heldout_cells` cells of each class, drawn once from the trained (boundary) cells and once
from all cells of the pattern. BN nets use the statistics of the held-out batch, as in training
(appendix C). Each evaluation is a row of the history (HISTORY_COLUMNS): the held-out accuracy
gap both ways, the mean training objective since the previous row, the plane's scale, seconds.

The stop rule (`StopRule`): a fit has converged when, past `min_steps`, the best held-out gap
over trained cells of the last `patience` evaluations is no more than `min_delta` points above
the best gap before them. It is a function of the history alone, so a resumed fit decides
exactly as an uninterrupted one would.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from landscape_hpc.data import Split
from landscape_hpc.errors import UserError
from landscape_hpc.mpo.objective import objective_batched
from landscape_hpc.mpo.plane import Plane, cell_alpha_beta
from landscape_hpc.paths import require_regular

#: one row of the history; gaps and accuracies in points of held-out accuracy (percent)
HISTORY_COLUMNS = (
    "step",
    "gap_trained",  # acc_low − acc_high over trained (boundary) cells: the paper code's metric
    "gap_all",  # the same over all cells
    "acc_low_trained",
    "acc_high_trained",
    "acc_low_all",
    "acc_high_all",
    "loss",  # mean training objective (eq. 3) of the steps since the last multiple of eval_every
    "scale",  # the plane's scale s
    "seconds",  # training wall time so far
)
HISTORY_CSV = "history.csv"
#: the stream of the held-out draws, apart from the steps' streams (seed · 1_000_003 + step)
_HELDOUT_STREAM = 0x4D504F
#: the stream of the validation split's draw (from the training split)
_VALIDATION_STREAM = 0x56414C


@dataclass(frozen=True)
class StopRule:
    """No improvement of the held-out gap over trained cells by more than `min_delta` points
    within the last `patience` evaluations, after at least `min_steps` steps."""

    enabled: bool = True
    patience: int = 5
    min_delta: float = 1.0
    min_steps: int = 0

    def converged(self, history: list[list[float]]) -> bool:
        if not self.enabled or len(history) <= self.patience:
            return False
        if history[-1][0] < self.min_steps:
            return False
        gaps = [row[1] if math.isfinite(row[1]) else -math.inf for row in history]
        before, recent = max(gaps[: -self.patience]), max(gaps[-self.patience :])
        return recent <= before + self.min_delta


#: the validation split takes at most this share of the training split
VALIDATION_MAX_SHARE = 5


def validation_size(n: int, samples: int) -> int:
    """Samples of the validation split of a training split of `n`: `samples`, at most a fifth
    of n (VALIDATION_MAX_SHARE) so the batches keep most of the data. A UserError when not one
    sample can be spared."""
    if samples < 1:
        raise UserError(f"val_samples={samples} must be a positive integer")
    size = min(int(samples), n // VALIDATION_MAX_SHARE)
    if size < 1:
        raise UserError(
            f"the training split has {n} samples, too few to carve a validation split from "
            f"(it takes at most 1/{VALIDATION_MAX_SHARE}); give at least "
            f"{VALIDATION_MAX_SHARE} training samples"
        )
    return size


def validation_rows(n: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of a training split of `n` samples, each sorted: a
    seeded draw of validation_size(n, samples) rows (a function of (n, samples, seed) only)
    and the rest."""
    size = validation_size(n, samples)
    order = np.random.default_rng([int(seed), _VALIDATION_STREAM]).permutation(n)
    return np.sort(order[size:]), np.sort(order[:size])


def validation_split(train: Split, samples: int, seed: int) -> tuple[Split, Split]:
    """(the training split without the validation samples, the validation split): `samples`
    rows of `train` drawn by `seed` (validation_rows), in their original order."""
    rest, val = validation_rows(int(train.labels.shape[0]), samples, seed)
    device = train.labels.device

    def take(rows: np.ndarray) -> Split:
        index = torch.from_numpy(rows).to(device)
        return Split(train.inputs[index], train.labels[index])

    return take(rest), take(val)


def _pick(cells: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """At most k rows of `cells` (N, 2), in a seeded order."""
    return cells[rng.permutation(len(cells))[: min(k, len(cells))]]


@dataclass
class HeldOut:
    """The fixed held-out set of one fit: samples and cells (α, β) of each class."""

    inputs: Tensor  # (B, ...) samples of the validation split
    labels: Tensor  # (B,)
    trained: tuple[Tensor, Tensor]  # (K_low, 2), (K_high, 2): trained cells
    every: tuple[Tensor, Tensor]  # the same drawn from all cells

    @classmethod
    def build(
        cls,
        mask: np.ndarray,
        trained: np.ndarray,
        split: Split,
        samples: int,
        cells: int,
        seed: int,
    ) -> HeldOut:
        """Draws the set from `mask` (H, W; True = low-loss), `trained` (H, W) and `split`;
        a function of the seed only."""
        rng = np.random.default_rng([int(seed), _HELDOUT_STREAM])
        n = split.labels.shape[0]
        rows = torch.from_numpy(np.sort(rng.permutation(n)[: min(samples, n)]))
        shape = (int(mask.shape[0]), int(mask.shape[1]))
        device = split.inputs.device

        def coords(selected: np.ndarray) -> Tensor:
            picked = torch.from_numpy(_pick(np.argwhere(selected), cells, rng))
            return cell_alpha_beta(shape, picked[:, 0], picked[:, 1]).to(device)

        return cls(
            inputs=split.inputs[rows.to(device)],
            labels=split.labels[rows.to(device)],
            trained=(coords(mask & trained), coords(~mask & trained)),
            every=(coords(mask), coords(~mask)),
        )

    def evaluate(self, plane: Plane, template: nn.Module, chunk_cells: int) -> dict[str, float]:
        """Held-out accuracies of low- and high-loss cells, both ways, and the two gaps."""
        out: dict[str, float] = {}
        for name, (low, high) in (("trained", self.trained), ("all", self.every)):
            stats = objective_batched(
                plane,
                template,
                low,
                high,
                self.inputs,
                self.labels,
                math.inf,
                chunk_cells,
                backward=False,
            )
            out[f"acc_low_{name}"] = stats.acc_low
            out[f"acc_high_{name}"] = stats.acc_high
            out[f"gap_{name}"] = stats.acc_low - stats.acc_high
        return out


def history_row(step: int, heldout: dict[str, float], loss: float, scale: float, seconds: float):
    """One row in HISTORY_COLUMNS order."""
    values = {"step": step, **heldout, "loss": loss, "scale": scale, "seconds": seconds}
    return [float(values[c]) for c in HISTORY_COLUMNS]


def write_history_csv(history: list[list[float]], path: Path) -> Path:
    """history.csv, rewritten whole (a few hundred rows at most); atomic. Floats are written
    to the last bit (shortest round-trip form), so the CSV holds what the sweep file holds."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HISTORY_COLUMNS)
        for row in history:
            writer.writerow([int(row[0]), *(repr(float(v)) for v in row[1:])])
    tmp.replace(path)
    return path


def read_history_csv(path: Path) -> Optional[np.ndarray]:
    """(rows, len(HISTORY_COLUMNS)) float64, or None when the file is missing or foreign."""
    require_regular(path)  # a FIFO would block the read forever
    try:
        with Path(path).open(newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError:
        return None
    if not rows or tuple(rows[0]) != HISTORY_COLUMNS:
        return None
    return np.array([[float(v) for v in row] for row in rows[1:]], dtype=np.float64).reshape(
        -1, len(HISTORY_COLUMNS)
    )
