"""The MPI layer: a master hands tasks to workers as they free up; a world of one runs them
in-process through the same code.

It knows nothing of models: it moves task descriptions (index arrays, small tuples), calls a
module-level function on the worker, and returns what that function returns. Anything heavy
a task needs (a model, data, an open file) is set up on every rank before the pool starts and
reached through `worker_state()`.

    with MPICommExecutor(comm, root=0) as executor:   # mpi4py.futures
        if executor is not None:                      # rank 0: the master
            ...submit tasks, collect results as they complete...

On a world of size 1 mpi4py runs the tasks in a thread of the one process, so `python -m ...`
and `mpirun -n 1 python -m ...` take the same path as `mpirun -n 8`.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, Optional

from mpi4py import MPI
from mpi4py.futures import MPICommExecutor

_STATE: dict[str, Any] = {}


def world() -> MPI.Intracomm:
    return MPI.COMM_WORLD


def set_worker_state(key: str, value: Any) -> None:
    """Registers what the tasks of this rank need (set on every rank before the pool starts)."""
    _STATE[key] = value


def worker_state(key: str) -> Any:
    return _STATE[key]


def clear_worker_state(key: str) -> None:
    _STATE.pop(key, None)


def local_rank(comm: MPI.Intracomm) -> tuple[int, int]:
    """(rank among the ranks of this node, ranks on this node)."""
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


@dataclass
class TaskResult:
    """What a task returned, with where and how long it ran."""

    task: Any
    value: Any
    rank: int
    host: str
    seconds: float


class TaskError(RuntimeError):
    """A task failed on a worker; the message names the rank, the host and the task."""


def _run_task(fn: Callable[[Any], Any], task: Any, describe: str) -> TaskResult:
    rank = MPI.COMM_WORLD.Get_rank()
    start = time.perf_counter()
    try:
        value = fn(task)
    except Exception as err:  # reported to the master with its origin, re-raised there
        tb = traceback.format_exc(limit=6)
        raise TaskError(
            f"rank {rank} on {socket.gethostname()} failed on {describe}: "
            f"{type(err).__name__}: {err}\n{tb}"
        ) from None
    return TaskResult(task, value, rank, socket.gethostname(), time.perf_counter() - start)


def run_tasks(
    comm: MPI.Intracomm,
    fn: Callable[[Any], Any],
    tasks: Iterable[Any],
    describe: Callable[[Any], str] = repr,
    max_in_flight: Optional[int] = None,
) -> Iterator[TaskResult]:
    """Runs fn(task) for every task on the workers; yields results on the master as they finish.

    Workers pull the next task when done (at most `max_in_flight` are queued at once, default
    2 per worker, so a slow rank never holds work the others could do). On worker ranks this
    serves tasks until the master is done and yields nothing. `fn` must be a module-level function
    (it is pickled by reference).
    """
    with MPICommExecutor(comm, root=0) as executor:
        if executor is None:
            return
        workers = max(comm.Get_size() - 1, 1)
        limit = max_in_flight or 2 * workers
        pending: set[Future] = set()
        it = iter(tasks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    task = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.add(executor.submit(_run_task, fn, task, describe(task)))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()  # a TaskError propagates to the caller on the master


def abort_on_error(comm: MPI.Intracomm, message: str, code: int = 1) -> None:
    """Ends every rank of a multi-rank run (so none hangs on a collective); a no-op at size 1,
    where the caller's exception ends the one process."""
    if comm.Get_size() > 1:
        print(message, flush=True)
        comm.Abort(code)


def threads_per_rank(comm: MPI.Intracomm) -> int:
    """CPU threads each rank of this node may use, so ranks do not fight over cores."""
    _, ranks_here = local_rank(comm)
    return max(1, (os.cpu_count() or 1) // ranks_here)
