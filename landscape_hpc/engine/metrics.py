"""The per-split mean loss and accuracy of networks at points: the arithmetic every strategy of
the engine (evaluate.py) shares, so they differ only in how the networks' outputs are produced
and in which order points and batches are visited.

Sums over batches are float64 (losses.Sums), means weighted by what the loss counts (samples,
or tokens): a split's mean does not depend on how it is cut into batches. The strategies return
the sums themselves, one row per point (`join`), and the Evaluator divides: so sums over disjoint
shards of a split (the ranks of a data_parallel group, api/run.py) add up to the whole split's
before any mean is taken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape_hpc.engine.data import Batch, Inputs, Split
from landscape_hpc.engine.losses import Loss, Sums
from landscape_hpc.engine.subspace import Subspace

#: k networks on one batch of inputs: inputs (B, ...) -> outputs (k, B, ...), unwrapped
Forward = Callable[[Inputs], Tensor]


def batch_sums(forward: Forward, batch: Batch, loss: Loss) -> Sums:
    """The k networks of `forward` on one batch: the loss's float64 sums."""
    return loss.sums(forward(batch.inputs), batch)


def split_sums(forward: Forward, split: Split, batch_size: int, loss: Loss) -> Sums:
    """The sums of the k networks of `forward` over every batch of one split (one read of a
    streamed split); a resident split of at most batch_size samples is one forward on its
    tensors themselves (a tiny net's points are this overhead)."""
    total: Sums | None = None
    for batch in split.batches(batch_size):
        sums = batch_sums(forward, batch, loss)
        total = sums if total is None else total + sums
    return total


def split_metrics(
    forward: Forward, split: Split, batch_size: int, loss: Loss
) -> tuple[Tensor, Tensor]:
    """Mean loss and accuracy (percent) of the k networks of `forward` on one split, (k,) each."""
    return split_sums(forward, split, batch_size, loss).means()


@dataclass
class Points:
    """What a strategy evaluates: `model` (a template, its own weights unused) at points of
    `subspace`, on `data` ({split: Split}) with `loss`; BN statistics recomputed from the split
    `bn_data` (resident ones in batches of `bn_batch_size`) when it is given."""

    model: nn.Module
    subspace: Subspace
    data: Mapping[str, Split]
    loss: Loss
    bn_data: Split | None = None
    bn_batch_size: int = 256


def rows(sums: Sums) -> Sums:
    """The sums of k networks with every field a float64 tensor (k,) (a count shared by all k,
    a Python int, repeated): what can be joined, added across ranks and divided alike."""
    k, device = sums.loss.shape[0], sums.loss.device

    def row(value: Tensor | int) -> Tensor:
        if isinstance(value, Tensor):
            return value.to(torch.float64).expand(k)
        return torch.full((k,), float(value), dtype=torch.float64, device=device)

    return Sums(row(sums.loss), row(sums.loss_count), row(sums.correct), row(sums.acc_count))


def join(parts: Sequence[Sums]) -> Sums:
    """The sums of consecutive groups of networks as one Sums of rows, in order."""
    parts = [rows(p) for p in parts]
    fields = ("loss", "loss_count", "correct", "acc_count")
    return Sums(*(torch.cat([getattr(p, f) for p in parts]) for f in fields))


def concat(parts: Sequence[Mapping[str, Sums]]) -> dict[str, Sums]:
    """{split: Sums} of consecutive groups of points, joined in order."""
    return {name: join([p[name] for p in parts]) for name in parts[0]}
