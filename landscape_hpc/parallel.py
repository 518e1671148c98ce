"""The MPI layer: a master hands tasks to workers as they free up; a world of one runs them
in-process through the same code.

It knows nothing of models: it moves task descriptions (index arrays, small tuples), calls a
module-level function on the worker, and returns what that function returns. Anything heavy
a task needs (a model, data, an open file) is set up on every rank before the pool starts and
reached through `worker_state()`.

    with _executor(comm) as executor:   # mpi4py.futures
        if executor is not None:                      # rank 0: the master
            ...submit tasks, collect results as they complete...

On a world of size 1 mpi4py runs the tasks in a thread of the one process, so `python -m ...`
and `mpirun -n 1 python -m ...` take the same path as `mpirun -n 8`.

mpi4py is the `[mpi]` extra. Without it `world()` is the `SerialWorld` of this one process (rank 0
of 1, each collective answering as MPI does on a world of one) and its tasks run in one worker
thread, as mpi4py runs them on a world of one: the same code path, the same results. A process
that a launcher started as one of several ranks refuses to run without mpi4py (`launched_ranks`):
each would otherwise compute the whole job as rank 0 of its own world and write the same file.

Failures: an exception in a task comes back to the master as a `TaskError` naming the rank, the
host and the task; any exception that escapes an entry point on any rank of a multi-rank run
ends every rank through MPI_Abort (`abort_on_error`), so none waits forever on a collective. A
rank killed outright is mpirun's (or srun --kill-on-bad-exit's) to notice: it ends the others.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Optional

from landscape_hpc.errors import USER_ERROR_EXIT, SharedUserError, UserError

try:  # the [mpi] extra; importing it initialises MPI
    from mpi4py import MPI
    from mpi4py.futures import MPICommExecutor
except ModuleNotFoundError as missing:
    if missing.name != "mpi4py":  # mpi4py is there but broken: say so, do not hide it
        raise
    MPI = MPICommExecutor = None

#: whether mpi4py is installed (else every world is the serial world of this process)
HAVE_MPI4PY = MPI is not None
INSTALL_MPI = 'pip install "landscape_hpc[mpi]"'

#: a communicator: mpi4py's Intracomm, or the SerialWorld where mpi4py is not installed
Comm = Any

_STATE: dict[str, Any] = {}


class SerialWorld:
    """The world of this one process where mpi4py is not installed: the communicator calls the
    package makes, answered as MPI answers them on a world of one (rank 0 of 1; a collective
    returns what this rank gave, through pickle as mpi4py sends it, so what cannot travel
    between ranks fails here too)."""

    def Get_rank(self) -> int:  # noqa: N802 - mpi4py's names
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return _sent(obj)

    def allgather(self, obj: Any) -> list[Any]:
        return [_sent(obj)]

    def gather(self, obj: Any, root: int = 0) -> list[Any]:
        return [_sent(obj)]

    def allreduce(self, obj: Any, op: Any = None) -> Any:
        return _sent(obj)

    def Barrier(self) -> None:  # noqa: N802
        pass

    def Split_type(self, split_type: int, key: int = 0, info: Any = None) -> SerialWorld:  # noqa: N802
        return SerialWorld()

    def Free(self) -> None:  # noqa: N802
        pass

    def Abort(self, errorcode: int = 0) -> None:  # noqa: N802
        """Ends the process at once, as MPI_Abort does."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(errorcode)


def _sent(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


_SERIAL = SerialWorld()

#: (size variable, rank variable, launcher) that MPI launchers set in each rank's environment
LAUNCHER_ENV = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "mpirun"),  # Open MPI
    ("PMI_SIZE", "PMI_RANK", "mpirun"),  # MPICH and Intel MPI (Hydra), srun --mpi=pmi2
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "mpirun"),  # MVAPICH2
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "srun"),  # a SLURM job step (not the batch script)
)


def launched_ranks(environ: Optional[dict[str, str]] = None) -> tuple[int, int, str]:
    """(ranks, this rank, launcher) as an MPI launcher's environment variables say; (1, 0, "")
    for a process no launcher started."""
    env = os.environ if environ is None else environ
    for size_var, rank_var, launcher in LAUNCHER_ENV:
        size, rank = _int(env.get(size_var)), _int(env.get(rank_var))
        if size is not None and size > 0:
            return size, rank or 0, launcher
    return 1, 0, ""


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def world() -> Comm:
    """MPI's COMM_WORLD; without mpi4py the serial world of this process. A UserError where a
    launcher started this process as one of several ranks and mpi4py is missing."""
    if MPI is not None:
        return MPI.COMM_WORLD
    ranks, _, launcher = launched_ranks()
    if ranks > 1:
        raise UserError(
            f"this process is running under {launcher} with {ranks} ranks but mpi4py is not "
            f"installed: {INSTALL_MPI} (or run one process, without {launcher})"
        )
    return _SERIAL


def set_worker_state(key: str, value: Any) -> None:
    """Registers what the tasks of this rank need (set on every rank before the pool starts)."""
    _STATE[key] = value


def worker_state(key: str) -> Any:
    return _STATE[key]


def clear_worker_state(key: str) -> None:
    _STATE.pop(key, None)


@contextlib.contextmanager
def worker_pool(key: str, state: Any) -> Iterator[None]:
    """`state` is what the tasks of this rank reach through `worker_state(key)` while the body
    runs `run_tasks`; cleared afterwards, also on error (every rank enters it)."""
    set_worker_state(key, state)
    try:
        yield
    finally:
        clear_worker_state(key)


def world_if_none(comm: Optional[Comm]) -> Comm:
    """`comm`, or the whole MPI world when None (a command's functions take an optional comm)."""
    return world() if comm is None else comm


@dataclass(frozen=True)
class Placement:
    """Where a rank sits on its node, and what of the node it may use."""

    local_rank: int  # rank among the ranks of this node (picks its GPU: local_rank mod GPUs)
    ranks_on_node: int
    cpu_threads: int  # torch threads that do not fight the node's other ranks for cores


def placement(comm: Comm) -> Placement:
    """This rank's placement. Collective: every rank of comm calls it, at the same point.

    cpu_threads: the cores this rank may run on, shared among the ranks of its node that may run
    on any of them. Ranks bound to their own cores (`srun --cpus-per-task`, mpirun's binding for
    2 ranks or fewer) each keep theirs; unbound ranks split the node (mpirun --oversubscribe).
    """
    node = comm.Split_type(_COMM_TYPE_SHARED)
    try:
        mine = frozenset(_cores())
        sharing = sum(1 for cores in node.allgather(mine) if cores & mine)
        return Placement(node.Get_rank(), node.Get_size(), max(1, len(mine) // sharing))
    finally:
        node.Free()


#: MPI's split by shared memory (the ranks of one node); the serial world has one node of one
_COMM_TYPE_SHARED = MPI.COMM_TYPE_SHARED if MPI is not None else 0


def _cores() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


@dataclass
class TaskResult:
    """What a task returned, with where and how long it ran."""

    task: Any
    value: Any
    rank: int
    host: str
    seconds: float


class TaskError(RuntimeError):
    """A task failed on a worker. The message names the rank, the host, the task and the error;
    `worker_traceback` holds where on the worker it was raised."""

    def __init__(self, message: str, worker_traceback: str = ""):
        super().__init__(message)
        self.worker_traceback = worker_traceback


class TaskUserError(UserError):
    """A UserError raised by a task on a worker: bad input, not a failure of the code, so the
    master raises it as the UserError it is (one line, exit 2), not as a TaskError."""


def _run_task(fn: Callable[[Any], Any], task: Any, describe: str) -> TaskResult:
    rank = world().Get_rank()
    start = time.perf_counter()
    try:
        value = fn(task)
    except UserError as err:  # the input's fault: its message is the whole story
        raise TaskUserError(str(err)) from None
    except Exception as err:  # sent back to the master with its origin, raised there
        raise TaskError(
            f"rank {rank} on {socket.gethostname()} failed on {describe}: "
            f"{type(err).__name__}: {err}",
            traceback.format_exc(limit=-8),
        ) from None
    return TaskResult(task, value, rank, socket.gethostname(), time.perf_counter() - start)


def _executor(comm: Comm) -> contextlib.AbstractContextManager[Optional[Executor]]:
    """mpi4py's pool over comm: the executor on rank 0, None on the workers. The serial world
    gets what mpi4py gives a world of one: one worker thread of this process."""
    if isinstance(comm, SerialWorld):
        return ThreadPoolExecutor(max_workers=1)
    return MPICommExecutor(comm, root=0)


def run_tasks(
    comm: Comm,
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

    The first failed task raises `TaskError` on the master (a UserError it raised: that
    UserError, its message only): tasks not started yet are cancelled,
    the ones running finish, and every rank leaves the pool (so the caller's collective cleanup,
    such as closing a parallel HDF5 file, still meets on all ranks).
    """
    with _executor(comm) as executor:
        if executor is None:
            return
        workers = max(comm.Get_size() - 1, 1)
        limit = max_in_flight or 2 * workers
        pending: set[Future] = set()
        it = iter(tasks)
        exhausted = False
        try:
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
                    try:
                        result = fut.result()
                    except TaskError as err:
                        # mpi4py chains a RemoteTraceback that repeats the message: drop it
                        raise TaskError(str(err), err.worker_traceback) from None
                    except TaskUserError as err:
                        raise UserError(str(err)) from None
                    yield result
        finally:
            for fut in pending:  # after an error, or when the caller stops early
                fut.cancel()


def on_master(comm: Comm, compute: Callable[[], Any], share: bool = True) -> Any:
    """compute() on rank 0 only. A UserError it raises is raised on every rank, so none waits on
    a collective the master will not join. Its result reaches every rank when `share`, else only
    rank 0 (the others get None), for a result that cannot be sent, such as an open file.
    Collective: every rank calls it."""
    result, problem = None, None
    if comm.Get_rank() == 0:
        try:
            result = compute()
        except UserError as err:
            problem = str(err)
    shared = comm.bcast((result if share else None, problem), root=0)
    if shared[1] is not None:
        raise SharedUserError(shared[1])
    return shared[0] if share else result


@contextlib.contextmanager
def abort_on_error(comm: Comm) -> Iterator[None]:
    """Wraps the body of a multi-rank entry point: an exception escaping it on any rank is
    printed, naming the rank, and ends every rank through MPI_Abort, so no rank waits forever on
    a collective the failed one will never join (mpirun and srun then exit non-zero). Exit status
    2 for a UserError (message only), 1 otherwise (with the traceback; for a TaskError, the
    worker's). On a world of one the exception propagates unchanged."""
    try:
        yield
    except Exception as err:
        if comm.Get_size() == 1:
            raise
        rank = comm.Get_rank()
        where = "" if rank == 0 else f" on rank {rank} ({socket.gethostname()})"
        if isinstance(err, SharedUserError):  # every rank has it: one says it, all stop
            if rank == 0:
                print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(USER_ERROR_EXIT) from None
        if isinstance(err, UserError):
            message, code = f"error{where}: {err}", USER_ERROR_EXIT
        elif isinstance(err, TaskError):
            message, code = f"error: {err}\n{err.worker_traceback}", 1
        else:
            message = f"error{where}: {type(err).__name__}: {err}\n{traceback.format_exc()}"
            code = 1
        print(message.rstrip(), file=sys.stderr, flush=True)
        comm.Abort(code)
