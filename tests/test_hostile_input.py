"""Hostile files and bad input (issue 12): every case ends in one `error:` line naming the key or
the file and exit status 2; no traceback, no hang, no file changed, and a file never runs code.

Each case prepares its inputs in its own folder (h5py edits of one tiny surface, a pickle whose
`__reduce__` writes a marker file), runs the real command in a subprocess, and checks the result.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import ModelConfig
from landscape_hpc.models import build_model

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
TINY = [
    "model=mlp",
    "+model.kwargs.hidden=[3]",
    "dataset=synthetic",
    "dataset.shape=[3]",
    "dataset.num_classes=3",
    "dataset.num_train=40",
    "dataset.num_test=20",
]
GRID = ["grid.x=[-1,1,3]", "grid.y=[-1,1,3]"]
MARKER = "pwned"


class Payload:
    """Unpickling this creates the marker file: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@dataclass
class Case:
    """A command and what its refusal must name; `setup(folder)` writes its input files and may
    return extra arguments."""

    command: list[str]
    needles: list[str]
    setup: Callable[[Path], list[str]] = lambda folder: []
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny checkpoint (ck.pt) and the 3x3 surface made from it (s.h5), shared by every case."""
    folder = tmp_path_factory.mktemp("base")
    model = build_model(ModelConfig(name="mlp", kwargs={"hidden": [3]}), (3,), 3)
    torch.save({"state_dict": model.state_dict()}, folder / "ck.pt")
    overrides = [
        f"out={folder}/s.h5",
        "plot=false",
        *TINY,
        *GRID,
        f"model.checkpoint={folder}/ck.pt",
    ]
    compute_surface(compose_config("surface", overrides))
    return folder


def _copy(base: Path, folder: Path) -> Path:
    shutil.copy(base / "s.h5", folder / "s.h5")
    return folder / "s.h5"


def _edit(folder: Path, edit: Callable[[h5py.File], None]) -> None:
    with h5py.File(folder / "s.h5", "r+") as f:
        edit(f)


def _config_edit(folder: Path, **sections: dict) -> None:
    """Updates sections (model, dataset) of the file's `config` attribute."""

    def edit(f: h5py.File) -> None:
        config = yaml.safe_load(str(f.attrs["config"]))
        for key, values in sections.items():
            config[key].update(values)
        f.attrs["config"] = yaml.safe_dump(config)

    _edit(folder, edit)


def _payload(folder: Path) -> Path:
    path = folder / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Payload(folder / MARKER)}))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the cases -------------------------------------------------------------------------------


def trust_in_file(folder: Path) -> list[str]:
    evil = _payload(folder)
    _config_edit(folder, model={"trust_checkpoint": True})

    def point_at_payload(f: h5py.File) -> None:
        f.attrs["checkpoint"] = str(evil)
        f.attrs["checkpoint_sha256"] = _sha(evil)

    _edit(folder, point_at_payload)
    return []


def custom_model_in_file(folder: Path) -> list[str]:
    command = {"command": f"touch {MARKER}"}
    _config_edit(folder, model={"name": "custom", "target": "os.system", "kwargs": command})
    return []


def custom_dataset_in_file(folder: Path) -> list[str]:
    command = {"command": f"touch {MARKER}"}
    _config_edit(folder, dataset={"name": "custom", "target": "os.system", "kwargs": command})
    return []


def _flip(path: Path, signature: bytes) -> None:
    """Overwrites the bytes after each `signature` (an HDF5 B-tree or heap) with garbage."""
    data = bytearray(path.read_bytes())
    start = data.find(signature)
    assert start > 0, signature
    while start > 0:
        data[start : start + 40] = b"\xff" * 40
        start = data.find(signature, start + 40)
    path.write_bytes(bytes(data))


def hessian(*args: str) -> list[str]:
    return ["geometry", "hessian", "surface=s.h5", "device=cpu", "lanczos_steps=2", *args]


def surface_cmd(*args: str) -> list[str]:
    return ["surface", *TINY, *GRID, "out=s.h5", "plot=false", *args]


def resumed(edit: Callable[[h5py.File], None]) -> Callable[[Path], list[str]]:
    """A copy of the base surface edited by `edit`, resumed by the surface command (its
    checkpoint given, so the fingerprint matches)."""

    def setup(folder: Path) -> list[str]:
        _edit(folder, edit)
        return []

    return setup


def _replace(name: str, value) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        if value is not None:
            f[name] = value

    return edit


def _set_attr(name: str, value) -> Callable[[h5py.File], None]:
    return lambda f: f.attrs.__setitem__(name, value)


def _one_row(folder: Path) -> list[str]:
    with h5py.File(folder / "row.h5", "w") as f:
        f["xcoordinates"] = np.linspace(-1, 1, 3)
        f["ycoordinates"] = np.zeros(1)
        f["train_loss"] = np.ones((1, 3))
        f["done"] = np.ones((1, 3), np.uint8)
    return []


def _trajectory(f: h5py.File) -> None:
    f["trajectory/x"] = np.zeros(3)
    f["trajectory/y"] = np.zeros(2)


def _not_done(f: h5py.File) -> None:
    f["train_loss"][0, 0] = np.nan
    f["train_acc"][0, 0] = np.nan
    f["test_loss"][0, 0] = np.nan
    f["test_acc"][0, 0] = np.nan


def _write(name: str, data: bytes) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        (folder / name).write_bytes(data)
        return []

    return setup


def _mkdir(name: str) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        (folder / name).mkdir()
        return []

    return setup


def _edited(edit: Callable[[h5py.File], None]) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        _edit(folder, edit)
        return []

    return setup


def _flipped(signature: bytes) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        _flip(folder / "s.h5", signature)
        return []

    return setup


#: lock files held by this process (the "other run") while a case runs
_HELD: list[int] = []


def _lock(folder: Path) -> list[str]:
    """s.h5.lock held by this process, as a running surface command holds it."""
    import fcntl

    fd = os.open(folder / "s.h5.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _HELD.append(fd)
    return []


def _png_bomb() -> bytes:
    """A PNG whose header claims 30000×30000 pixels (and holds none)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _mpo_job(folder: Path) -> Path:
    job = folder / "job"
    job.mkdir()
    (job / "plane.pt").write_bytes(b"the plane of an earlier run")
    return job


def _mpo_checkpoint(folder: Path) -> list[str]:
    torch.save({"weights": torch.zeros(2)}, _mpo_job(folder) / "checkpoint.pt")
    return []


def _mpo_surface(folder: Path) -> list[str]:
    (_mpo_job(folder) / "surface.h5").write_text("not HDF5")
    return []


def _truncated_sweep(folder: Path) -> list[str]:
    data = (folder / "s.h5").read_bytes()
    (folder / "sweep.h5").write_bytes(data[: len(data) // 3])
    return []


PLOT = ["plot", "s.h5", "--kind", "contour", "--out", "figs"]

CASES = {
    # security: a file never widens trust nor names code to import
    "hessian_trust_in_file": Case(
        hessian(), ["model.trust_checkpoint=true", "s.h5"], trust_in_file
    ),
    "hessian_custom_model": Case(
        hessian(), ["model=custom", "model.target=os.system"], custom_model_in_file
    ),
    "hessian_custom_dataset": Case(
        hessian(), ["dataset=custom", "dataset.target=os.system"], custom_dataset_in_file
    ),
    "hessian_interpolation": Case(
        hessian(),
        ["interpolation", "s.h5"],
        lambda d: _config_edit(d, model={"name": "${oc.env:HOME}"}) or [],
    ),
    "hessian_broken_yaml": Case(
        hessian(), ["not valid YAML", "s.h5"], _edited(_set_attr("config", "model: [unclosed"))
    ),
    # plot: damaged or odd files, bad options
    "plot_damaged_btree": Case(PLOT, ["s.h5", "damaged"], _flipped(b"TREE")),
    "plot_damaged_heap": Case(PLOT, ["s.h5", "damaged"], _flipped(b"HEAP")),
    "plot_xcoordinates_group": Case(
        PLOT,
        ["xcoordinates", "not a dataset"],
        _edited(lambda f: (f.__delitem__("xcoordinates"), f.create_group("xcoordinates"))),
    ),
    "plot_one_row": Case(["plot", "row.h5", "--out", "figs"], ["row.h5", "at least 2"], _one_row),
    "plot_trajectory_lengths": Case(PLOT, ["trajectory", "length"], _edited(_trajectory)),
    "plot_metric_bytes": Case(
        PLOT, ["train_loss", "not numbers"], _edited(_replace("train_loss", np.full((3, 3), b"x")))
    ),
    "plot_vlevel_zero": Case([*PLOT, "--vlevel", "0"], ["--vlevel", "positive"]),
    "plot_vlevel_negative": Case([*PLOT, "--vlevel", "-1"], ["--vlevel", "positive"]),
    "plot_vlevel_tiny": Case([*PLOT, "--vlevel", "1e-5"], ["--vlevel", "larger"]),
    "plot_vmin_above_vmax": Case([*PLOT, "--vmin", "5", "--vmax", "1"], ["--vmin", "--vmax"]),
    "plot_vmax_nan": Case([*PLOT, "--vmax", "nan"], ["--vmax", "finite"]),
    "plot_out_is_a_file": Case(
        ["plot", "s.h5", "--out", "figs.txt"], ["--out", "figs.txt"], _write("figs.txt", b"x")
    ),
    "plot_out_under_a_file": Case(
        ["plot", "s.h5", "--out", "figs.txt/sub"],
        ["--out", "figs.txt/sub"],
        _write("figs.txt", b""),
    ),
    "plot_directory": Case(["plot", "adir"], ["adir", "is a directory"], _mkdir("adir")),
    # keys out of range, each named
    "surface_chunk_points_zero": Case(
        ["surface", *TINY, *GRID, "out=new.h5", "chunk_points=0"], ["chunk_points=0"]
    ),
    "surface_no_splits": Case(["surface", *TINY, *GRID, "out=new.h5", "splits=[]"], ["splits"]),
    "hessian_one_lanczos_step": Case(
        ["geometry", "hessian", *TINY, "lanczos_steps=1"], ["lanczos_steps=1"]
    ),
    "geometry_unknown_experiment": Case(["geometry", "nosuch"], ["unknown experiment", "nosuch"]),
    "wedge_n_too_large": Case(["geometry", "wedge", "n=50", "dim=40"], ["n=50", "dim"]),
    # surface: a degenerate grid, resumed files that are not what the job writes
    "surface_one_point_axis": Case(["surface", *TINY, "grid.y=[0,0,1]", "out=new.h5"], ["grid.y"]),
    "surface_out_directory": Case(
        [*surface_cmd(), "out=adir", "overwrite=true"], ["out=adir", "directory"], _mkdir("adir")
    ),
    "surface_locked": Case(surface_cmd(), ["out=s.h5", f"pid {os.getpid()}", "another run"], _lock),
    "surface_misspelled_key": Case(["surface", "gird.x=[0,1,2]"], ["gird.x", "spelling"]),
    "surface_wrong_type": Case(["surface", "grid.x=abc"], ["grid.x=abc"]),
    "hessian_wrong_type": Case(["geometry", "hessian", "lanczos_steps=abc"], ["lanczos_steps"]),
    "directions_model2_missing": Case(
        [
            "surface",
            *TINY,
            "grid.x=[-1,1,3]",
            "grid.y=null",
            "out=new.h5",
            "directions.kind=models",
            "directions.model2=no.pt",
        ],
        ["directions.model2='no.pt'"],
    ),
    "hessian_locked": Case(hessian(), ["surface=s.h5", "another run"], _lock),
    "resume_done_wrong_shape": Case(
        surface_cmd(), ["done", "shape"], resumed(_replace("done", np.ones((2, 2), np.uint8)))
    ),
    "resume_done_float": Case(
        surface_cmd(), ["done", "float"], resumed(_replace("done", np.ones((3, 3))))
    ),
    "resume_done_missing": Case(
        surface_cmd(), ["done", "missing"], resumed(_replace("done", None))
    ),
    "resume_metric_int": Case(
        surface_cmd(), ["train_loss", "int"], resumed(_replace("train_loss", np.ones((3, 3), int)))
    ),
    "resume_metric_missing": Case(
        surface_cmd(), ["test_acc", "missing"], resumed(_replace("test_acc", None))
    ),
    "resume_done_over_nan": Case(surface_cmd(), ["marked done", "NaN"], resumed(_not_done)),
    "resume_fingerprint_not_json": Case(
        surface_cmd(), ["fingerprint", "overwrite=true"], resumed(_set_attr("fingerprint", "{oops"))
    ),
    "directions_load_damaged": Case(
        ["surface", *TINY, *GRID, "out=new.h5", "directions.load=s.h5"],
        ["directions.load=s.h5", "damaged"],
        _flipped(b"TREE"),
    ),
    # geometry, train: a mandatory key left out, a non-finite value, a diverging fit
    "tunnel_without_optima": Case(["geometry", "tunnel", *TINY], ["optima", "optima=..."]),
    "tunnel_short_dirs_negative": Case(
        ["geometry", "tunnel", *TINY, "optima=[ck.pt,ck.pt]", "short_dirs.n_directions=-1"],
        ["short_dirs.n_directions=-1", "≥ 0"],
    ),
    "connector_short_dirs_short_zero": Case(
        ["geometry", "connector", *TINY, "optima=[ck.pt,ck.pt]", "short_dirs.short=0"],
        ["short_dirs.short=0", "r_max"],
    ),
    "width_r_max_inf": Case(
        ["geometry", "width", *TINY, "optima=[ck.pt]", "r_max=inf"], ["r_max=inf", "finite"]
    ),
    "train_diverges": Case(
        ["train", *TINY, "epochs=2", "lr=1e30", "save_every=0"], ["diverged", "lr"]
    ),
    # mpo: a decompression bomb, a mask that would never finish, foreign files in out_dir
    "mpo_png_bomb": Case(
        ["mpo", "mask=image", "mask.path=bomb.png", "out_dir=job"],
        ["mask.path=bomb.png", "too large"],
        lambda d: (d / "bomb.png").write_bytes(_png_bomb()) and [],
    ),
    "mpo_mask_size_huge": Case(
        ["mpo", "mask=random", "mask.size=100000", "out_dir=job"], ["mask.size=100000", "1024"]
    ),
    "mpo_foreign_checkpoint": Case(
        ["mpo", "steps=2", "out_dir=job"], ["job/checkpoint.pt", "overwrite=true"], _mpo_checkpoint
    ),
    "mpo_surface_not_hdf5": Case(
        ["mpo", "steps=2", "out_dir=job"], ["job/surface.h5", "not an HDF5"], _mpo_surface
    ),
    # sweep report: damaged files in the folder
    "report_truncated_sweep": Case(
        ["sweep", "report", "."], ["sweep.h5", "damaged"], _truncated_sweep
    ),
    "report_bad_metrics_json": Case(
        ["sweep", "report", "."], ["metrics.json"], _write("metrics.json", b'{"job": [1')
    ),
}

# The surface command resumes the base file only with the checkpoint it was made from.
for _name, _case in CASES.items():
    if _case.command[0] == "surface" and "out=s.h5" in _case.command:
        _case.command.append("model.checkpoint=ck.pt")


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): _sha(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "run" not in p.relative_to(folder).parts
    }


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_with_one_line(name: str, base: Path, tmp_path: Path) -> None:
    case = CASES[name]
    _copy(base, tmp_path)
    shutil.copy(base / "ck.pt", tmp_path / "ck.pt")
    extra = case.setup(tmp_path)
    before = _snapshot(tmp_path)
    module, *args = case.command
    if module in ("surface", "geometry", "train", "mpo") or args[:1] == ["run"]:
        args = [*args, f"hydra.run.dir={tmp_path}/run"]
    env = {**os.environ, "MPLBACKEND": "Agg", **case.env}
    r = subprocess.run(
        [PYTHON, "-m", f"landscape_hpc.{module}", *args, *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    while _HELD:
        os.close(_HELD.pop())
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out[-3000:]
    assert r.returncode == 2, (r.returncode, out[-3000:])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out[-3000:]
    for needle in case.needles:
        assert needle in errors[0], (needle, errors[0])
    assert _snapshot(tmp_path) == before, "a file was changed, created or removed"
    assert not (tmp_path / MARKER).exists(), "the file ran code"


def test_a_stale_lock_is_taken_over_with_a_note(base: Path, tmp_path: Path) -> None:
    """A lock left by a process of this host that is gone: the run takes it over, says so,
    completes, and removes the lock."""
    lock = tmp_path / "s.h5.lock"
    lock.write_text(f"pid 999999 on {socket.gethostname()}\n")
    args = [*surface_cmd()[1:], f"hydra.run.dir={tmp_path}/run"]
    r = subprocess.run(
        [PYTHON, "-m", "landscape_hpc.surface", *args],
        cwd=tmp_path,
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "took over the stale lock of pid 999999" in r.stdout + r.stderr
    assert not lock.exists()
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["done"][()].all()


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not installed")
def test_a_refusal_under_mpirun_is_printed_once_without_mpi_abort(base: Path, tmp_path) -> None:
    """Rank 0 refuses the file (made for another grid) and tells every rank: one `error:`,
    exit status 2, no MPI_ABORT of the others, the file unchanged."""
    before = _sha(_copy(base, tmp_path))
    args = [*surface_cmd("grid.x=[-1,1,5]")[1:], f"hydra.run.dir={tmp_path}/run"]
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    r = subprocess.run(
        ["mpirun", "-n", "3", "--oversubscribe", PYTHON, "-m", "landscape_hpc.surface", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-3000:]
    assert [line for line in out.splitlines() if line.startswith("error")] == [
        "error: s.h5 was made for another job, so it is not resumed:"
    ], out[-3000:]
    assert "MPI_ABORT" not in out and "Traceback" not in out
    assert _sha(tmp_path / "s.h5") == before


def test_what_a_file_asks_for_is_granted_by_the_command_line_only(base: Path, tmp_path) -> None:
    """read_surface_source: the stored trust and custom target are accepted when the command line
    passes the same (and then the command line's are used), refused otherwise."""
    from landscape_hpc.config import DatasetConfig
    from landscape_hpc.errors import UserError
    from landscape_hpc.files.source import read_surface_source

    path = _copy(base, tmp_path)
    plain = ModelConfig(name="mlp")
    source = read_surface_source(path, plain, DatasetConfig())
    assert source.model.name == "mlp" and not source.model.trust_checkpoint
    _config_edit(tmp_path, model={"trust_checkpoint": True}, dataset={"download": True})
    with pytest.raises(UserError, match=r"model\.trust_checkpoint=true"):
        read_surface_source(path, plain, DatasetConfig())
    trusted = ModelConfig(name="mlp", trust_checkpoint=True)
    source = read_surface_source(path, trusted, DatasetConfig())
    assert source.model.trust_checkpoint and not source.dataset.download
    _config_edit(tmp_path, model={"name": "custom", "target": "pkg.build"})
    for cli in (trusted, ModelConfig(name="custom", target="pkg.other", trust_checkpoint=True)):
        with pytest.raises(UserError, match=r"model=custom model\.target=pkg\.build"):
            read_surface_source(path, cli, DatasetConfig())
    cli = ModelConfig(name="custom", target="pkg.build", trust_checkpoint=True)
    assert read_surface_source(path, cli, DatasetConfig()).model.target == "pkg.build"
