"""`pip install landscape_hpc` without the [mpi] extra: no mpi4py, every single-process command
works through the serial world (landscape_hpc/parallel.py) and gives the results a world of one
gives under mpi4py; a process that mpirun started as one of several ranks stops with one line.

The environment without mpi4py is a fresh venv that sees this interpreter's site-packages (torch,
h5py, ... and mpi4py, where installed) through a .pth file, with a meta-path finder, installed by
another .pth file, that refuses mpi4py as an interpreter without it does; the package comes from
this checkout (PYTHONPATH). test_the_blocker_blocks_mpi4py_and_nothing_else shows the finder is
what stops mpi4py, so the tests below cannot pass because the environment is simply broken.
"""

from __future__ import annotations

import os
import pickle
import site
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
from mpi_helpers import (
    MPI_ROOT_ENV,
    assert_same_surface,
    check_ok,
    mpirun_available,
    read_surface,
    run_command,
)

from landscape_hpc import parallel
from landscape_hpc.errors import SharedUserError, UserError
from landscape_hpc.files import hdf5

REPO = Path(__file__).resolve().parents[1]

BLOCKER = '''
"""mpi4py is not installed here: importing it fails as a missing module's import does."""
import sys


class NoMpi4py:
    def find_spec(self, name, path=None, target=None):
        if name == "mpi4py" or name.startswith("mpi4py."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoMpi4py())
'''


@pytest.fixture(scope="module")
def nompi_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv without mpi4py (see the module docstring)."""
    env_dir = tmp_path_factory.mktemp("nompi") / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    (own,) = env_dir.glob("lib/python*/site-packages")
    (own / "_no_mpi4py.py").write_text(BLOCKER)
    (own / "00_no_mpi4py.pth").write_text("import _no_mpi4py\n")
    # addsitedir, not a bare path line: the running venv's own .pth files (an editable install,
    # a parent venv) are read too. From the running interpreter, never a fixed path.
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in parents]
    (own / "01_parent_site.pth").write_text("\n".join(lines) + "\n")
    return env_dir / "bin" / "python"


def _env(**extra: str) -> dict[str, str]:
    """This checkout importable, no launcher's variables (the tests set those they test)."""
    env = {k: v for k, v in os.environ.items() if not _launcher_var(k)}
    env.update(MPI_ROOT_ENV, PYTHONPATH=str(REPO), MPLBACKEND="Agg", **extra)
    return env


def _launcher_var(name: str) -> bool:
    return any(name in (size, rank) for size, rank, _ in parallel.LAUNCHER_ENV)


def _python(python: Path, code: str, **extra: str) -> subprocess.CompletedProcess:
    argv = [str(python), "-c", textwrap.dedent(code)]
    return run_command(argv, _env(**extra), limit_s=120, cwd=REPO)


def test_the_blocker_blocks_mpi4py_and_nothing_else(nompi_python: Path) -> None:
    blocked = _python(nompi_python, "import mpi4py")
    assert blocked.returncode == 1
    assert "ModuleNotFoundError: No module named 'mpi4py'" in blocked.stdout
    # the rest of the parent environment is there, and the package is this checkout's
    check_ok(
        _python(
            nompi_python,
            f"""
            import h5py, hydra, torch, landscape_hpc, sys
            assert sys.prefix != {sys.prefix!r}, sys.prefix
            assert landscape_hpc.__file__.startswith({str(REPO)!r}), landscape_hpc.__file__
            """,
        )
    )
    if parallel.HAVE_MPI4PY:  # mpi4py is on that env's path: only the finder stops it
        unblocked = """
            import sys
            sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "NoMpi4py"]
            import mpi4py
            """
        check_ok(_python(nompi_python, unblocked))


def test_the_package_and_the_engine_work_without_mpi4py(nompi_python: Path) -> None:
    code = """
        import math, sys, torch
        from torch import nn
        from landscape_hpc import directions, parallel
        from landscape_hpc.engine import Subspace, evaluate_points, evaluate_points_loop

        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        origin = {k: v.clone() for k, v in model.state_dict().items()}
        keys = directions.direction_keys(model, "weights")
        sub = Subspace(origin, directions.random_basis(origin, keys, 2, 0, "filter", "biasbn"))
        coords = torch.tensor([[0.0, 0.0], [0.5, -0.5], [1.0, 1.0]])  # (K=3, d=2)
        data = {"t": (torch.randn(32, 4), torch.randint(0, 3, (32,)))}  # (N, 4), (N,)
        got = evaluate_points(model, sub, coords, data)["t"]
        want = evaluate_points_loop(model, sub, coords, data)["t"]
        assert abs(got.loss - want.loss).max() < 1e-5, (got.loss, want.loss)

        comm = parallel.world()
        assert not parallel.HAVE_MPI4PY and type(comm).__name__ == "SerialWorld"
        results = list(parallel.run_tasks(comm, math.sqrt, [1.0, 4.0, 9.0]))
        # yielded as they finish: two in flight may come back in either order
        assert sorted((r.value, r.rank) for r in results) == [(1.0, 0), (2.0, 0), (3.0, 0)]
        assert parallel.placement(comm).ranks_on_node == 1
        assert not any(m.startswith("mpi4py") for m in sys.modules)
        print("ok")
        """
    done = _python(nompi_python, code)
    check_ok(done)
    assert done.stdout.strip().endswith("ok")


def _surface_argv(python: Path, out: Path) -> list[str]:
    return [
        str(python),
        "-m",
        "landscape_hpc.surface",
        "model=mlp",
        "grid.x=[-1,1,3]",
        "grid.y=[-1,1,3]",
        "dataset.max_samples=64",
        "engine.strategy=vmap",  # pinned: the same kernels, so the same bits
        "plot=false",
        f"out={out}",
        f"hydra.run.dir={out.parent / 'run'}",
    ]


def test_a_surface_without_mpi4py_equals_the_one_with_it(
    nompi_python: Path, tmp_path: Path
) -> None:
    with_mpi, without = tmp_path / "mpi" / "surface.h5", tmp_path / "nompi" / "surface.h5"
    check_ok(run_command(_surface_argv(Path(sys.executable), with_mpi), _env(), cwd=tmp_path))
    done = run_command(_surface_argv(nompi_python, without), _env(), cwd=tmp_path)
    check_ok(done)
    got, attrs = read_surface(without)
    want, _ = read_surface(with_mpi)
    assert attrs["io_driver"] == "gather"  # mpio needs mpi4py, even where h5py has MPI
    assert got["done"].all() and got["train_loss"].shape == (3, 3)
    assert_same_surface(got, want, rtol=0.0)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error")]


def test_a_launcher_with_two_ranks_without_mpi4py_is_refused(
    nompi_python: Path, tmp_path: Path
) -> None:
    out = tmp_path / "surface.h5"
    argv = _surface_argv(nompi_python, out)
    done = run_command(argv, _env(OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="0"))
    assert done.returncode == 2, done.stdout[-3000:]
    assert "Traceback" not in done.stdout
    (line,) = _error_lines(done.stdout)
    assert line.startswith("error: this process is running under mpirun with 2 ranks")
    assert 'mpi4py is not installed: pip install "landscape_hpc[mpi]"' in line
    assert not out.exists()
    # the other ranks stop too, and leave the saying to rank 0
    done = run_command(argv, _env(OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_RANK="1"))
    assert done.returncode == 2 and _error_lines(done.stdout) == [], done.stdout[-3000:]


@pytest.mark.skipif(not mpirun_available(), reason="mpirun is not installed")
def test_mpirun_with_two_ranks_without_mpi4py_says_so_once(
    nompi_python: Path, tmp_path: Path
) -> None:
    out = tmp_path / "surface.h5"
    argv = ["mpirun", "-n", "2", "--oversubscribe", *_surface_argv(nompi_python, out)]
    done = run_command(argv, _env())
    assert done.returncode == 2, done.stdout[-3000:]
    assert "Traceback" not in done.stdout
    (line,) = _error_lines(done.stdout)
    assert "mpirun with 2 ranks" in line and "landscape_hpc[mpi]" in line
    assert not out.exists()


# --- the serial world in this process, against mpi4py's world of one where it is installed


def test_launched_ranks_reads_the_launchers_variables() -> None:
    assert parallel.launched_ranks({}) == (1, 0, "")
    ompi = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"}
    assert parallel.launched_ranks(ompi) == (4, 3, "mpirun")
    assert parallel.launched_ranks({"PMI_SIZE": "2", "PMI_RANK": "1"}) == (2, 1, "mpirun")
    step = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}
    assert parallel.launched_ranks(step) == (8, 5, "srun")
    # a batch script of a many-task job is one process: SLURM_NTASKS alone is no launcher
    assert parallel.launched_ranks({"SLURM_NTASKS": "8"}) == (1, 0, "")
    assert parallel.launched_ranks({"PMI_SIZE": "many"}) == (1, 0, "")


def test_world_without_mpi4py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "MPI", None)
    for size_var, rank_var, _ in parallel.LAUNCHER_ENV:
        monkeypatch.delenv(size_var, raising=False)
        monkeypatch.delenv(rank_var, raising=False)
    assert isinstance(parallel.world(), parallel.SerialWorld)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")  # mpirun -n 1: one process, fine
    assert isinstance(parallel.world(), parallel.SerialWorld)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "3")
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    with pytest.raises(UserError, match=r"srun with 3 ranks but mpi4py is not installed"):
        parallel.world()


def test_io_auto_gathers_and_io_mpio_is_refused_without_mpi4py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parallel, "HAVE_MPI4PY", False)
    assert hdf5.use_mpio("io", "auto") is False
    assert hdf5.use_mpio("io", "gather") is False
    with pytest.raises(UserError, match=r"io=mpio but (mpi4py is not installed|this h5py)"):
        hdf5.use_mpio("io", "mpio")


def _square(x: int) -> int:
    return x * x


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def test_run_tasks_on_the_serial_world_matches_a_world_of_one() -> None:
    serial = parallel.SerialWorld()
    # results come as tasks finish: in any order
    got = sorted((r.task, r.value, r.rank) for r in parallel.run_tasks(serial, _square, range(7)))
    assert got == [(i, i * i, 0) for i in range(7)]
    if parallel.HAVE_MPI4PY:  # mpi4py's own world of one (this process)
        comm = parallel.MPI.COMM_WORLD
        assert comm.Get_size() == 1
        want = sorted(
            (r.task, r.value, r.rank) for r in parallel.run_tasks(comm, _square, range(7))
        )
        assert got == want
        assert parallel.placement(serial) == parallel.placement(comm)
    with pytest.raises(parallel.TaskError, match=r"rank 0 on .* failed on 3: ValueError: three"):
        list(parallel.run_tasks(serial, _fails_on_three, range(5)))


def _refuses_three(x: int) -> int:
    if x == 3:
        raise UserError("x=3 is refused; pass another x")
    return x


def test_a_user_error_in_a_task_reaches_the_master_as_that_user_error() -> None:
    """Bad input found on a worker is the input's fault: one line, exit 2, not a TaskError's
    traceback."""
    with pytest.raises(UserError) as caught:
        list(parallel.run_tasks(parallel.SerialWorld(), _refuses_three, range(5)))
    assert not isinstance(caught.value, parallel.TaskError)
    assert str(caught.value) == "x=3 is refused; pass another x"


def test_the_serial_worlds_collectives_answer_as_one_rank() -> None:
    serial = parallel.SerialWorld()
    sent = {"a": [1, 2]}
    got = serial.bcast(sent, root=0)
    assert got == sent and got is not sent  # through pickle, as mpi4py sends it
    assert serial.allgather(5) == [5] and serial.gather(5) == [5] and serial.allreduce(5) == 5
    assert serial.Split_type(0).Get_size() == 1
    serial.Barrier()
    with pytest.raises((pickle.PicklingError, AttributeError)):  # what cannot travel fails here
        serial.bcast(lambda: None)

    def refuse() -> None:
        raise UserError("x=1 is wrong; pass x=2")

    with pytest.raises(SharedUserError, match="x=1 is wrong"):
        parallel.on_master(serial, refuse)
    assert parallel.on_master(serial, lambda: 7) == 7
