"""The shard rule: which samples of a split one member of a data-parallel group evaluates.

A group of `count` ranks evaluates the same points over disjoint shards of every split and adds
their float64 sums (losses.Sums) before any mean is taken (api/run.py), so the group's values
are one process's up to the order of the float64 additions. Member `index` of the group holds

    a resident split (N samples)   the contiguous samples [index·N // count, (index+1)·N // count)
    a streamed split               the batches i of the source with i % count == index (each
                                   member reads the whole source and keeps its own batches;
                                   the source's loader does the reading, the member the forwards)

A shard with nothing in it (a split of fewer samples, or batches, than the group has ranks) is
refused: the sums of such a member would be zero and its forwards meaningless. BN statistics
(bn=recompute) are not sharded: each member recomputes them over the whole split, as one process
does (the BN pass is then not split over the group; the evaluation is).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from landscape_hpc.engine.data import Resident, Split, Streamed
from landscape_hpc.errors import UserError


def shard_bounds(n: int, index: int, count: int) -> slice:
    """The contiguous samples of member `index` of `count` in a split of n: [i·n//c, (i+1)·n//c)."""
    return slice(index * n // count, (index + 1) * n // count)


class EveryKth:
    """The batches i of a re-iterable source with i % count == index, read afresh on every
    iteration (a streamed split's shard)."""

    def __init__(self, source: Iterable, index: int, count: int, name: str):
        self.source, self.index, self.count, self.name = source, index, count, name

    def __iter__(self) -> Iterator[Any]:
        kept = 0
        for i, batch in enumerate(self.source):
            if i % self.count == self.index:
                kept += 1
                yield batch
        if kept == 0:
            raise _empty(self.name, "batches", self.count)


def _empty(name: str, what: str, count: int) -> UserError:
    return UserError(
        f"split {name!r} has fewer {what} than the {count} ranks of a data_parallel group, so a "
        f"rank's shard of it is empty; use smaller batches, or a smaller data_parallel"
    )


def shard(split: Split, index: int, count: int) -> Split:
    """Member `index` of `count`'s shard of `split` (the module docstring's rule); the split
    itself when count is 1."""
    if count == 1:
        return split
    if split.streamed:
        try:
            size = len(split.source)
        except TypeError:  # no len (an IterableDataset's loader, a generic re-iterable)
            size = count
        if size < count:
            raise _empty(split.name, "batches", count)
        source = EveryKth(split.source, index, count, split.name)
        return Streamed(source, split.device, split.name, split.transform)
    if split.n < count:
        raise _empty(split.name, "samples", count)
    part = split.batch(shard_bounds(split.n, index, count))
    return Resident(part.inputs, part.target, split.name)
