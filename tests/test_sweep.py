"""The BN sweep: its grid and job configs, the sweep file, the report, and the routes that run it
(mpirun + parallel HDF5, Hydra multirun with the basic and the submitit_local launchers) giving
the same table; a killed sweep resumes; bad input stops it before any job starts.

The SLURM routes (sbatch slurm/bn_sweep.sh, hydra/launcher=submitit_slurm) are in
tests/test_slurm_sweep.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from mpi_helpers import (
    MPI_ROOT_ENV,
    TIMED_OUT,
    check_ok,
    h5py_has_mpi,
    mpirun_available,
    python,
    rank_pids,
    run_command,
)

from landscape_hpc.cli import compose_config
from landscape_hpc.config import SweepConfig
from landscape_hpc.errors import UserError
from landscape_hpc.files.sweep import (
    DONE,
    FAILED,
    METRIC_COLUMNS,
    JobSpec,
    Outcome,
    SweepFile,
    read_jobs,
)
from landscape_hpc.mpo.convergence import HISTORY_COLUMNS
from landscape_hpc.mpo.scores import pattern_scores
from landscape_hpc.sweep import report
from landscape_hpc.sweep.jobs import SweepJob, expand, job_config

REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf")
needs_mpirun = pytest.mark.skipif(not mpirun_available(), reason="mpirun is not installed")

# 2 fill probabilities × 2 nets × 1 seed, a few steps on a 5×5 mask: the tiny sweep
TINY = [
    "sweep.fill_probs=[0.3,0.7]",
    "sweep.seeds=[1]",
    "steps=3",
    "mask.size=5",
    "dataset.max_samples=150",
    "eval_samples=40",
    "batch_size=32",
    "cells_per_step=4",
    "checkpoint_every=1",
]
N_JOBS = 4
# Compared across routes: the job's identity and every metric
KEY = ("model", "bn", "fill_prob", "seed", "status", "steps", "converged")
METRICS = [f"{s}_{m}" for s in ("train", "test") for m in METRIC_COLUMNS]


def compose_cfg(config: str, overrides: list[str]):
    return compose_config(config, overrides)


def env() -> dict[str, str]:
    # OMP_NUM_THREADS is left as the machine has it: the preset's `threads: 1` must be what
    # makes every route run the same arithmetic
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**clean, **MPI_ROOT_ENV, "HYDRA_FULL_ERROR": "0"}


def run(argv: list[str], limit_s: int = 300) -> subprocess.CompletedProcess:
    return run_command(argv, env(), limit_s)


def sweep_argv(out: Path, *extra: str, ranks: int | None = 3) -> list[str]:
    launch = [] if ranks is None else ["mpirun", "-n", str(ranks), "--oversubscribe"]
    return [*launch, python(), "-m", "landscape_hpc.sweep", f"hydra.run.dir={out}", *TINY, *extra]


def multirun_argv(out: Path, *extra: str) -> list[str]:
    return [
        python(), "-m", "landscape_hpc.mpo", "-m", "+experiment=bn_sweep",
        f"hydra.sweep.dir={out}", "plot=false", *TINY, *extra,
    ]  # fmt: skip


def assert_same_table(got: list[dict], want: list[dict]) -> None:
    """The same jobs, metrics and held-out histories bit for bit: every route fits with the
    preset's one thread, so reductions run in the same order whatever launched the fit."""
    assert [tuple(r[k] for k in KEY) for r in got] == [tuple(r[k] for k in KEY) for r in want]
    no_time = [i for i, c in enumerate(HISTORY_COLUMNS) if c != "seconds"]
    for g, w in zip(got, want):
        np.testing.assert_array_equal([g[m] for m in METRICS], [w[m] for m in METRICS])
        np.testing.assert_array_equal(g["history"][:, no_time], w["history"][:, no_time])


# ----------------------------------------------------------------------------- the grid


def test_grid_is_every_net_fill_and_seed_models_outermost():
    jobs = expand(
        SweepConfig(models=["mpo_cnn", "mpo_cnn_bn"], fill_probs=[0.1, 0.9], seeds=[0, 3])
    )
    assert len(jobs) == 8
    assert jobs[0] == SweepJob("mpo_cnn", 0.1, 0) and jobs[-1] == SweepJob("mpo_cnn_bn", 0.9, 3)
    assert len({j.key for j in jobs}) == 8
    assert jobs[1].key == "mpo_cnn/fill_0.1/seed_3"


@pytest.mark.parametrize(
    "grid, message",
    [
        (SweepConfig(models=[]), "sweep.models is empty"),
        (SweepConfig(seeds=[]), "sweep.seeds is empty"),
        (SweepConfig(models=["mpo_cnn", "resnet7"]), "unknown net(s) resnet7"),
        (SweepConfig(fill_probs=[0.5, 1.0]), "sweep.fill_probs: 1.0 not in (0, 1)"),
        (SweepConfig(fill_probs=[0.0]), "not in (0, 1)"),
        (SweepConfig(seeds=[1, 1]), "sweep.seeds repeats 1"),
    ],
)
def test_bad_grids_are_refused_with_the_key(grid, message):
    with pytest.raises(UserError, match=re.escape(message)):
        expand(grid)


def test_a_job_config_is_the_multirun_job_config():
    """The MPI sweep's job = what `mpo -m +experiment=bn_sweep` runs for the same (net, p, seed),
    so both routes fit the same planes; both nets get the same mask."""
    base = compose_cfg("sweep", ["out_dir=/tmp/x"])
    for model, fill, seed in (("mpo_cnn_bn", 0.3, 2), ("mpo_cnn", 0.8, 4)):
        mine = job_config(base, SweepJob(model, fill, seed))
        theirs = compose_cfg(
            "mpo",
            ["out_dir=/tmp/x", "+experiment=bn_sweep", f"model={model}",
             f"mask.fill_prob={fill}", f"seed={seed}"],
        )  # fmt: skip
        assert dataclasses.asdict(mine) == dataclasses.asdict(theirs)
    a = job_config(base, SweepJob("mpo_cnn", 0.3, 2)).mask
    b = job_config(base, SweepJob("mpo_cnn_bn", 0.3, 2)).mask
    assert a == b and a.seed == 2 and a.size == 30


def test_the_sweep_fits_random_masks_only():
    base = compose_cfg("sweep", ["out_dir=/tmp/x", "mask=builtin"])
    with pytest.raises(UserError, match="use mask=random"):
        job_config(base, SweepJob("mpo_cnn", 0.5, 0))


# ----------------------------------------------------------------------------- the file


def _specs(fill_probs=(0.3, 0.7), steps=3) -> list[JobSpec]:
    rng = np.random.default_rng(0)
    return [
        JobSpec(SweepJob("mlp", p, 0), rng.random((3, 4)) < 0.5, {"steps_unused": 0, "lr": 1e-3})
        for p in fill_probs
    ]


def _outcome(value: float) -> Outcome:
    values = {
        n: np.full((3, 4), value) for n in ("train_loss", "train_acc", "test_loss", "test_acc")
    }
    metrics = {
        s: {"acc_low": 80.0, "acc_high": 20.0, "acc_gap": 60.0, "loss_low": 0.1, "loss_high": 5.0}
        for s in ("train", "test")
    }
    return Outcome(DONE, values=values, metrics=metrics, steps=3, seconds=1.5, host="h", rank=2)


def test_sweep_file_holds_each_job_as_a_surface_group_and_resumes(tmp_path):
    path = tmp_path / "sweep.h5"
    specs = _specs()
    sweep = SweepFile.open(path, specs, {"config": "x: 1"})
    try:
        assert [sweep.status(s.job) for s in specs] == [0, 0]
        sweep.write(specs[0].job, _outcome(7.0))
        sweep.write(specs[1].job, Outcome(FAILED, reason="diverged at step 2", host="h", rank=1))
    finally:
        sweep.close()
    rows = read_jobs(path)
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert rows[0]["test_acc_gap"] == 60.0 and rows[0]["rank"] == 2 and rows[0]["steps"] == 3
    assert rows[1]["reason"] == "diverged at step 2" and np.isnan(rows[1]["test_acc_gap"])
    with h5py.File(path, "r") as f:
        g = f["jobs/mlp/fill_0.3/seed_0"]
        assert g["train_loss"].shape == (3, 4) and (g["train_loss"][()] == 7.0).all()
        assert g["done"][()].all() and g["xcoordinates"].shape == (4,)
        assert (g["mask"][()] == specs[0].mask[::-1]).all()  # surface orientation: row = y
        assert g["train_loss"].dims[1][0] == g["xcoordinates"]  # dimension scales, as a surface
        assert g["mask"].dims[0][0] == g["ycoordinates"] and f.attrs["torch_version"]
        assert np.isnan(f["jobs/mlp/fill_0.7/seed_0/train_loss"][()]).all()

    # re-opened with one more job: the finished ones are kept, the new one is added as pending
    more = _specs((0.3, 0.7, 0.5))
    sweep = SweepFile.open(path, more, {})
    try:
        assert [sweep.status(s.job) for s in more] == [DONE, FAILED, 0]
    finally:
        sweep.close()

    # a job made with other settings: refused, naming the setting; the file is left as it was
    other = [dataclasses.replace(specs[0], fingerprint={"steps_unused": 0, "lr": 1e-2})]
    with pytest.raises(UserError, match=r"lr: file has 0.001, this run 0.01"):
        SweepFile.open(path, other, {})
    assert read_jobs(path)[0]["status"] == "done"


def test_report_table_aggregates_both_metrics_over_seeds_with_sample_std():
    rows = []
    for seed, gap, trained_gap, converged in ((0, 40.0, 70.0, True), (1, 60.0, 90.0, False)):
        row = {"model": "mpo_cnn", "bn": False, "fill_prob": 0.5, "seed": seed, "status": "done"}
        row.update(test_acc_gap=gap, test_acc_low=80.0, test_acc_high=80.0 - gap)
        row.update(
            test_trained_acc_gap=trained_gap,
            test_trained_acc_low=95.0,
            test_trained_acc_high=95.0 - trained_gap,
            converged=converged,
        )
        rows.append(row)
    nan = float("nan")
    rows.append({**rows[0], "seed": 2, "status": "failed", "test_acc_gap": nan, "converged": False})
    (t,) = report.aggregate(rows)
    assert (t["n"], t["failed"], t["converged"]) == (2, 1, 1)
    # std over seeds with ddof=1: values 40 and 60 give 14.14, not 10
    assert t["gap_all_mean"] == 50.0 and t["gap_all_std"] == pytest.approx(200**0.5)
    assert t["gap_mean"] == 80.0 and t["acc_high"] == 15.0 and t["acc_high_all"] == 30.0
    text = report.format_table([t])
    assert "80.0 ± 14.1" in text and "50.0 ± 14.1" in text


def test_a_diverging_fit_is_recorded_as_failed(tmp_path):
    from landscape_hpc.data import load_dataset
    from landscape_hpc.mpo.command import check_config
    from landscape_hpc.sweep.run import run_job

    cfg = compose_cfg("sweep", ["out_dir=/tmp/x", *TINY, "lr=1e12", "steps=20"])
    cfg = job_config(cfg, SweepJob("mpo_cnn", 0.5, 0))
    import torch

    splits = load_dataset(cfg.dataset, torch.device("cpu"))
    outcome = run_job(cfg, splits, check_config(cfg), tmp_path / "job")
    assert outcome.status == FAILED, outcome
    assert "diverged" in outcome.reason and "lower lr" in outcome.reason


# ----------------------------------------------------------------------------- the routes


@pytest.fixture(scope="module")
def mpi_sweep(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The MPI route: mpirun -n 3 (a master and two workers) into one sweep file."""
    if not mpirun_available():
        pytest.skip("mpirun is not installed")
    out = tmp_path_factory.mktemp("mpi")
    done = run(sweep_argv(out))
    check_ok(done)
    rows = read_jobs(out / "sweep.h5")
    return out, sorted(rows, key=lambda r: (r["model"], r["fill_prob"], r["seed"]))


@needs_mpirun
def test_mpi_sweep_runs_every_job_and_writes_table_and_figure(mpi_sweep):
    out, rows = mpi_sweep
    assert len(rows) == N_JOBS and all(r["status"] == "done" for r in rows)
    assert {r["model"] for r in rows} == {"mpo_cnn6", "mpo_cnn_bn"}  # the paper's pair
    assert [r["bn"] for r in rows] == [False, False, True, True]
    # the held-out check before the first and after the last step; 3 steps cannot converge
    assert all(r["history"][:, 0].tolist() == [0.0, 3.0] for r in rows)
    assert not any(r["converged"] for r in rows) and all(r["steps"] == 3 for r in rows)
    assert {r["rank"] for r in rows} <= {1, 2}  # workers fit, the master hands out
    with h5py.File(out / "sweep.h5", "r") as f:
        assert f.attrs["io_driver"] == ("mpio" if h5py_has_mpi() else "gather")
        for r in rows:
            g = f[f"jobs/{r['model']}/fill_{r['fill_prob']:g}/seed_1"]
            assert g["done"][()].all() and not np.isnan(g["test_acc"][()]).any()
            low = g["mask"][()].astype(bool)
            assert g["test_acc"][()][low].mean() == pytest.approx(r["test_acc_low"])
            # framed: the outer ring high-loss, the frame low-loss
            assert not low[0].any() and low[1, 1:-1].all() and low[1:-1, -2].all()
            # the scores against the radial prior, as mpo/scores.py computes them from the cells
            scores = pattern_scores(
                g["test_loss"][()], g["test_acc"][()], low[::-1], np.ones_like(low)
            )
            assert r["test_auc_radial"] == scores["auc_radial"]
            assert r["test_pattern_score"] == scores["pattern_score"]
            assert 0 <= r["test_auc_loss"] <= 1 and np.isfinite(r["test_pattern_score"])
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("model,bn,fill_prob,seed,status,converged,steps,")
    assert "test_trained_acc_gap" in csv[0] and "test_acc_gap" in csv[0]
    assert "test_interior_acc_gap" in csv[0] and "test_pattern_score" in csv[0]
    assert len(csv) == N_JOBS + 1
    assert (out / "bn_sweep.png").stat().st_size > 10_000
    assert (out / "bn_sweep_history.png").stat().st_size > 10_000
    log = (out / "sweep.log").read_text()
    assert sorted(re.findall(r"rank (\d+): \d+ jobs in", log)) == ["1", "2"]


@needs_mpirun
def test_multirun_basic_launcher_gives_the_same_table(mpi_sweep, tmp_path):
    _, want = mpi_sweep
    check_ok(run(multirun_argv(tmp_path / "multirun")))
    assert len(list((tmp_path / "multirun").rglob("metrics.json"))) == N_JOBS
    done = run([python(), "-m", "landscape_hpc.sweep", "report", str(tmp_path / "multirun")])
    check_ok(done)
    assert re.search(r"mpo_cnn_bn\s+yes\s+0.70\s+1\s+0\s+0", done.stdout), done.stdout
    got, _ = report.load_rows(tmp_path / "multirun")
    assert_same_table(got, want)
    assert (tmp_path / "multirun" / "summary.csv").exists()


@needs_mpirun
def test_multirun_submitit_local_gives_the_same_table(mpi_sweep, tmp_path):
    _, want = mpi_sweep
    out = tmp_path / "multirun"
    done = run(multirun_argv(out, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"))
    check_ok(done)
    got, _ = report.load_rows(out)
    assert_same_table(got, want)


def _job_files(out: Path) -> tuple[list[Path], list[Path]]:
    """Job folders with a finished fit (plane.pt), and those with only a checkpoint."""
    folders = [p.parent for p in out.glob("jobs/*/*/*/checkpoint.pt")]
    finished = [f for f in folders if (f / "plane.pt").exists()]
    return finished, [f for f in folders if f not in finished]


@needs_mpirun
def test_killed_sweep_exits_nonzero_keeps_finished_jobs_and_resumes(mpi_sweep, tmp_path):
    _, want = mpi_sweep
    out = tmp_path / "run"
    # the jobs take long enough (checkpoint every step) for the kill to land mid-sweep
    argv = ["timeout", "-k", "10", "300", *sweep_argv(out, "steps=12")]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        # Kill once a worker has begun its second job: the first is then written (a worker
        # writes its job's group before it asks for the next), and a fit is under way
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            finished, running = _job_files(out)
            if finished and len(finished) + len(running) >= 3 and running:
                break
            time.sleep(0.05)
        pids = rank_pids(str(out), "landscape_hpc.sweep")
        assert sorted(pids) == [0, 1, 2], pids
        os.kill(pids[1], signal.SIGKILL)
        status = proc.wait(timeout=120)  # a guard against a hang, not a speed limit
    finally:
        if proc.poll() is None:
            proc.kill()
        text = proc.stdout.read()
    assert status not in (0, TIMED_OUT), f"exit status {status}:\n{text[-3000:]}"
    assert rank_pids(str(out), "landscape_hpc.sweep") == {}, "ranks left running"
    partial = read_jobs(out / "sweep.h5")  # readable after the kill
    n_done = sum(r["status"] == "done" for r in partial)
    assert 1 <= n_done < N_JOBS, (n_done, text[-3000:])

    # a job cut short resumes from its checkpoint: mark the time its checkpoint holds, which
    # only a resumed fit adds to its own
    _, running = _job_files(out)
    assert running, "no fit was under way at the kill"
    cut = running[0]
    checkpoint = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] >= 1
    checkpoint["seconds"] += 1e6
    torch.save(checkpoint, cut / "checkpoint.pt")

    rerun = run(sweep_argv(out, "steps=12"))
    check_ok(rerun)
    log = (out / "sweep.log").read_text()
    assert f"resuming the sweep: {n_done} of {N_JOBS} jobs already finished" in log
    final = read_jobs(out / "sweep.h5")
    assert all(r["status"] == "done" for r in final)
    # the jobs finished before the kill are kept as they were, not recomputed
    before = {(r["model"], r["fill_prob"]): r for r in partial if r["status"] == "done"}
    for r in final:
        if (r["model"], r["fill_prob"]) in before:
            assert r["seconds"] == before[(r["model"], r["fill_prob"])]["seconds"]
    model, fill, _ = cut.relative_to(out / "jobs").parts
    resumed = [r for r in final if (r["model"], f"fill_{r['fill_prob']:g}") == (model, fill)]
    assert len(resumed) == 1
    seconds = resumed[0]["history"][:, HISTORY_COLUMNS.index("seconds")]
    assert np.nanmax(seconds) > 1e6  # the history's clock went on from the checkpoint's
    # the time split is the last run's (a resumed job's fit time is not its whole history's)
    assert all(0 < r["train_seconds"] <= r["seconds"] for r in final)
    # a resumed job (its fit continued from its checkpoint) equals the uninterrupted reference
    ref = run(sweep_argv(tmp_path / "ref", "steps=12"))
    check_ok(ref)
    assert_same_table(
        sorted(final, key=_order), sorted(read_jobs(tmp_path / "ref/sweep.h5"), key=_order)
    )


def _order(r: dict) -> tuple:
    return (r["model"], r["fill_prob"], r["seed"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("sweep.models=[mpo_cnn,resnet7]", "unknown net(s) resnet7"),
        ("sweep.fill_probs=[]", "sweep.fill_probs is empty"),
        ("sweep.fill_probs=[0.5,1.5]", "not in (0, 1)"),
        ("sweep.fill_probs=[0.01] mask.frame=false", "has no low-loss cells"),
        ("eval_every=0", "eval_every=0 must be a positive integer"),
        ("mask.size=3", "mask.frame=true needs mask.size of at least 4×4"),
    ],
)
def test_bad_input_stops_the_sweep_before_any_job(tmp_path, override, message):
    done = run(sweep_argv(tmp_path, *override.split(), ranks=None), limit_s=120)
    assert done.returncode == 2, done.stdout
    assert "error: " in done.stdout and message in done.stdout, done.stdout
    assert "Traceback" not in done.stdout
    assert not (tmp_path / "sweep.h5").exists() and not (tmp_path / "jobs").exists()


def test_report_on_a_folder_without_runs_is_a_clear_error(tmp_path):
    done = run([python(), "-m", "landscape_hpc.sweep", "report", str(tmp_path)], limit_s=60)
    assert done.returncode == 2 and "no sweep.h5 and no metrics.json" in done.stdout
    assert "Traceback" not in done.stdout
    # a metrics.json of a run that is not a random-mask MPO job is not mistaken for one
    (tmp_path / "metrics.json").write_text(json.dumps({"train": {}}))
    done = run([python(), "-m", "landscape_hpc.sweep", "report", str(tmp_path)], limit_s=60)
    assert done.returncode == 2 and "no metrics.json of random-mask MPO runs" in done.stdout
    assert "Traceback" not in done.stdout and not (tmp_path / "summary.csv").exists()


def test_failed_jobs_are_kept_on_a_rerun_and_run_again_with_retry_failed(tmp_path):
    out = tmp_path / "run"
    argv = sweep_argv(out, "lr=1e12", "steps=20", ranks=None)  # every fit diverges
    check_ok(run(argv))
    first = read_jobs(out / "sweep.h5")
    assert [r["status"] for r in first] == ["failed"] * N_JOBS
    assert all("diverged" in r["reason"] for r in first)
    check_ok(run(argv))  # kept: nothing runs again
    kept = read_jobs(out / "sweep.h5")
    assert [r["seconds"] for r in kept] == [r["seconds"] for r in first]
    check_ok(run([*argv, "sweep.retry_failed=true"]))  # run again, failing again
    retried = read_jobs(out / "sweep.h5")
    assert [r["status"] for r in retried] == ["failed"] * N_JOBS
    assert all(a["seconds"] != b["seconds"] for a, b in zip(retried, first))
