"""Data-parallel groups of workers: one task evaluated by several ranks at once.

A world of 1 + G·k ranks: the master (rank 0) and G groups of k workers (ranks 1..k, k+1..2k,
...), each an MPI sub-communicator (`comm.Split`). The master hands tasks out as
`parallel.run_tasks` does, over a pool of itself and the groups' leaders (member 0 of each
group); a leader passes each task it takes on to its group (a broadcast), and every member runs
it, each on its own shard of the data (engine/shard.py), the group adding the members' partial
results (api/run.py: the engine's float64 sums, before any mean). The leader's result is the
task's. Like parallel.py it moves tasks and calls functions and knows nothing of models.

    with worker_groups(comm, k) as groups:          # collective; None when k == 1
        for result in run_group_tasks(comm, fn, tasks, groups=groups): ...
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from landscape_hpc import parallel
from landscape_hpc.errors import SharedUserError

_GROUP_KEY = "groups.group"


@dataclass
class Groups:
    """This rank's place among the workers split into groups of `size` (worker_groups): its
    `group` (the ranks evaluating one task together; the master: a group of itself), its index
    `member` in it (0: the leader), and `pool`, the communicator of the master and the leaders
    (the other members hold one of their own, unused)."""

    size: int
    group: parallel.Comm
    member: int
    pool: parallel.Comm


def check_group_size(comm: parallel.Comm, size: Any, key: str = "data_parallel") -> None:
    """A UserError, raised alike on every rank (so printed once), unless the workers of comm
    split into groups of `size`."""
    workers = max(comm.Get_size() - 1, 1)  # a world of one: its one worker thread
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SharedUserError(f"{key}={size!r} must be a whole number >= 1 (ranks per group)")
    if workers % size:
        fits = -(-workers // size) * size + 1
        raise SharedUserError(
            f"{key}={size} needs the worker count ({workers}: the ranks less the master) "
            f"divisible by {size}: run mpirun -n {fits} ... (the master and {fits // size} "
            f"groups of {size}), or pick a {key} that divides {workers}"
        )


@contextlib.contextmanager
def worker_groups(
    comm: parallel.Comm, size: int, key: str = "data_parallel"
) -> Iterator[Optional[Groups]]:
    """The workers of comm in consecutive groups of `size` ranks, for run_group_tasks; None for
    size 1 (each worker alone, no communicator made). Collective: every rank of comm enters it,
    at the same point; the communicators are freed at the end. `key` names the setting in the
    refusal of a size that does not divide the workers."""
    check_group_size(comm, size, key)
    if size == 1:
        yield None
        return
    rank = comm.Get_rank()
    member = (rank - 1) % size if rank else 0
    group = comm.Split((rank - 1) // size if rank else comm.Get_size(), rank)
    pool = comm.Split(0 if member == 0 else 1, rank)
    parallel.set_worker_state(_GROUP_KEY, group)
    try:
        yield Groups(size, group, member, pool)
    finally:
        parallel.clear_worker_state(_GROUP_KEY)
        pool.Free()
        group.Free()


def worker_group() -> parallel.Comm:
    """The group this rank runs its tasks with inside worker_groups, else the world of this
    process alone: what a task adds its members' partial results over."""
    try:
        return parallel.worker_state(_GROUP_KEY)
    except KeyError:
        return parallel.SerialWorld()


def run_group_tasks(
    comm: parallel.Comm,
    fn: Callable[[Any], Any],
    tasks: Iterable[Any],
    describe: Callable[[Any], str] = repr,
    groups: Optional[Groups] = None,
) -> Iterator[parallel.TaskResult]:
    """parallel.run_tasks, each task run by every member of a group (groups=None: by one
    worker). Yields the results on the master, from the leaders; the other ranks yield nothing.

    fn must be collective over the group: every member raises, or none (one raising alone
    would leave the others waiting in their collective). A member's error is its leader's to
    report; the members keep serving until the master's pool is done.
    """
    if groups is None:
        yield from parallel.run_tasks(comm, fn, tasks, describe)
        return
    rank = comm.Get_rank()
    if rank != 0 and groups.member != 0:
        _follow(groups.group, fn)
        return
    try:
        lead = functools.partial(_lead, fn)
        yield from parallel.run_tasks(groups.pool, lead, tasks, describe)
    finally:
        if rank != 0:  # the pool is done: the leader's group stops
            groups.group.bcast((False, None), root=0)


def _lead(fn: Callable[[Any], Any], task: Any) -> Any:
    """On a group's leader: the task goes to the other members, then runs here as well."""
    worker_group().bcast((True, task), root=0)
    return fn(task)


def _follow(group: parallel.Comm, fn: Callable[[Any], Any]) -> None:
    """On a group's other members: every task the leader passes on, until it says stop."""
    while True:
        more, task = group.bcast(None, root=0)
        if not more:
            return
        with contextlib.suppress(Exception):  # fn shared it with the group: the leader reports
            fn(task)
