"""Data-parallel groups of workers (groups.py) in one process: which sizes a world accepts, and
the world of one. The groups themselves (sub-communicators, the leader passing tasks on) run
under the real mpirun in tests/test_mpi.py."""

from __future__ import annotations

import pytest

from landscape_hpc import groups, parallel
from landscape_hpc.errors import SharedUserError


class World:
    """A communicator of `size` ranks, as far as the size check asks."""

    def __init__(self, size: int):
        self.size = size

    def Get_size(self) -> int:  # noqa: N802 - mpi4py's name
        return self.size


@pytest.mark.parametrize("ranks, size", [(5, 2), (5, 4), (5, 1), (7, 3), (1, 1), (2, 1)])
def test_worker_counts_divisible_by_the_group_size_are_taken(ranks, size):
    groups.check_group_size(World(ranks), size)


@pytest.mark.parametrize(
    "ranks, size, message",
    [
        (4, 2, r"data_parallel=2 needs the worker count \(3: .*mpirun -n 5 .*2 groups of 2"),
        (5, 3, r"data_parallel=3 needs the worker count \(4: .*mpirun -n 7 .*divides 4"),
        (1, 2, r"data_parallel=2 needs the worker count \(1: .*mpirun -n 3 "),
        (5, 0, r"data_parallel=0 must be a whole number >= 1"),
        (5, 1.5, r"data_parallel=1.5 must be a whole number"),
    ],
)
def test_other_sizes_are_refused_alike_on_every_rank_in_one_line(ranks, size, message):
    with pytest.raises(SharedUserError, match=message) as err:
        groups.check_group_size(World(ranks), size)
    assert "\n" not in str(err.value)


def test_size_one_makes_no_groups_and_runs_every_task():
    world = parallel.SerialWorld()
    with groups.worker_groups(world, 1) as made:
        assert made is None
        assert groups.worker_group().Get_size() == 1  # a task's group: this process alone
        got = sorted(r.value for r in groups.run_group_tasks(world, abs, [-3, 1, -2]))
    assert got == [1, 2, 3]
