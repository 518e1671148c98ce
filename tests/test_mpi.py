"""MPI: the task pool in one process, then the surface command under the real mpirun: the same
file at 1, 2 and 3 ranks, any chunk size, through parallel HDF5 (io=mpio) or the master
(io=gather); a worker killed mid-run; a worker that raises; diverged points.

    .venv/bin/python -m pytest tests/test_mpi.py        # about 3 minutes on 2 cores

Every run is `mpirun -n N --oversubscribe python -m landscape_hpc.surface ...` under `timeout`,
so a hang fails its test. Skipped where mpirun is missing; the io=mpio cases also where h5py was
built without MPI. The nets are `model=custom` targets in tests/custom_objects.py.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi_helpers import (
    TIMED_OUT,
    OutputWatch,
    assert_same_surface,
    check_ok,
    h5py_has_mpi,
    mpirun_available,
    processes_gone,
    progress,
    python,
    rank_pids,
    read_surface,
    run_surface,
    surface_argv,
    surface_env,
)

from landscape_hpc import parallel

needs_mpirun = pytest.mark.skipif(
    not mpirun_available(), reason="mpirun is not on PATH (apt-get install openmpi-bin)"
)
needs_mpio = pytest.mark.skipif(
    not h5py_has_mpi(),
    reason="h5py was built without MPI, so io=mpio is refused (build it with HDF5_MPI=ON: "
    "README, Install on a cluster without root)",
)


def _square_unless_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x * x


def test_world_of_one_runs_every_task_in_process() -> None:
    results = list(parallel.run_tasks(parallel.world(), _square_unless_three, [1, 2, 4, 5]))
    assert sorted(r.value for r in results) == [1, 4, 16, 25]
    assert {r.rank for r in results} == {0}
    assert sorted(r.task for r in results) == [1, 2, 4, 5]


def test_failed_task_names_rank_task_and_error() -> None:
    with pytest.raises(parallel.TaskError) as caught:
        list(
            parallel.run_tasks(
                parallel.world(), _square_unless_three, [1, 3, 4], describe=lambda t: f"task {t}"
            )
        )
    assert re.fullmatch(
        r"rank 0 on \S+ failed on task 3: ValueError: three is not allowed", str(caught.value)
    )
    assert "_square_unless_three" in caught.value.worker_traceback


def test_one_process_uses_the_cores_it_may_run_on() -> None:
    place = parallel.placement(parallel.world())
    assert (place.local_rank, place.ranks_on_node) == (0, 1)
    assert place.cpu_threads == len(os.sched_getaffinity(0))


PLACEMENT = (
    "from landscape_hpc import parallel\n"
    "w = parallel.world()\n"
    "p = parallel.placement(w)\n"
    "rows = w.gather([w.Get_rank(), p.local_rank, p.ranks_on_node, p.cpu_threads])\n"
    "if w.Get_rank() == 0:\n"
    "    print('placement', rows)"  # one line, from rank 0: ranks' prints may interleave
)


@needs_mpirun
@pytest.mark.parametrize("ranks", [2, 3])
def test_unbound_ranks_of_a_node_split_its_cores(ranks: int) -> None:
    """mpirun --bind-to none: every rank may run on every core, so they share them out (at
    least one thread each) instead of each starting one thread per core."""
    argv = ["mpirun", "-n", str(ranks), "--oversubscribe", "--bind-to", "none", python(), "-c"]
    done = subprocess.run(
        [*argv, PLACEMENT], env=surface_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("placement ")]
    rows = ast.literal_eval(line.removeprefix("placement "))
    cores = len(os.sched_getaffinity(0))  # mpirun's ranks inherit this process's cores
    share = max(1, cores // ranks)
    assert rows == [[r, r, ranks, share] for r in range(ranks)], done.stdout


# 64 points of a tiny net whose loss is finite near the origin, +inf further out and NaN at the
# corners. vmap: the chunk size then changes how many points one batched forward holds.
DIVERGING = [
    "model=custom",
    "model.target=custom_objects.diverging_net",
    "grid.x=[-1,1,8]",
    "grid.y=[-1,1,8]",
    "dataset.max_samples=200",
    "engine.strategy=vmap",
]
N_POINTS = 64
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
IO = "mpio" if h5py_has_mpi() else "gather"  # the reference run's driver


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The surface of one rank (io=auto: parallel HDF5 where h5py has MPI)."""
    run_dir = tmp_path_factory.mktemp("one_rank")
    check_ok(run_surface(1, run_dir, DIVERGING))
    datasets, attrs = read_surface(run_dir / "surface.h5")
    assert attrs["io_driver"] == IO
    return datasets


@needs_mpirun
def test_diverged_points_are_stored_as_is_and_done(reference: dict[str, np.ndarray]) -> None:
    loss = reference["train_loss"]
    assert np.isnan(loss).any() and np.isposinf(loss).any() and np.isfinite(loss).any()
    assert reference["done"].all()  # so a resumed run never recomputes a diverged point
    assert np.isnan(reference["test_loss"]).sum() == np.isnan(loss).sum()


@needs_mpirun
@needs_mpio
def test_two_ranks_write_the_same_file(tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    check_ok(run_surface(2, tmp_path, [*DIVERGING, "io=mpio", "chunk_points=5"]))
    got, attrs = read_surface(tmp_path / "surface.h5")
    assert attrs["io_driver"] == "mpio"
    assert_same_surface(got, reference)
    with h5py.File(tmp_path / "surface.h5", "r") as f:  # HDF5 forbids independent filtered writes
        for name in (*METRICS, "done"):
            assert f[name].id.get_create_plist().get_nfilters() == 0, name


@needs_mpirun
@needs_mpio
def test_three_ranks_share_one_output_folder_and_rank_0_reports(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    # No hydra.run.dir: rank 0 picks outputs/<date>/<time> and every rank must use it.
    # --tag-output prefixes every line with [job,rank]<stream>, to see who printed it.
    done = run_surface(
        3,
        None,
        [*DIVERGING, "io=mpio", "chunk_points=3"],
        cwd=tmp_path,
        mpirun_options=("--tag-output",),
    )
    check_ok(done)
    folders = [p.parent for p in (tmp_path / "outputs").glob("*/*/.hydra")]
    assert len(folders) == 1, sorted(str(p) for p in (tmp_path / "outputs").rglob("*"))
    out = folders[0]
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "surface.h5", "surface.log"]
    got, attrs = read_surface(out / "surface.h5")
    assert attrs["io_driver"] == "mpio"
    assert_same_surface(got, reference)

    speakers = set(re.findall(r"\[\d+,(\d+)\]<", done.stdout))
    assert speakers == {"0"}, f"ranks other than 0 printed:\n{done.stdout}"
    assert f"{N_POINTS}/{N_POINTS} [" in done.stdout  # rank 0's progress bar reached the end
    log = (out / "surface.log").read_text()
    per_rank = re.findall(r"rank (\d+): (\d+) points in [\d.]+ s \(([\d.]+) points/s\)", log)
    assert sorted(r for r, _, _ in per_rank) == ["1", "2"], log  # once each: only rank 0 logs
    assert sum(int(n) for _, n, _ in per_rank) == N_POINTS
    assert all(float(rate) > 0 for _, _, rate in per_rank)


# The same net sleeping 0.1 s per forward, 2 points per chunk: two forwards (train, test) per
# chunk, so about 3 s of work for two workers, and a kill after the first chunks lands mid-run.
SLOW = [*DIVERGING, "+model.kwargs.delay_s=0.1", "chunk_points=2"]
KILL_AFTER = 8  # points rank 0 has seen done
EXIT_WITHIN_S = 90  # a guard against ranks left waiting, not a speed limit (mpirun takes 1-2 s)


@needs_mpirun
@pytest.mark.parametrize("io", [pytest.param("mpio", marks=needs_mpio), "gather"])
def test_killed_worker_ends_the_run_and_the_rerun_completes_it(
    tmp_path: Path, io: str, reference: dict[str, np.ndarray]
) -> None:
    """Also the gather path end to end: its final file equals the (mpio) reference."""
    overrides = [*SLOW, f"io={io}"]
    argv = ["timeout", "-k", "10", "150", *surface_argv(3, tmp_path, overrides)]
    proc = subprocess.Popen(
        argv, env=surface_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        output = OutputWatch(proc)
        started = output.wait_for(lambda text: progress(text) >= KILL_AFTER, timeout_s=120)
        assert started, f"no progress to {KILL_AFTER} points:\n{output.text}"
        pids = rank_pids(str(tmp_path))
        assert sorted(pids) == [0, 1, 2], pids
        os.kill(pids[1], signal.SIGKILL)  # a worker; rank 0 is the master
        killed_at = time.monotonic()
        status = proc.wait(timeout=EXIT_WITHIN_S + 10)
        exit_s = time.monotonic() - killed_at
        text = output.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status not in (0, TIMED_OUT), f"exit status {status}:\n{text}"
    assert exit_s < EXIT_WITHIN_S, f"mpirun took {exit_s:.1f} s to end after the kill"
    assert rank_pids(str(tmp_path)) == {}, "ranks left running after mpirun ended"
    assert processes_gone(pids.values()), "a rank still exiting holds the surface file"

    partial, attrs = read_surface(tmp_path / "surface.h5")  # readable after the kill
    assert attrs["io_driver"] == io
    done = partial["done"].astype(bool)
    assert KILL_AFTER <= done.sum() < N_POINTS, done.sum()
    # A point is marked done after its metrics are written, so a rank killed between the two
    # leaves values without the mark: at most the chunks in flight, one per worker (2 points
    # each), which the rerun computes again. Every other point not done is empty.
    written = np.any([~np.isnan(partial[name]) for name in METRICS], axis=0)
    assert (written & ~done).sum() <= 2 * 2, (written & ~done).sum()

    rerun = run_surface(3, tmp_path, overrides)
    check_ok(rerun)
    n_done = int(done.sum())
    n_left = N_POINTS - n_done
    assert (
        f"{n_done} of {N_POINTS} points already done, {n_left} to compute"
        in (tmp_path / "surface.log").read_text()
    )
    assert f"{n_left}/{n_left} [" in rerun.stdout  # only the pending points were computed
    final, _ = read_surface(tmp_path / "surface.h5")
    assert final["done"].all()
    for name in METRICS:  # NaN and inf included: array_equal takes NaN as equal to NaN
        np.testing.assert_array_equal(final[name][done], partial[name][done], err_msg=name)
    assert_same_surface(final, reference)  # as if never interrupted


@needs_mpirun
def test_worker_exception_reaches_rank_0_with_rank_and_chunk(tmp_path: Path) -> None:
    overrides = [
        "model=custom",
        "model.target=custom_objects.failing_net",
        "+model.kwargs.fail_rank=2",
        "grid.x=[-1,1,5]",
        "grid.y=[-1,1,4]",
        "chunk_points=2",
        "dataset.max_samples=200",
    ]
    done = run_surface(3, tmp_path, overrides)
    assert done.returncode == 1, done.stdout
    message = re.search(
        r"^error: rank 2 on \S+ failed on chunk of 2 points \(flat indices (\d+)\.\.(\d+)\): "
        r"RuntimeError: out of memory \(simulated on rank 2\)$",
        done.stdout,
        re.MULTILINE,
    )
    assert message, done.stdout
    assert int(message[2]) - int(message[1]) == 1
    assert "custom_objects.py" in done.stdout  # the worker's traceback comes along
    assert rank_pids(str(tmp_path)) == {}
    partial, _ = read_surface(tmp_path / "surface.h5")
    assert not partial["done"].all()


@needs_mpirun
def test_error_on_one_rank_before_the_work_ends_every_rank(tmp_path: Path) -> None:
    # Rank 1 fails while building the net (a checkpoint bad only on its node) and never joins
    # the collectives rank 0 waits in: without MPI_Abort the run would hang.
    overrides = [
        "model=custom",
        "model.target=custom_objects.failing_net",
        "+model.kwargs.fail_rank=1",
        "+model.kwargs.at=build",
        "grid.x=[-1,1,3]",
        "grid.y=null",
        "dataset.max_samples=200",
    ]
    done = run_surface(2, tmp_path, overrides)
    assert done.returncode == 1, done.stdout
    assert re.search(
        r"^error on rank 1 \(\S+\): RuntimeError: corrupt checkpoint \(simulated on rank 1\)$",
        done.stdout,
        re.MULTILINE,
    ), done.stdout
    assert rank_pids(str(tmp_path)) == {}


@needs_mpirun
def test_each_workers_precision_report_reaches_rank_0(tmp_path: Path) -> None:
    # workers log nothing themselves (cli: hydra/job_logging=disabled on ranks > 0): what a
    # lower precision costs comes back with the first chunk of each worker
    overrides = ["model=mlp", "grid.x=[-1,1,4]", "grid.y=null", "dataset.max_samples=60"]
    done = run_surface(3, tmp_path, [*overrides, "engine.precision=bf16", "chunk_points=1"])
    check_ok(done)
    for rank in (1, 2):
        assert f"rank {rank}: engine.precision=bf16: at its first point" in done.stdout
    assert read_surface(tmp_path / "surface.h5")[1]["precision"] == "bf16"


# data_parallel=2 under mpirun -n 5: the master and two groups of two ranks, each chunk
# evaluated by one group over two shards of every split (100 + 100 of the 200 samples)
DATA_PARALLEL = [
    "model=mlp",
    "grid.x=[-1,1,4]",
    "grid.y=[-1,1,4]",
    "dataset.max_samples=200",
    "engine.strategy=vmap",
]


@needs_mpirun
def test_data_parallel_groups_write_the_surface_of_one_process(tmp_path: Path) -> None:
    check_ok(run_surface(None, tmp_path / "one", DATA_PARALLEL))
    overrides = [*DATA_PARALLEL, "data_parallel=2", "chunk_points=3"]
    done = run_surface(5, tmp_path / "groups", overrides, limit_s=240)
    check_ok(done)
    got, attrs = read_surface(tmp_path / "groups" / "surface.h5")
    want, _ = read_surface(tmp_path / "one" / "surface.h5")
    assert attrs["io_driver"] == IO  # under mpio only the groups' leaders wrote
    assert_same_surface(got, want)
    # the chunks went to the leaders (ranks 1 and 3) only, and each member held half the data
    takers = set(re.findall(r"rank (\d+): \d+ points in", done.stdout))
    assert takers and takers <= {"1", "3"}, done.stdout
    for leader in takers:
        ranks = f"{leader}, {int(leader) + 1}"
        shards = (
            f"rank {leader}: data_parallel: ranks {ranks} counted train 100 + 100, test 100 + 100"
        )
        assert shards in done.stdout, done.stdout


@needs_mpirun
def test_data_parallel_that_does_not_divide_the_workers_is_one_error_line(tmp_path: Path) -> None:
    done = run_surface(4, tmp_path, [*DATA_PARALLEL, "data_parallel=2"])
    assert done.returncode == 2, done.stdout
    errors = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: data_parallel=2 needs the worker count (3: the ranks less the master) divisible "
        "by 2: run mpirun -n 5 ... (the master and 2 groups of 2), or pick a data_parallel that "
        "divides 3"
    ], done.stdout
