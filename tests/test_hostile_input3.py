"""Hostile input, round three (issue 33): one rule per kind, each case run as the real command.

  outputs never alias inputs   out= naming an input (the same path, a symlink, a hard link, a
                               file inside an input folder) is refused even with overwrite=true
  regular files only           a FIFO (or a directory) given where a file is read: one line
                               "is not a regular file" at once, never a hang
  locks keyed on the file      a symlink and its target share one lock; a lock file's bytes are
                               never echoed raw; a lock path that is a directory is one line
  Hydra's failures one line    an interpolation that does not resolve (unset variable, cycle,
                               unknown resolver) names its key

Every case: exit 2, one `error:` line with the needles, no traceback, within the timeout, and
every file of the folder byte-identical afterwards (the harness of tests/test_hostile_input.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_hostile_input import _HELD as HELD
from test_hostile_input import (  # noqa: F401 - base is a fixture
    GRID,
    MARKER,
    PYTHON,
    TINY,
    Case,
    _lock,
    _snapshot,
    base,
    hessian,
)

from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import ModelConfig
from landscape_hpc.models import build_model

#: a hang shows as a timeout, well under the harness's (the commands end in seconds)
TIMEOUT = 60


def surface_cmd(*args: str) -> list[str]:
    """The surface command on the tiny problem; out=s.h5 unless `args` name another out=."""
    out = [] if any(a.startswith("out=") for a in args) else ["out=s.h5"]
    return ["surface", *TINY, *GRID, *out, "plot=false", *args]


def _train_run(folder: Path) -> list[str]:
    """t/model.pt: a finished train run's model, about to be the start of another."""
    (folder / "t").mkdir()
    shutil.copy(folder / "ck.pt", folder / "t/model.pt")
    return []


def _fifo(name: str) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(folder / name)
        return []

    return setup


def _symlink(name: str, target: str) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        os.symlink(folder / target, folder / name)
        return []

    return setup


def _hardlink(name: str, target: str) -> Callable[[Path], list[str]]:
    def setup(folder: Path) -> list[str]:
        os.link(folder / target, folder / name)
        return []

    return setup


def _trajectory(folder: Path) -> list[str]:
    """traj/checkpoints/epoch_000{0,1,2}.pt of the tiny model, moved a little each epoch."""
    (folder / "traj/checkpoints").mkdir(parents=True)
    model = build_model(ModelConfig(name="mlp", kwargs={"hidden": [3]}), (3,), 3)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(3):
        state = {
            k: v + 0.1 * epoch * torch.randn(v.shape, generator=generator)
            for k, v in model.state_dict().items()
        }
        path = folder / f"traj/checkpoints/epoch_{epoch:04d}.pt"
        torch.save({"state_dict": state, "epoch": epoch}, path)
    return []


def _nan_checkpoint(folder: Path) -> list[str]:
    """nan.pt: ck.pt with one NaN weight."""
    state = torch.load(folder / "ck.pt", weights_only=True)["state_dict"]
    name = sorted(k for k in state if k.endswith("weight"))[0]
    state[name].view(-1)[0] = float("nan")
    torch.save({"state_dict": state}, folder / "nan.pt")
    return []


def _inf_directions(folder: Path) -> list[str]:
    """d.h5: the base surface's directions with one inf entry in y."""
    import h5py

    shutil.copy(folder / "s.h5", folder / "d.h5")
    with h5py.File(folder / "d.h5", "r+") as f:
        group = f["directions/y"]
        name = sorted(group)[0]
        data = group[name][()]
        data.reshape(-1)[0] = float("inf")
        group[name][...] = data
    return []


def _one_d(folder: Path) -> list[str]:
    """Two 1D surfaces, one named as the overlay figure plot writes (an HDF5 file all the same)."""
    for name in ("a.h5", "overlay_1d_loss_acc.png"):
        overrides = [f"out={folder}/{name}", "plot=false", *TINY, "grid.x=[-1,1,3]", "grid.y=null"]
        overrides.append(f"hydra.run.dir={folder}/run")
        compute_surface(compose_config("surface", overrides))
    return []


def _lock_through_link(folder: Path) -> list[str]:
    """A run holds s.h5's lock; this one names s.h5 through a symlink."""
    os.symlink(folder / "s.h5", folder / "link.h5")
    return _lock(folder)


def _garbage_lock(folder: Path) -> list[str]:
    (folder / "s.h5.lock").write_bytes(b"\x1b[2J\x1b]0;owned\x07 pid on host\n")
    return []


def _lock_dir(folder: Path) -> list[str]:
    (folder / "s.h5.lock").mkdir()
    return []


def _metrics_beside_fifo_history(folder: Path) -> list[str]:
    """A random-mask run's metrics.json with a FIFO as its history.csv."""
    import json

    (folder / "job").mkdir()
    job = {"model": "mlp", "bn": False, "fill_prob": 0.5, "seed": 0}
    metrics = {"job": job, "train": {}, "test": {}, "steps": 2, "wall_seconds": 1.0}
    (folder / "job/metrics.json").write_text(json.dumps(metrics))
    os.mkfifo(folder / "job/history.csv")
    return []


CK = ["model.checkpoint=ck.pt"]
NOT_REGULAR = "is not a regular file"

CASES = {
    # rule 5: an interpolation on the command line that does not resolve names its key
    "interpolation_unset_env": Case(
        surface_cmd("grid.x=[-1,1,${oc.env:LH_UNSET_FOR_TEST}]"),
        ["grid.x", "Environment variable 'LH_UNSET_FOR_TEST' not found", "plain value"],
    ),
    "interpolation_cycle": Case(
        ["train", "epochs=1", "seed=${seed}"], ["Recursive interpolation", "plain value"]
    ),
    "interpolation_unknown_resolver": Case(
        ["train", "epochs=1", "lr=${nope:1}"], ["lr", "Unsupported interpolation type nope"]
    ),
    # rule 1: an output that is an input
    "surface_out_is_checkpoint": Case(
        surface_cmd("out=ck.pt", "overwrite=true", *CK),
        ["out=ck.pt is the input checkpoint model.checkpoint=ck.pt", "choose another out="],
    ),
    "surface_out_symlink_to_checkpoint": Case(
        surface_cmd("out=link.pt", "overwrite=true", *CK),
        ["out=link.pt", "the input checkpoint model.checkpoint=ck.pt"],
        _symlink("link.pt", "ck.pt"),
    ),
    "surface_out_hardlink_of_checkpoint": Case(
        surface_cmd("out=hard.pt", "overwrite=true", *CK),
        ["out=hard.pt", "the input checkpoint model.checkpoint=ck.pt"],
        _hardlink("hard.pt", "ck.pt"),
    ),
    "surface_out_is_directions_file": Case(
        surface_cmd("overwrite=true", "directions.load=s.h5", *CK),
        ["out=s.h5 is the input directions file directions.load=s.h5"],
    ),
    "surface_out_is_model2": Case(
        surface_cmd(
            "overwrite=true",
            "directions.kind=models",
            "directions.model2=s.h5",
            "directions.model3=ck.pt",
            *CK,
        ),
        ["out=s.h5", "model2=s.h5"],
    ),
    "surface_out_inside_trajectory": Case(
        surface_cmd(
            "out=traj/checkpoints/epoch_0002.pt",
            "overwrite=true",
            "directions.kind=pca",
            "directions.trajectory=traj",
        ),
        ["out=traj/checkpoints/epoch_0002.pt", "inside the input trajectory"],
        _trajectory,
    ),
    "train_out_dir_holds_checkpoint": Case(
        ["train", *TINY, "epochs=1", "save_every=0", "model.checkpoint=t/model.pt", "out_dir=t"],
        ["out_dir=t/model.pt is the input checkpoint model.checkpoint=t/model.pt"],
        _train_run,
    ),
    "plot_overlay_over_its_input": Case(
        ["plot", "a.h5", "overlay_1d_loss_acc.png", "--kind", "1d", "--out", "."],
        ["overlay_1d_loss_acc.png", "is the input", "--out"],
        _one_d,
    ),
    # rule 2: only regular files are read
    "fifo_checkpoint": Case(
        surface_cmd("out=new.h5", "model.checkpoint=ck.fifo"),
        ["model.checkpoint=ck.fifo", NOT_REGULAR],
        _fifo("ck.fifo"),
    ),
    "directory_checkpoint": Case(
        surface_cmd("out=new.h5", "model.checkpoint=ckdir"),
        ["model.checkpoint=ckdir", NOT_REGULAR, "directory"],
        lambda d: (d / "ckdir").mkdir() or [],
    ),
    "fifo_directions": Case(
        surface_cmd("out=new.h5", "directions.load=d.fifo", *CK),
        ["directions.load=d.fifo", NOT_REGULAR],
        _fifo("d.fifo"),
    ),
    "fifo_surface_out": Case(
        surface_cmd("out=s.fifo", *CK), ["out=s.fifo", NOT_REGULAR], _fifo("s.fifo")
    ),
    "fifo_trajectory_checkpoint": Case(
        surface_cmd("out=new.h5", "directions.kind=pca", "directions.trajectory=traj"),
        ["epoch_0003.pt", NOT_REGULAR],
        lambda d: _trajectory(d) + _fifo("traj/checkpoints/epoch_0003.pt")(d),
    ),
    "fifo_hessian_surface": Case(
        hessian("surface=s.fifo"), ["surface=s.fifo", NOT_REGULAR], _fifo("s.fifo")
    ),
    "fifo_mpo_mask": Case(
        ["mpo", "mask=image", "mask.path=m.fifo", "out_dir=job"],
        ["mask.path=m.fifo", NOT_REGULAR],
        _fifo("m.fifo"),
    ),
    "fifo_mpo_checkpoint": Case(
        ["mpo", "steps=2", "out_dir=job"],
        ["job/checkpoint.pt", NOT_REGULAR],
        _fifo("job/checkpoint.pt"),
    ),
    "fifo_mpo_surface": Case(
        ["mpo", "steps=2", "out_dir=job"], ["job/surface.h5", NOT_REGULAR], _fifo("job/surface.h5")
    ),
    "fifo_plot_surface": Case(
        ["plot", "s.fifo", "--kind", "contour", "--out", "figs"],
        ["s.fifo", NOT_REGULAR],
        _fifo("s.fifo"),
    ),
    # rule 4: non-finite inputs refused before any work
    "nan_checkpoint": Case(
        surface_cmd("out=new.h5", "model.checkpoint=nan.pt"),
        ["model.checkpoint='nan.pt'", "tensor", "NaN"],
        _nan_checkpoint,
    ),
    "inf_directions": Case(
        surface_cmd("out=new.h5", "directions.load=d.h5", *CK),
        ["directions.load=d.h5", "direction y", "inf"],
        _inf_directions,
    ),
    "fifo_sweep_report_metrics": Case(
        ["sweep", "report", "."], ["metrics.json", NOT_REGULAR], _fifo("job/metrics.json")
    ),
    "fifo_sweep_report_history": Case(
        ["sweep", "report", "."], ["history.csv", NOT_REGULAR], _metrics_beside_fifo_history
    ),
    # rule 3: locks keyed on the file; a lock's bytes never reach the terminal raw
    "lock_through_symlink": Case(
        surface_cmd("out=link.h5", *CK), ["out=link.h5", "another run"], _lock_through_link
    ),
    "lock_garbage": Case(surface_cmd(*CK), ["s.h5.lock", "pid N on HOST", "\\x1b"], _garbage_lock),
    "lock_is_directory": Case(surface_cmd(*CK), ["s.h5.lock", "out=s.h5"], _lock_dir),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_with_one_line(name: str, base: Path, tmp_path: Path) -> None:  # noqa: F811
    case = CASES[name]
    shutil.copy(base / "s.h5", tmp_path / "s.h5")
    shutil.copy(base / "ck.pt", tmp_path / "ck.pt")
    extra = case.setup(tmp_path)
    before = _snapshot(tmp_path)
    module, *args = case.command
    if module in ("surface", "geometry", "train", "mpo"):
        args = [*args, f"hydra.run.dir={tmp_path}/run"]
    try:
        r = subprocess.run(
            [PYTHON, "-m", f"landscape_hpc.{module}", *args, *extra],
            cwd=tmp_path,
            env={**os.environ, "MPLBACKEND": "Agg", **case.env},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: the command hung (no answer in {TIMEOUT} s)")
    finally:
        while HELD:
            os.close(HELD.pop())
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out[-3000:]
    assert "\x1b" not in out and "\x07" not in out, "a file's bytes reached the terminal raw"
    assert r.returncode == 2, (r.returncode, out[-3000:])
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out[-3000:]
    for needle in case.needles:
        assert needle in errors[0], (needle, errors[0])
    assert _snapshot(tmp_path) == before, "a file was changed, created or removed"
    assert not (tmp_path / MARKER).exists()


def test_a_symlinked_run_resumes_the_same_file_once_the_lock_is_free(
    base: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The lock beside the resolved file is taken and removed by a run through a symlink (not a
    link.h5.lock left behind); the file resumes as it would by its own name."""
    shutil.copy(base / "s.h5", tmp_path / "s.h5")
    shutil.copy(base / "ck.pt", tmp_path / "ck.pt")
    os.symlink(tmp_path / "s.h5", tmp_path / "link.h5")
    args = [*surface_cmd("out=link.h5", *CK)[1:], f"hydra.run.dir={tmp_path}/run"]
    r = subprocess.run(
        [PYTHON, "-m", "landscape_hpc.surface", *args],
        cwd=tmp_path,
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "s.h5.lock").exists()
    assert not (tmp_path / "link.h5.lock").exists()


def test_paths_rules_directly(tmp_path: Path) -> None:
    """The helpers on their own: a FIFO and a directory are not regular, a file is; an output
    inside an input folder and a hard link are caught, a sibling is not."""
    from landscape_hpc import paths
    from landscape_hpc.errors import UserError

    os.mkfifo(tmp_path / "f")
    (tmp_path / "d").mkdir()
    (tmp_path / "x").write_text("x")
    assert paths.special_kind(tmp_path / "f") == "a FIFO (named pipe)"
    assert paths.special_kind(tmp_path / "d") == "a directory"
    assert paths.special_kind(tmp_path / "x") is None
    assert paths.special_kind(tmp_path / "absent") is None
    os.link(tmp_path / "x", tmp_path / "y")
    with pytest.raises(UserError, match="is the input"):
        paths.check_no_alias({"out": tmp_path / "y"}, {"model.checkpoint": tmp_path / "x"})
    with pytest.raises(UserError, match="lies inside"):
        paths.check_no_alias({"out": tmp_path / "d/new.h5"}, {"k": tmp_path / "d"})
    paths.check_no_alias({"out": tmp_path / "dd/new.h5"}, {"k": tmp_path / "d"})  # a sibling
    paths.check_no_alias({"out": tmp_path / "z"}, {"k": tmp_path / "x", "none": None})
    assert paths.printable("a\x1b[2Jb\x07") == "a\\x1b[2Jb\\x07"
