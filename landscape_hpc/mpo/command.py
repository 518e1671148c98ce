"""Multi-point optimisation (Skorokhodov & Burtsev 2019): fit a plane of K = H×W networks so that
the loss over it draws a pattern, then evaluate every cell through the surface engine.

    python -m landscape_hpc.mpo                                   # digits, mpo_cnn, builtin ring
    python -m landscape_hpc.mpo mask=image mask.path=cat.png mask.size=[40,50] steps=5000
    python -m landscape_hpc.mpo mask=random mask.size=30 mask.fill_prob=0.3 mask.frame=true
    python -m landscape_hpc.mpo model=mpo_cnn_bn dataset=fashion_mnist dataset.root=~/data \\
        batch_size=512 cells_per_step=50 lr=3e-4 ce_threshold=2.5 steps=11800 device=cuda
    python -m landscape_hpc.mpo -m +experiment=bn_sweep hydra/launcher=submitit_slurm  # the sweep

Writes to the output folder (hydra.run.dir or out_dir=): checkpoint.pt (plane + Adam state +
history, every checkpoint_every steps), history.csv (the held-out check every eval_every steps),
plane.pt, surface.h5 (the surface-file layout over the pattern's grid, x = α along `right`,
y = β along `up`), metrics.json and mask.png, loss.png, acc.png. The fit stops by itself when
the held-out gap stops improving (early_stop; `steps` is the maximum).
Running the same command again resumes the fit and the surface; a finished run does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from landscape_hpc.config import FitOptions, MPOConfig
from landscape_hpc.data import Split, dataset_attrs, load_dataset
from landscape_hpc.devices import resolve_device
from landscape_hpc.engine.batchnorm import has_bn
from landscape_hpc.models import build_model
from landscape_hpc.mpo import job as mpo_job
from landscape_hpc.mpo.job import Job, check_options, fit_and_evaluate
from landscape_hpc.mpo.patterns import describe_mask, make_mask
from landscape_hpc.mpo.plane import Plane
from landscape_hpc.mpo.plane_init import initial_plane
from landscape_hpc.problem import problem_on

log = logging.getLogger(__name__)


def check_config(cfg: MPOConfig) -> np.ndarray:
    """The one check of an MPO config, before any data is loaded: every key, then the pattern.
    Returns the mask (H, W), True = low-loss; a UserError names the first bad key."""
    check_options(cfg)
    return make_mask(cfg.mask)


def build_plane(cfg: MPOConfig, input_shape: tuple[int, ...], n_classes: int) -> Plane:
    """origin from model (its checkpoint or init_seed), up and φ_right from fresh inits with
    init_seed + 1 and + 2 (appendix A); with plane_init=xavier every freshly initialised one is
    re-drawn Xavier-uniform (mpo/plane_init.py xavier_init)."""
    models = [build_model(cfg.model, input_shape, n_classes)]
    for offset in (1, 2):
        fresh = dataclasses.replace(
            cfg.model, checkpoint=None, init_seed=cfg.model.init_seed + offset
        )
        models.append(build_model(fresh, input_shape, n_classes))
    redraw_origin = cfg.model.checkpoint is None
    return initial_plane(models, cfg.plane_init, cfg.model.init_seed, cfg.scale_init, redraw_origin)


def fingerprint(cfg: MPOConfig, mask: np.ndarray, counts: dict[str, Any]) -> dict[str, Any]:
    """Everything that makes two runs the same fit (steps excluded: more steps resume)."""
    problem = {
        "model": cfg.model.name,
        "model_kwargs": OmegaConf.to_container(OmegaConf.create(cfg.model.kwargs)),
        "model_checkpoint": cfg.model.checkpoint,
        "init_seed": cfg.model.init_seed,
        "dataset_seed": cfg.dataset.seed,
    }
    return mpo_job.fingerprint(problem, mask, counts, cfg)


def setup_job(cfg: MPOConfig, splits: dict[str, Split], mask: np.ndarray) -> Job:
    """The plane and model of a checked config (check_config) on the data's device."""
    problem = problem_on(cfg.model, cfg.dataset, splits)
    model = problem.model
    check_model(cfg, model)
    plane = build_plane(cfg, problem.input_shape, problem.num_classes).to(problem.device)
    counts = dataset_attrs(cfg.dataset, splits)
    return Job(cfg, mask, plane, model, counts, fingerprint(cfg, mask, counts))


def check_model(cfg: MPOConfig, model: nn.Module) -> None:
    """A UserError for a net MPO cannot fit, or cannot evaluate the way it was trained."""
    mpo_job.check_model(cfg.model.name, model, cfg.engine.bn)


def job_identity(cfg: MPOConfig, model: nn.Module) -> dict[str, Any]:
    """What names a run in a sweep table: the net, whether it has BN, the pattern and the seed."""
    return {
        "model": cfg.model.name,
        "bn": has_bn(model),
        "mask": describe_mask(cfg.mask),
        "fill_prob": cfg.mask.fill_prob if cfg.mask.kind == "random" else None,
        "seed": cfg.seed,
        "host": socket.gethostname(),
        # the process's rank when a launcher started several (srun, mpirun), else 0
        "rank": int(os.environ.get("SLURM_PROCID", os.environ.get("OMPI_COMM_WORLD_RANK", 0))),
    }


def set_threads(opts: FitOptions) -> None:
    """CPU threads of this process's fits, when the config fixes them (the sweep preset does:
    reductions then run in the same order on every route, so every route gives the same bits)."""
    if opts.threads is not None:
        torch.set_num_threads(int(opts.threads))


def run_mpo(cfg: MPOConfig) -> dict[str, Any]:
    """Fits (or resumes) the plane, evaluates every cell, writes the outputs; returns metrics.
    The config builds the job (registry model, data set, mask); mpo/job.py runs it, as it does
    for lh.fit_mpo."""
    start = time.perf_counter()
    mask = check_config(cfg)  # before loading data, to fail fast on a bad key or pattern
    set_threads(cfg)
    splits = load_dataset(cfg.dataset, resolve_device(cfg.device))
    job = setup_job(cfg, splits, mask)
    outcome = fit_and_evaluate(
        job,
        splits,
        Path(cfg.out_dir),
        config_text=OmegaConf.to_yaml(OmegaConf.structured(cfg)),
        identity=job_identity(cfg, job.model),
        start=start,
    )
    log.info("metrics: %s", json.dumps(outcome.metrics))
    if cfg.plot:
        from landscape_hpc.mpo.figures import plot_mpo

        for png in plot_mpo(Path(cfg.out_dir), mask, outcome.values):
            log.info("plot: %s", png)
    return outcome.metrics
