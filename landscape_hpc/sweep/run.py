"""`python -m landscape_hpc.sweep`: every job of the grid through the MPI pool, into one sweep file.

Every rank loads the data once and holds it for all its jobs. Rank 0 hands out the jobs not done
yet (a killed or time-limited sweep resumes where it stopped: finished jobs are skipped, a job cut
short resumes its fit from its checkpoint in <out_dir>/jobs/<job>/); a worker fits the plane,
evaluates every cell through the engine and writes the job's group of the sweep file itself
(parallel HDF5), or sends it to rank 0 to write when h5py has no MPI. A job whose fit diverges is
recorded as failed with its reason, and the others go on. At the end rank 0 writes summary.csv and
bn_sweep.png next to the sweep file and prints the table per (model, fill_prob).
"""

from __future__ import annotations

import collections
import logging
import socket
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from landscape_hpc import parallel
from landscape_hpc.config import MPOConfig
from landscape_hpc.data import Split, dataset_attrs, load_dataset
from landscape_hpc.devices import rank_device
from landscape_hpc.engine.batchnorm import has_bn
from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5
from landscape_hpc.files.plane import PLANE_FILE, write_plane
from landscape_hpc.files.sweep import DONE, FAILED, PENDING, JobSpec, Outcome, SweepFile
from landscape_hpc.mpo.command import (
    check_config,
    check_model,
    fingerprint,
    set_threads,
    setup_job,
)
from landscape_hpc.mpo.convergence import HISTORY_COLUMNS, validation_rows
from landscape_hpc.mpo.fit import Diverged, fit_plane
from landscape_hpc.mpo.job import fit_splits, pattern_metrics, plane_values
from landscape_hpc.mpo.patterns import trainable_cells
from landscape_hpc.problem import problem_on
from landscape_hpc.sweep import report
from landscape_hpc.sweep.jobs import SweepJob, expand, job_config

log = logging.getLogger(__name__)

_STATE = "sweep"


def check_jobs(cfg: MPOConfig) -> list[tuple[SweepJob, MPOConfig, np.ndarray]]:
    """The grid, each job with its config and mask, checked: a UserError before any job starts
    (e.g. a small mask at a low fill_prob that has no low-loss cell)."""
    checked = []
    jobs = expand(cfg.sweep)
    check_history_size(cfg, len(jobs))
    for job in jobs:
        job_cfg = job_config(cfg, job)
        checked.append((job, job_cfg, check_config(job_cfg)))
    return checked


def job_specs(
    checked: list[tuple[SweepJob, MPOConfig, np.ndarray]], splits: dict[str, Split]
) -> list[JobSpec]:
    """What each job's group is made from; the nets checked once each. The same on every rank:
    deterministic in the config and the data."""
    counts = dataset_attrs(checked[0][1].dataset, splits)
    nets = {job_cfg.model.name: job_cfg for _, job_cfg, _ in checked}
    for job_cfg in nets.values():
        check_model(job_cfg, problem_on(job_cfg.model, job_cfg.dataset, splits).model)
    n_train = int(splits["train"].labels.shape[0])
    for _, job_cfg, _ in checked:  # a val_samples the training split cannot give: before any job
        validation_rows(n_train, job_cfg.val_samples, job_cfg.seed)
    return [
        JobSpec(
            job,
            mask,
            {**fingerprint(job_cfg, mask, counts), "eval_samples": job_cfg.eval_samples},
            history_rows(job_cfg),
        )
        for job, job_cfg, mask in checked
    ]


#: the most memory the sweep file's history datasets may take, all jobs together: each job's
#: rows are allocated before it starts and written whole when it ends
MAX_HISTORY_BYTES = 1 << 30


def check_history_size(cfg: MPOConfig, n_jobs: int) -> None:
    """A UserError with the estimate when `steps` would make the history datasets larger than
    MAX_HISTORY_BYTES (steps=10^15 pre-allocated 10^13 rows per job)."""
    if cfg.eval_every <= 0:
        return  # check_config names eval_every
    size = n_jobs * history_rows(cfg) * len(HISTORY_COLUMNS) * 8
    if size > MAX_HISTORY_BYTES:
        raise UserError(
            f"steps={cfg.steps} with eval_every={cfg.eval_every} makes {history_rows(cfg)} "
            f"held-out rows per job, {size / 2**30:.3g} GiB over {n_jobs} job(s) in the sweep "
            f"file (limit {MAX_HISTORY_BYTES / 2**30:g} GiB: each job's rows are allocated "
            "before it starts); give fewer steps or a larger eval_every"
        )


def history_rows(cfg: MPOConfig) -> int:
    """The most held-out checks a fit of `cfg` records: step 0, every eval_every, the last."""
    return cfg.steps // cfg.eval_every + 2


def _io_mode(cfg: MPOConfig, comm: Any) -> bool:
    """True: workers write the file (mpio); False: rank 0 writes what they send (gather, and
    always on a world of one)."""
    return hdf5.use_mpio("sweep.io", cfg.sweep.io) and comm.Get_size() > 1


def run_sweep(cfg: MPOConfig, comm: Any) -> Optional[Path]:
    """Runs the pending jobs of the sweep; returns the sweep file's path on rank 0."""
    rank = comm.Get_rank()
    checked = check_jobs(cfg)
    jobs = [job for job, _, _ in checked]
    masks = {job.key: mask for job, _, mask in checked}
    mpio = _io_mode(cfg, comm)
    path = Path(cfg.sweep.file)
    out_dir = Path(cfg.out_dir)
    device = rank_device(comm, cfg.device)  # collective
    set_threads(cfg)  # a fixed thread count (the preset's) makes every route sum in one order
    splits = load_dataset(cfg.dataset, device)
    specs = job_specs(checked, splits)
    attrs = {"config": OmegaConf.to_yaml(OmegaConf.structured(cfg))}
    sweep = SweepFile.open(path, specs, attrs, cfg.overwrite, comm=comm, collective=mpio)
    state = (cfg, splits, masks, out_dir, sweep if mpio else None)
    try:
        with parallel.worker_pool(_STATE, state):
            todo = _pending(sweep, jobs, cfg) if rank == 0 else []
            _run(comm, jobs, todo, sweep, mpio)
    finally:
        if sweep is not None:
            sweep.close()  # collective under mpio
    if rank != 0:
        return None
    rows = report.rows_from_sweep_file(path)
    report.write_outputs(rows, path.parent)
    return path


def _pending(sweep: SweepFile, jobs: list[SweepJob], cfg: MPOConfig) -> list[int]:
    """Indices of the jobs to run: not done (or done, not converged, with fewer steps than
    asked now), failed when retrying."""
    todo = []
    for i, job in enumerate(jobs):
        status = sweep.status(job)
        if (
            status == PENDING
            or (status == DONE and not sweep.converged(job) and sweep.steps(job) < cfg.steps)
            or (status == FAILED and cfg.sweep.retry_failed)
        ):
            todo.append(i)
    skipped = len(jobs) - len(todo)
    if skipped:
        log.info("resuming the sweep: %d of %d jobs already finished or failed", skipped, len(jobs))
    return todo


def _run(
    comm: Any, jobs: list[SweepJob], todo: list[int], sweep: Optional[SweepFile], mpio: bool
) -> None:
    bar = tqdm(total=len(todo), unit="job", desc="sweep", disable=comm.Get_rank() != 0)
    per_rank: dict[int, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    failed = []
    start = time.perf_counter()
    try:
        tasks = [(i, jobs[i]) for i in todo]
        for result in parallel.run_tasks(comm, _job_task, tasks, describe=_describe):
            _, job = result.task
            outcome: Outcome = result.value
            if not mpio:
                sweep.write(job, outcome)
            if outcome.status == FAILED:
                failed.append(job.key)
                log.warning("job %s failed: %s", job.key, outcome.reason)
            per_rank[result.rank][0] += 1
            per_rank[result.rank][1] += result.seconds
            bar.update(1)
            bar.set_postfix(last=job.key, failed=len(failed))
    finally:
        bar.close()
    for r, (n, secs) in sorted(per_rank.items()):
        log.info("rank %d: %d jobs in %.1f s (%.1f s/job)", r, n, secs, secs / max(n, 1))
    if per_rank:
        log.info(
            "all ranks: %d jobs in %.1f s, %d failed",
            len(todo),
            time.perf_counter() - start,
            len(failed),
        )


def _describe(task: tuple[int, SweepJob]) -> str:
    return f"job {task[1].key}"


def _job_task(task: tuple[int, SweepJob]) -> Outcome:
    """On a worker: fit one plane, evaluate its cells, write (mpio) or return the outcome."""
    _, job = task
    cfg, splits, masks, out_dir, sweep = parallel.worker_state(_STATE)
    outcome = run_job(job_config(cfg, job), splits, masks[job.key], out_dir / "jobs" / job.key)
    if sweep is None:
        return outcome
    sweep.write(job, outcome)
    return outcome.without_values()


def run_job(cfg: MPOConfig, splits: dict, mask: np.ndarray, job_dir: Path) -> Outcome:
    """One fit (resumed from job_dir/checkpoint.pt when there is one, stopped by the held-out
    rule), every cell evaluated; a diverged fit is an Outcome with status FAILED and the reason."""
    start = time.perf_counter()
    job = setup_job(cfg, splits, mask)
    where = {"host": socket.gethostname(), "rank": parallel.world().Get_rank()}
    bn = has_bn(job.model)
    try:
        train, validation = fit_splits(splits, cfg)
        result = fit_plane(
            job.plane,
            job.model,
            job.mask,
            train,
            cfg,
            job_dir,
            job.fingerprint,
            cfg.overwrite,
            progress=False,
            heldout=validation,
            precision=cfg.engine.precision,
        )
    except Diverged as err:
        return Outcome(FAILED, reason=str(err), bn=bn, seconds=time.perf_counter() - start, **where)
    exported = result.plane.export()
    write_plane(job_dir / PLANE_FILE, exported, mask, OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    t_eval = time.perf_counter()
    values = plane_values(result.plane, job.model, job.mask, splits, cfg)
    eval_seconds = time.perf_counter() - t_eval
    history = np.array(result.history, dtype=np.float64).reshape(-1, len(HISTORY_COLUMNS))
    trained = trainable_cells(job.mask, cfg.skip_interior_cells)
    return Outcome(
        DONE,
        values=values,
        metrics=pattern_metrics(values, job.mask, trained),
        history=history,
        steps=result.steps,
        bn=bn,
        converged=result.converged,
        scale=exported["scale"],
        seconds=time.perf_counter() - start,
        train_seconds=result.run_seconds,  # this run's, as `seconds` (a resumed job: its last leg)
        heldout_seconds=result.heldout_seconds,
        eval_seconds=eval_seconds,
        **where,
    )
