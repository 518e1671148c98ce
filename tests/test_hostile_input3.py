"""Hostile input, round three (issue 33): one rule per kind, each case run as the real command.

  outputs never alias inputs   out= naming an input (the same path, a symlink, a hard link, a
                               file inside an input folder) is refused even with overwrite=true
  regular files only           a FIFO (or a directory) given where a file is read: one line
                               "is not a regular file" at once, never a hang
  locks keyed on the file      a symlink and its target share one lock; a lock file's bytes are
                               never echoed raw; a lock path that is a directory is one line
  Hydra's failures one line    an interpolation that does not resolve (unset variable, cycle,
                               unknown resolver) names its key
  non-finite inputs            trajectories (missing epoch, 2-D x, string lr, NaN), grid bounds
                               whose coordinates overflow, a fill probability of inf or NaN
  files checked on resume      a surface's coordinates, float64 metrics, fingerprint type,
                               NaN-on-one-split done points; an MPO checkpoint's step; a sweep
                               job done without values, or whose datasets and attributes (host,
                               status, metrics, history, values) have odd shapes or types (on
                               report too); sweep job keys that collide
  YAML with limits             a stored config with aliases (billion laughs) or over 1 MiB
  limits stated                seeds outside 0..2**32-1 (the API's too); huge resolution,
                               dense, n_dense, n_segments, n_distances and rays × distances;
                               synthetic data over 4 GiB; masks over 256×256 cells
  locks for every writer       train's out_dir and the sweep file, through symlinks too
  images at their bit depth    1-bit, 8/16-bit grey, palette, alpha (a direct test per mode)

Every case: exit 2, one `error:` line with the needles, no traceback, within the timeout, and
every file of the folder byte-identical afterwards (the harness of tests/test_hostile_input.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


def _hard_linked_output(folder: Path) -> list[str]:
    """s.h5 exists under a second name too: a lock by name cannot cover both."""
    (folder / "s.h5").write_bytes(b"not computed into")
    os.link(folder / "s.h5", folder / "hard.h5")
    return []


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


def _pca_surface(edit: Callable) -> Callable[[Path], list[str]]:
    """p.h5: a 3x3 surface along PCA directions of traj/ (it stores trajectory/x, y, epoch, lr),
    then `edit(trajectory group)`."""

    def setup(folder: Path) -> list[str]:
        import h5py

        _trajectory(folder)
        overrides = [f"out={folder}/p.h5", "plot=false", *TINY, *GRID, "directions.kind=pca"]
        overrides += [f"directions.trajectory={folder}/traj", f"hydra.run.dir={folder}/run"]
        compute_surface(compose_config("surface", overrides))
        shutil.rmtree(folder / "run", ignore_errors=True)
        with h5py.File(folder / "p.h5", "r+") as f:
            edit(f["trajectory"])
        return []

    return setup


def _replace_dataset(name: str, value) -> Callable:
    def edit(group) -> None:
        old = group[name][()]
        del group[name]
        group[name] = value(old) if callable(value) else value

    return edit


def _nan_at_1(values):
    values = values.copy()
    values[1] = float("nan")
    return values


def _metrics_with_fill(fill: str) -> Callable[[Path], list[str]]:
    """job/metrics.json of a random-mask run whose fill_prob is `fill` (JSON text)."""

    def setup(folder: Path) -> list[str]:
        (folder / "job").mkdir()
        job = '"job": {"model": "mlp", "bn": false, "fill_prob": FILL, "seed": 0}'
        rest = '"train": {}, "test": {}, "steps": 2, "wall_seconds": 1.0'
        text = "{" + job.replace("FILL", fill) + ", " + rest + "}"
        (folder / "job/metrics.json").write_text(text)
        return []

    return setup


def _resumed(edit: Callable) -> Callable[[Path], list[str]]:
    """s.h5 (the base surface, every point done) edited by `edit(file)`, then resumed."""

    def setup(folder: Path) -> list[str]:
        import h5py

        with h5py.File(folder / "s.h5", "r+") as f:
            edit(f)
        return []

    return setup


def _set(name: str, index, value) -> Callable:
    def edit(f) -> None:
        f[name][index] = value

    return edit


def _retyped(name: str, dtype: str) -> Callable:
    def edit(f) -> None:
        values = f[name][()]
        del f[name]
        f[name] = values.astype(dtype)

    return edit


#: a tiny MPO fit (tests/test_mpo_command.py's), a held-out check every 2 steps
MPO_TINY = [
    "model=mlp",
    "+model.kwargs.hidden=[8]",
    "dataset.max_samples=200",
    "mask.name=square",
    "mask.size=6",
    "batch_size=16",
    "cells_per_step=4",
    "eval_every=2",
    "plot=false",
]


def _mpo_fit_claiming(step: int) -> Callable[[Path], list[str]]:
    """job/: a 4-step fit whose checkpoint.pt then claims `step` steps."""

    def setup(folder: Path) -> list[str]:
        from landscape_hpc.mpo.command import run_mpo

        overrides = [f"out_dir={folder}/job", *MPO_TINY, "steps=4"]
        run_mpo(compose_config("mpo", [*overrides, f"hydra.run.dir={folder}/run"]))
        ck = torch.load(folder / "job/checkpoint.pt", weights_only=True)
        ck["step"] = step
        torch.save(ck, folder / "job/checkpoint.pt")
        shutil.rmtree(folder / "run", ignore_errors=True)
        return []

    return setup


#: a one-job sweep of a few steps (tests/test_sweep.py's sizes)
SWEEP_TINY = [
    "sweep.fill_probs=[0.5]",
    "sweep.seeds=[1]",
    "sweep.models=[mlp]",
    "steps=3",
    "mask.size=5",
    "dataset.max_samples=150",
    "eval_samples=40",
    "batch_size=32",
    "cells_per_step=4",
    "plot=false",
    "out_dir=sw",
]


def _finished_sweep(folder: Path) -> None:
    """sw/sweep.h5 of the finished one-job sweep in `folder` (made once per session, beside the
    cases' folders, and copied)."""
    cache = folder.parent / "finished_sweep"
    if not (cache / "sw/sweep.h5").exists():
        cache.mkdir(exist_ok=True)
        r = subprocess.run(
            [PYTHON, "-m", "landscape_hpc.sweep", f"hydra.run.dir={cache}/run", *SWEEP_TINY],
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 3,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert not (cache / "sw/sweep.h5.lock").exists()  # released at the end
    (folder / "sw").mkdir()
    shutil.copy(cache / "sw/sweep.h5", folder / "sw/sweep.h5")


def _sweep_done_without_values(folder: Path) -> list[str]:
    """sw/sweep.h5 of the finished one-job sweep, its job then emptied: every value NaN, no
    cell done, and still marked done."""
    import h5py
    import numpy as np

    _finished_sweep(folder)
    with h5py.File(folder / "sw/sweep.h5", "r+") as f:
        g = f["jobs/mlp/fill_0.5/seed_1"]
        assert int(g["status"][()]) == 1  # done
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            g[name][...] = np.nan
        g["done"][...] = 0
    return []


def _sweep_job_edited(edit: Callable) -> Callable[[Path], list[str]]:
    """sw/sweep.h5 of the finished one-job sweep, its job group then edited by `edit(group)`."""

    def setup(folder: Path) -> list[str]:
        import h5py

        _finished_sweep(folder)
        with h5py.File(folder / "sw/sweep.h5", "r+") as f:
            edit(f["jobs/mlp/fill_0.5/seed_1"])
        return []

    return setup


def _attr(name: str, value) -> Callable:
    def edit(g) -> None:
        g.attrs[name] = value

    return edit


def _metrics_of_shape(shape: tuple[int, ...]) -> Callable:
    """The job's metrics replaced by zeros of `shape`, its columns attribute kept."""

    def edit(g) -> None:
        columns = g["metrics"].attrs["columns"]
        del g["metrics"]
        g["metrics"] = np.zeros(shape)
        g["metrics"].attrs["columns"] = columns

    return edit


def _metrics_columns(value) -> Callable:
    def edit(g) -> None:
        g["metrics"].attrs["columns"] = value

    return edit


def _config_text(make: Callable[[str], str]) -> Callable[[Path], list[str]]:
    """s.h5 whose `config` attribute is make(its YAML)."""

    def setup(folder: Path) -> list[str]:
        import h5py

        with h5py.File(folder / "s.h5", "r+") as f:
            f.attrs["config"] = make(str(f.attrs["config"]))
        return []

    return setup


def _billion_laughs(config: str) -> str:
    """The config with model.laughs = 9^9 strings through nine nested aliases (~600 bytes)."""
    lines = ["a: &a [" + ",".join(['"lol"'] * 9) + "]"]
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n" + config.replace("model:\n", "model:\n  laughs: *i\n", 1)


def _held(lock: str, link: tuple[str, str] | None = None) -> Callable[[Path], list[str]]:
    """The lock file `lock` held by this process, as a running command holds it (its folder
    made first); `link`: a symlink (name, target) made too."""

    def setup(folder: Path) -> list[str]:
        import fcntl
        import socket

        (folder / lock).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        HELD.append(fd)
        if link:
            os.symlink(folder / link[1], folder / link[0])
        return []

    return setup


TRAIN = ["train", *TINY, "epochs=1", "save_every=1"]

#: a surface made from p.h5's directions (the last trajectory checkpoint as origin)
LOAD_PCA = ["out=new.h5", "directions.load=p.h5", "model.checkpoint=traj/checkpoints/epoch_0002.pt"]
CK = ["model.checkpoint=ck.pt"]
NOT_REGULAR = "is not a regular file"
REPORT_SW = ["sweep", "report", "sw/sweep.h5"]
#: what a refusal of the one-job sweep file's job names
SW_JOB = ["sw/sweep.h5: job /jobs/mlp/fill_0.5/seed_1 has ", "rerun the sweep with overwrite=true"]

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
    "trajectory_missing_epoch": Case(
        ["plot", "p.h5", "--kind", "contour", "--out", "figs"],
        ["p.h5", "trajectory/epoch is missing", "remake it"],
        _pca_surface(lambda g: g.__delitem__("epoch")),
    ),
    "trajectory_2d_x": Case(
        surface_cmd(*LOAD_PCA),
        ["p.h5", "trajectory/x", "shape (3, 2)", "not a 1D array"],
        _pca_surface(_replace_dataset("x", lambda x: np.stack([x, x], axis=1))),
    ),
    "trajectory_string_lr": Case(
        ["plot", "p.h5", "--kind", "animation", "--out", "figs"],
        ["p.h5", "trajectory/lr", "not a 1D array of numbers"],
        _pca_surface(_replace_dataset("lr", np.array([b"a", b"b", b"c"]))),
    ),
    "trajectory_nan_x": Case(
        surface_cmd(*LOAD_PCA),
        ["p.h5", "trajectory/x holds 1 non-finite value(s)"],
        _pca_surface(_replace_dataset("x", _nan_at_1)),
    ),
    "trajectory_inf_lr": Case(
        ["plot", "p.h5", "--kind", "contour", "--out", "figs"],
        ["p.h5", "trajectory/lr holds 1 non-finite"],
        _pca_surface(_replace_dataset("lr", lambda lr: np.array([0.1, np.inf, 0.1]))),
    ),
    "trajectory_fractional_epoch": Case(
        surface_cmd(*LOAD_PCA),
        ["trajectory/epoch holds non-integer epochs"],
        _pca_surface(_replace_dataset("epoch", np.array([0.0, 0.5, 1.0]))),
    ),
    "grid_bound_overflows": Case(
        surface_cmd("out=new.h5", "grid.x=[-1e308,1e308,3]"),
        ["grid.x=", "not all finite", "nan,inf", "narrow the range"],
    ),
    "grid_points_not_distinct": Case(
        surface_cmd("out=new.h5", "grid.y=[1,1.0000000000000002,3]"),
        ["grid.y=", "not distinct in float64"],
    ),
    "sweep_report_inf_fill_prob": Case(
        ["sweep", "report", "."],
        ["metrics.json", "job.fill_prob=inf"],
        _metrics_with_fill("Infinity"),
    ),
    "sweep_report_nan_fill_prob": Case(
        ["sweep", "report", "."], ["metrics.json", "job.fill_prob=nan"], _metrics_with_fill("NaN")
    ),
    # rule 2: a file is checked against what it claims before it is resumed
    "resume_xcoordinates_edited": Case(
        surface_cmd(*CK),
        ["s.h5", "xcoordinates[1] is 0.5", "grid's is 0.0", "overwrite=true"],
        _resumed(_set("xcoordinates", 1, 0.5)),
    ),
    "resume_ycoordinates_deleted": Case(
        surface_cmd(*CK),
        ["s.h5", "ycoordinates is missing", "overwrite=true"],
        _resumed(lambda f: f.__delitem__("ycoordinates")),
    ),
    "resume_metric_float16": Case(
        surface_cmd(*CK),
        ["s.h5", "test_loss is float16", "not float64", "overwrite=true"],
        _resumed(_retyped("test_loss", "f2")),
    ),
    "resume_metric_float32": Case(
        surface_cmd(*CK),
        ["train_acc is float32", "not float64"],
        _resumed(_retyped("train_acc", "f4")),
    ),
    "resume_fingerprint_int": Case(
        surface_cmd(*CK),
        ["s.h5", "fingerprint attribute is damaged", "int64, not JSON text", "overwrite=true"],
        _resumed(lambda f: f.attrs.__setitem__("fingerprint", 7)),
    ),
    "resume_fingerprint_json_list": Case(
        surface_cmd(*CK),
        ["s.h5", "fingerprint attribute is damaged", "JSON list", "overwrite=true"],
        _resumed(lambda f: f.attrs.__setitem__("fingerprint", "[1, 2]")),
    ),
    "resume_nan_train_loss_finite_test_loss": Case(
        surface_cmd(*CK),
        ["s.h5", "1 done point(s) hold a NaN train_loss", "inconsistent", "overwrite=true"],
        _resumed(_set("train_loss", (1, 2), float("nan"))),
    ),
    "mpo_checkpoint_step_beyond_history": Case(
        ["mpo", *MPO_TINY, "steps=8", "out_dir=job"],
        ["job/checkpoint.pt", "its step 1000000000000", "overwrite=true"],
        _mpo_fit_claiming(10**12),
    ),
    "mpo_checkpoint_step_not_adams": Case(
        ["mpo", *MPO_TINY, "steps=8", "out_dir=job"],
        ["job/checkpoint.pt", "its step 5 is not its optimizer's step count (4 Adam steps)"],
        _mpo_fit_claiming(5),
    ),
    "sweep_fill_probs_collide": Case(
        ["sweep", *SWEEP_TINY, "sweep.fill_probs=[0.5,0.5000001]"],
        ["sweep.fill_probs: 0.5 and 0.5000001 collide", "fill_0.5", "differ within 6 digits"],
    ),
    "sweep_resume_done_without_values": Case(
        ["sweep", *SWEEP_TINY],
        ["sw/sweep.h5", "job mlp/fill_0.5/seed_1 is marked done but", "overwrite=true"],
        _sweep_done_without_values,
    ),
    "sweep_report_done_without_values": Case(
        ["sweep", "report", "sw/sweep.h5"],
        ["sw/sweep.h5", "/jobs/mlp/fill_0.5/seed_1 is marked done but"],
        _sweep_done_without_values,
    ),
    # rule 2: a sweep job's datasets and attributes of odd shapes or types: one line naming it
    "sweep_report_host_an_int": Case(
        REPORT_SW,
        [*SW_JOB, "dataset host that is an array (int64, shape ())", "not a string"],
        _sweep_job_edited(_replace_dataset("host", np.int64(7))),
    ),
    "sweep_report_host_a_list": Case(
        REPORT_SW,
        [*SW_JOB, "dataset host that is an array (|S3, shape (2,))", "overwrite=true"],
        _sweep_job_edited(_replace_dataset("host", np.array([b"one", b"two"]))),
    ),
    "sweep_report_metrics_wrong_shape": Case(
        REPORT_SW,
        [*SW_JOB, "metrics of shape (2, 3), not (2, 15)", "overwrite=true"],
        _sweep_job_edited(_metrics_of_shape((2, 3))),
    ),
    "sweep_report_metrics_columns_an_int": Case(
        REPORT_SW,
        [*SW_JOB, "metrics columns attribute that is a value (int64)", "not a list of names"],
        _sweep_job_edited(_metrics_columns(np.int64(3))),
    ),
    "sweep_report_history_1d": Case(
        REPORT_SW,
        [*SW_JOB, "history that is an array (float64, shape (10,))", "shape (rows, 10)"],
        _sweep_job_edited(_replace_dataset("history", np.zeros(10))),
    ),
    "sweep_report_history_strings": Case(
        REPORT_SW,
        [*SW_JOB, "history that is an array (|S1, shape (2, 10))"],
        _sweep_job_edited(_replace_dataset("history", np.full((2, 10), b"a"))),
    ),
    "sweep_report_values_wrong_shape": Case(
        REPORT_SW,
        [*SW_JOB, "dataset train_loss that is an array (float64, shape (2, 2))", "(5, 5)"],
        _sweep_job_edited(_replace_dataset("train_loss", np.zeros((2, 2)))),
    ),
    "sweep_report_status_a_float": Case(
        REPORT_SW,
        [*SW_JOB, "dataset status that is an array (float64, shape ())", "not an integer"],
        _sweep_job_edited(_replace_dataset("status", np.float64(1.0))),
    ),
    "sweep_report_status_unknown": Case(
        REPORT_SW,
        [*SW_JOB, "has status 7, not one of [0, 1, 2]"],
        _sweep_job_edited(lambda g: g["status"].write_direct(np.array(7, dtype="u1"))),
    ),
    "sweep_report_fill_prob_a_string": Case(
        REPORT_SW,
        [*SW_JOB, "fill_prob attribute that is a string", "not a number"],
        _sweep_job_edited(_attr("fill_prob", "half")),
    ),
    "sweep_report_seed_an_array": Case(
        REPORT_SW,
        [*SW_JOB, "seed attribute that is an array (int64, shape (2,))", "not an integer"],
        _sweep_job_edited(_attr("seed", np.array([1, 2]))),
    ),
    "sweep_resume_history_1d": Case(
        ["sweep", *SWEEP_TINY],
        ["sw/sweep.h5", "job mlp/fill_0.5/seed_1 has a history", "not resumed", "overwrite=true"],
        _sweep_job_edited(_replace_dataset("history", np.zeros(10))),
    ),
    "hessian_coordinates_over_small_metrics": Case(
        hessian(),
        ["surface=s.h5", "has shape (3, 3) but the coordinates make a grid of (10000, 10000)"],
        _resumed(
            lambda f: [
                f.__delitem__("xcoordinates"),
                f.__delitem__("ycoordinates"),
                f.create_dataset("xcoordinates", data=np.linspace(-1, 1, 10_000)),
                f.create_dataset("ycoordinates", data=np.linspace(-1, 1, 10_000)),
            ]
        ),
    ),
    "hessian_lanczos_report_not_json": Case(
        hessian(),
        ["Hessian maps in s.h5 cannot be read", "overwrite=true"],
        _resumed(
            lambda f: f.create_dataset("max_eig", data=np.zeros((3, 3))).attrs.create(
                "lanczos", "{not json"
            )
        ),
    ),
    "hessian_lanczos_report_json_list": Case(
        hessian(),
        ["Hessian maps in s.h5 cannot be read", "lanczos report attribute is a JSON list"],
        _resumed(
            lambda f: f.create_dataset("max_eig", data=np.zeros((3, 3))).attrs.create(
                "lanczos", "[1, 2]"
            )
        ),
    ),
    # rule 4: YAML from a file parsed with limits
    "hessian_config_billion_laughs": Case(
        hessian(),
        ["surface=s.h5", "`config` attribute uses a YAML alias (*a, line 2)", "remake"],
        _config_text(_billion_laughs),
    ),
    "hessian_config_too_large": Case(
        hessian(),
        ["surface=s.h5", "`config` attribute is 209", "bytes, over the 1048576"],
        _config_text(lambda c: c + "\n#" + "x" * (2 << 20)),
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
    "hard_linked_output": Case(
        surface_cmd("out=hard.h5", "overwrite=true", *CK),
        ["out=hard.h5", "2 hard links", "copy"],
        _hard_linked_output,
    ),
    "train_locked": Case(
        [*TRAIN, "out_dir=t"], ["out_dir=t", "another run", "t/train.lock"], _held("t/train.lock")
    ),
    "train_locked_through_symlink": Case(
        [*TRAIN, "out_dir=link"],
        ["out_dir=link", "another run", "t/train.lock"],
        _held("t/train.lock", ("link", "t")),
    ),
    "train_out_dir_is_a_file": Case([*TRAIN, "out_dir=ck.pt"], ["out_dir=ck.pt is a file"]),
    "sweep_locked": Case(
        ["sweep", *SWEEP_TINY],
        ["sweep.file=sw/sweep.h5", "another run", "sweep.h5.lock"],
        _held("sw/sweep.h5.lock"),
    ),
    "sweep_locked_overwrite": Case(
        ["sweep", *SWEEP_TINY, "overwrite=true"],
        ["sweep.file=sw/sweep.h5", "another run"],
        _held("sw/sweep.h5.lock"),
    ),
    # rule 6: limits stated and enforced
    "seed_beyond_generator_surface": Case(
        surface_cmd("out=new.h5", "directions.seed=18446744073709551616", *CK),
        ["directions.seed=18446744073709551616 is outside", "0 to 4294967295", "seed + 1"],
    ),
    "seed_negative_train": Case([*TRAIN, "seed=-1"], ["seed=-1 is outside", "0 to 4294967295"]),
    "seed_beyond_stream_mpo": Case(
        ["mpo", *MPO_TINY, "seed=99999999999999", "steps=1", "out_dir=job"],
        ["seed=99999999999999 is outside"],
    ),
    "seed_in_sweep_list": Case(
        ["sweep", *SWEEP_TINY, "sweep.seeds=[1,4294967296]"], ["sweep.seeds[1]=4294967296"]
    ),
    "sweep_steps_huge": Case(
        ["sweep", *SWEEP_TINY, "steps=1000000000000000"],
        ["steps=1000000000000000", "held-out rows per job", "limit 1 GiB", "fewer steps"],
    ),
    "connector_resolution_huge": Case(
        ["geometry", "connector", *TINY, "optima=[ck.pt,ck.pt,ck.pt]", "resolution=1000000"],
        ["resolution=1000000", "500001500001 grid points", "limit of 2000"],
    ),
    "connector_dense_huge": Case(
        ["geometry", "connector", *TINY, "optima=[ck.pt,ck.pt,ck.pt]", "resolution=20"]
        + ["dense=100"],
        ["dense=100", "2003001 dense points", "3.45 GiB"],
    ),
    "tunnel_n_dense_huge": Case(
        ["geometry", "tunnel", *TINY, "optima=[ck.pt,ck.pt]", "n_dense=1000000000"],
        ["n_dense=1000000000 is over the limit of 100000", "full evaluation"],
    ),
    "tunnel_n_segments_huge": Case(
        ["geometry", "tunnel", *TINY, "optima=[ck.pt,ck.pt]", "n_segments=100000"],
        ["n_segments=100000 is over the limit of 1000"],
    ),
    "width_n_distances_huge": Case(
        ["geometry", "width", *TINY, "optima=[ck.pt]", "n_distances=1000000000"],
        ["n_distances=1000000000 is over the limit of 100000"],
    ),
    "width_evaluations_huge": Case(
        ["geometry", "width", *TINY, "optima=[ck.pt]", "n_distances=100000"]
        + ["n_directions=1000"],
        ["1 × 1000 × 100000 = 100000000 evaluations", "limit of 10000000"],
    ),
    "short_dirs_n_distances_huge": Case(
        ["geometry", "tunnel", *TINY, "optima=[ck.pt,ck.pt]", "short_dirs.n_distances=200000"],
        ["short_dirs.n_distances=200000 is over the limit of 100000"],
    ),
    "synthetic_num_train_huge": Case(
        surface_cmd("out=new.h5", "dataset.num_train=1000000000"),
        ["dataset.num_train=1000000000", "about 33.5 GiB of memory", "limit of 4 GiB"],
    ),
    "synthetic_shape_huge": Case(
        surface_cmd("out=new.h5", "dataset.shape=[3,100000,100000]"),
        ["dataset.shape=[3, 100000, 100000] (30000000000 features)", "GiB", "smaller"],
    ),
    "synthetic_num_classes_huge": Case(
        surface_cmd("out=new.h5", "dataset.num_classes=1000000000"),
        ["dataset.num_classes=1000000000 is over the limit of 100000", "an output per class"],
    ),
    "mpo_mask_million_cells": Case(
        ["mpo", *MPO_TINY, "mask.size=1000", "steps=1", "out_dir=job"],
        ["mask.size=1000 gives 1,000,000 cells, over the limit of 65,536", "engine point per cell"],
    ),
    "mpo_random_mask_too_many_cells": Case(
        ["mpo", *MPO_TINY, "mask=random", "mask.size=[100,1000]", "steps=1", "out_dir=job"],
        ["mask.size=[100, 1000] gives 100,000 cells", "at most 65,536 cells"],
    ),
    "mpo_image_mask_too_many_cells": Case(
        ["mpo", *MPO_TINY, "mask=image", "mask.path=ring.png", "mask.size=300"]
        + ["steps=1", "out_dir=job"],
        ["mask.size=300 gives 90,000 cells", "limit of 65,536"],
        lambda d: _ring_picture("L", np.eye(4, dtype=bool)).save(d / "ring.png") or [],
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
    hydra_app = module in ("surface", "geometry", "train", "mpo")
    if hydra_app or (module == "sweep" and args[:1] != ["report"]):
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


def test_stored_yaml_limits_directly() -> None:
    """An anchor alone parses (only an alias is refused), an alias anywhere is refused before
    anything is built, text over MAX_BYTES is refused, and text that is not YAML is
    InvalidYAML (a UserError)."""
    from landscape_hpc.errors import UserError
    from landscape_hpc.files import stored_yaml

    assert stored_yaml.load_limited("a: &x 1\nb: 2\n", "t") == {"a": 1, "b": 2}
    with pytest.raises(UserError, match=r"t uses a YAML alias \(\*x, line 2\)"):
        stored_yaml.load_limited("a: &x [1]\nb: *x\n", "t")
    with pytest.raises(UserError, match="over the"):
        stored_yaml.load_limited("#" * (stored_yaml.MAX_BYTES + 1), "t")
    assert stored_yaml.load_limited("#" * (stored_yaml.MAX_BYTES - 1), "t") is None
    with pytest.raises(stored_yaml.InvalidYAML, match="t is not valid YAML"):
        stored_yaml.load_limited("a: [unclosed", "t")


def _ring_picture(mode: str, want: np.ndarray, scale: int = 4):
    """A PIL image in `mode` of the cell pattern `want` (True = dark ring), `scale` pixels per
    cell: the ring at 31% brightness; the rest white, or (modes with alpha) fully transparent
    black, which composited onto white is white too."""
    from PIL import Image

    dark = np.kron(want, np.ones((scale, scale), dtype=bool))  # (H0, W0)
    level8 = round(0.31 * 255)
    if mode == "I;16":
        return Image.fromarray(np.where(dark, round(0.31 * 65535), 65535).astype(np.uint16))
    if mode == "L":
        return Image.fromarray(np.where(dark, level8, 255).astype(np.uint8))
    if mode == "1":  # no grey level: the ring is black
        return Image.fromarray(~dark)
    if mode == "P":
        img = Image.fromarray(np.where(dark, 0, 1).astype(np.uint8), mode="P")
        img.putpalette([level8] * 3 + [255] * 3)
        return img
    if mode == "P_transparent":
        img = Image.fromarray(np.where(dark, 0, 1).astype(np.uint8), mode="P")
        img.putpalette([level8] * 3 + [0] * 3)  # index 1 black, but transparent
        img.info["transparency"] = 1
        return img
    if mode == "LA":
        grey = np.where(dark, level8, 0)
        alpha = np.where(dark, 255, 0)
        return Image.fromarray(np.stack([grey, alpha], axis=-1).astype(np.uint8), mode="LA")
    if mode == "RGBA":
        rgb = np.where(dark[..., None], [level8, level8, level8], [0, 0, 0])
        alpha = np.where(dark, 255, 0)[..., None]
        return Image.fromarray(np.concatenate([rgb, alpha], axis=-1).astype(np.uint8))
    assert mode == "RGB"
    rgb = np.where(dark[..., None], [level8, level8, level8], [255, 255, 255])
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("mode", ["L", "I;16", "1", "P", "P_transparent", "LA", "RGBA", "RGB"])
def test_image_masks_are_read_at_their_bit_depth(mode: str, tmp_path: Path) -> None:
    """Rule 8: a ring at 31% brightness (threshold 0.5) is dark whatever the PNG's mode: 8- and
    16-bit grey, 1-bit, palette (with a transparent entry), grey and colour with alpha. A 16-bit
    PNG converted straight to RGBA clipped to all white ("no low-loss cells")."""
    from PIL import Image

    from landscape_hpc.mpo.patterns import builtin_mask, image_mask

    want = builtin_mask("ring", 10)
    assert 0 < want.sum() < want.size
    path = tmp_path / "ring.png"
    _ring_picture(mode, want).save(path)
    with Image.open(path) as img:  # the file keeps the mode (16-bit stays 16-bit)
        assert img.mode == {"P_transparent": "P"}.get(mode, mode)
    np.testing.assert_array_equal(image_mask(str(path), 10, threshold=0.5), want)
    if mode != "1":  # a grey ring: lighter than a threshold of 0.3, so no ring at all
        lighter = image_mask(str(path), 10, threshold=0.3)
        np.testing.assert_array_equal(lighter, np.zeros_like(want))


def test_library_mask_cells_bounded() -> None:
    """A mask array from the API over MAX_CELLS cells is refused naming its shape; one at the
    bound is taken."""
    from landscape_hpc.api.mpo import as_mask
    from landscape_hpc.errors import UserError
    from landscape_hpc.mpo.patterns import MAX_CELLS

    at_bound = np.eye(256, dtype=bool)
    assert at_bound.size == MAX_CELLS
    assert as_mask(at_bound).shape == (256, 256)
    with pytest.raises(UserError, match=r"mask= of shape \(257, 256\) gives 65,792 cells"):
        as_mask(np.eye(257, 256, dtype=bool))


def test_train_through_a_symlink_takes_and_releases_the_folders_lock(tmp_path: Path) -> None:
    """A train run into out_dir=link (a symlink to t/) writes t/'s checkpoints, holding
    t/train.lock, the lock a run into t/ itself takes, and removes it at the end."""
    (tmp_path / "t").mkdir()
    os.symlink(tmp_path / "t", tmp_path / "link")
    r = subprocess.run(
        [PYTHON, "-m", "landscape_hpc.train", *TRAIN[1:], "out_dir=link"]
        + [f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "t/model.pt").is_file() and (tmp_path / "t/checkpoints").is_dir()
    assert not (tmp_path / "t/train.lock").exists()


def _tiny_problem():
    """A 3-in, 3-class linear net and a 12-sample train/test split (dicts of tensors)."""
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(3, 3)
    split = (torch.randn(12, 3, generator=generator), torch.arange(12) % 3)
    return model, {"train": split, "test": split}


SEED_CALLS = {
    "surface": lambda lh, m, d, s: lh.surface(m, d, x=(-1, 1, 2), y=None, seed=s, progress=False),
    "random_directions": lambda lh, m, d, s: lh.random_directions(m, 2, seed=s),
    "lines": lambda lh, m, d, s: lh.lines(m, d, n=1, seed=s),
    "hessian": lambda lh, m, d, s: lh.hessian(m, d, seed=s),
    "short_directions": lambda lh, m, d, s: lh.short_directions(m, d, short=0.1, seed=s),
    "mpo_mask": lambda lh, m, d, s: lh.mpo_mask("random", size=5, fill_prob=0.5, seed=s),
    "fit_mpo init_seed": lambda lh, m, d, s: lh.fit_mpo(m, d, np.ones((2, 2), bool), init_seed=s),
    "fit_mpo eval_seed": lambda lh, m, d, s: lh.fit_mpo(m, d, np.ones((2, 2), bool), eval_seed=s),
}


@pytest.mark.parametrize("seed", [2**70, -1, 2**32, 1.5, True, "0"])
@pytest.mark.parametrize("call", sorted(SEED_CALLS))
def test_library_seeds_outside_the_range_are_a_user_error(call: str, seed) -> None:
    """Rule 6 from the Python API: a seed beyond the generators' range (2**70 was "Overflow when
    unpacking long long"), a negative one (silently accepted), a float, a bool or a string is a
    UserError naming the seed's keyword and the range, before any work."""
    import landscape_hpc as lh
    from landscape_hpc.errors import SEED_MAX, UserError

    model, data = _tiny_problem()
    key = call.split()[-1] if " " in call else "seed"
    with pytest.raises(UserError, match=rf"{key}={seed!r} is outside the seeds .* 0 to {SEED_MAX}"):
        SEED_CALLS[call](lh, model, data, seed)


def test_check_seed_bounds_directly() -> None:
    """The edges are seeds (0, SEED_MAX, a numpy integer, returned as an int); one past is not;
    cli's refusal is the same check, as a SharedUserError."""
    from landscape_hpc.errors import SEED_MAX, SharedUserError, UserError, check_seed

    assert check_seed(0, "seed") == 0
    assert check_seed(np.int64(SEED_MAX), "seed") == SEED_MAX
    assert type(check_seed(np.int64(7), "seed")) is int
    with pytest.raises(UserError, match="k=4294967296 is outside"):
        check_seed(SEED_MAX + 1, "k")
    with pytest.raises(SharedUserError):
        check_seed(-1, "seed", SharedUserError)
