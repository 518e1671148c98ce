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
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from landscape_hpc.config import FitOptions, MPOConfig
from landscape_hpc.data import Split, dataset_attrs, load_dataset, subset
from landscape_hpc.devices import resolve_device
from landscape_hpc.engine.batchnorm import has_bn
from landscape_hpc.engine.evaluate import check_engine, evaluate_points
from landscape_hpc.engine.losses import is_loss_output
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.files import hdf5
from landscape_hpc.files import surface as surface_file
from landscape_hpc.files.directions import directions_sha256
from landscape_hpc.files.plane import PLANE_FILE, write_plane
from landscape_hpc.grid import Grid, cell_coords, pattern_to_surface
from landscape_hpc.models import build_model
from landscape_hpc.mpo.fit import (
    RESUMABLE_OPTIONS,
    check_fit_options,
    fit_plane,
    fit_settings,
)
from landscape_hpc.mpo.patterns import describe_mask, make_mask, trainable_cells
from landscape_hpc.mpo.plane import Plane
from landscape_hpc.problem import problem_on

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
#: how origin, up and φ_right start: as freshly built models (loss-patterns' way) or Xavier
PLANE_INITS = ("fresh", "xavier")
#: cells per engine call when evaluating the fitted plane (one surface-file write each)
EVAL_CHUNK_CELLS = 100


def check_config(cfg: MPOConfig) -> np.ndarray:
    """The one check of an MPO config, before any data is loaded: every key, then the pattern.
    Returns the mask (H, W), True = low-loss; a UserError names the first bad key."""
    check_fit_options(cfg)
    check_engine(cfg.engine)
    if cfg.engine.loss != "ce":
        raise UserError(f"engine.loss={cfg.engine.loss!r}: MPO trains on cross-entropy; use ce")
    if cfg.eval_samples is not None and cfg.eval_samples < 1:
        raise UserError(f"eval_samples={cfg.eval_samples} must be at least 1 (or null for all)")
    check_choice("plane_init", cfg.plane_init, PLANE_INITS)
    if not cfg.scale_init > 0:
        raise UserError(f"scale_init={cfg.scale_init} must be positive")
    return make_mask(cfg.mask)


def build_plane(cfg: MPOConfig, input_shape: tuple[int, ...], n_classes: int) -> Plane:
    """origin from model (its checkpoint or init_seed), up and φ_right from fresh inits with
    init_seed + 1 and + 2 (appendix A); with plane_init=xavier every freshly initialised one is
    re-drawn Xavier-uniform (see xavier_init)."""
    models = [build_model(cfg.model, input_shape, n_classes)]
    for offset in (1, 2):
        fresh = dataclasses.replace(
            cfg.model, checkpoint=None, init_seed=cfg.model.init_seed + offset
        )
        models.append(build_model(fresh, input_shape, n_classes))
    if cfg.plane_init == "xavier":
        for offset, model in enumerate(models):
            if offset > 0 or cfg.model.checkpoint is None:
                xavier_init(model, cfg.model.init_seed + offset)
    return Plane.init(tuple(models), cfg.scale_init)  # type: ignore[arg-type]


def xavier_init(model: nn.Module, seed: int) -> None:
    """Glorot/Xavier-uniform weights (every parameter of 2 or more dimensions), zero biases;
    BN scales stay 1 and shifts 0. Seeded: the same seed gives the same weights."""
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                nn.init.xavier_uniform_(param, generator=generator)
            elif name.endswith("bias"):
                param.zero_()


def fingerprint(cfg: MPOConfig, mask: np.ndarray, counts: dict[str, Any]) -> dict[str, Any]:
    """Everything that makes two runs the same fit (steps excluded: more steps resume)."""
    return {
        "model": cfg.model.name,
        "model_kwargs": OmegaConf.to_container(OmegaConf.create(cfg.model.kwargs)),
        "model_checkpoint": cfg.model.checkpoint,
        "init_seed": cfg.model.init_seed,
        **counts,
        "dataset_seed": cfg.dataset.seed,
        "mask_sha256": hashlib.sha256(
            np.packbits(mask).tobytes() + str(mask.shape).encode()
        ).hexdigest(),
        # more steps resume the fit; the strategy and threads change only the float rounding;
        # the stop rule is re-applied to the stored history
        **{k: v for k, v in fit_settings(cfg).items() if k not in RESUMABLE_OPTIONS},
        "scale_init": cfg.scale_init,
        # only when not the default, so checkpoints and sweep files made before the key resume
        **({"plane_init": cfg.plane_init} if cfg.plane_init != "fresh" else {}),
        **({"precision": cfg.engine.precision} if cfg.engine.precision != "fp32" else {}),
    }


@dataclass
class Job:
    """One MPO fit set up on the data: the pattern, the plane to train, the model template, and
    the fingerprint that says which checkpoints and surface files belong to it."""

    cfg: MPOConfig  # also the fit's options (an MPOConfig is a FitOptions)
    mask: np.ndarray  # (H, W), True = low-loss
    plane: Plane
    model: nn.Module
    counts: dict[str, Any]
    fingerprint: dict[str, Any]


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
    if is_loss_output(model):
        raise UserError(
            f"model={cfg.model.name} outputs its own loss; MPO fits classifiers (its objective is "
            "cross-entropy over the pattern's cells): use mpo_cnn, mpo_cnn_bn, mlp, ..."
        )
    if has_bn(model) and cfg.engine.bn != "recompute":
        raise UserError(
            f"engine.bn={cfg.engine.bn}: {cfg.model.name} has BatchNorm and the plane was trained "
            "on batch statistics; evaluate with engine.bn=recompute"
        )


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
    """Fits (or resumes) the plane, evaluates every cell, writes the outputs; returns metrics."""
    start = time.perf_counter()
    mask = check_config(cfg)  # before loading data, to fail fast on a bad key or pattern
    set_threads(cfg)
    out_dir = Path(cfg.out_dir)
    hdf5.check_writable(out_dir / PLANE_FILE, "out_dir")
    if not cfg.overwrite:  # refused before plane.pt or the checkpoint is rewritten
        surface_file.existing_fingerprint(out_dir / "surface.h5", "out_dir")
    splits = load_dataset(cfg.dataset, resolve_device(cfg.device))
    job = setup_job(cfg, splits, mask)
    fp = job.fingerprint
    result = fit_plane(
        job.plane,
        job.model,
        mask,
        splits["train"],
        cfg,
        out_dir,
        fp,
        cfg.overwrite,
        heldout=splits["test"],
        precision=cfg.engine.precision,
    )
    plane = result.plane
    resolved = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    exported = plane.export()
    write_plane(out_dir / PLANE_FILE, exported, mask, resolved)

    fp_surface = {**fp, "steps": result.steps, "eval_samples": cfg.eval_samples}
    t_eval = time.perf_counter()
    values = evaluate_plane(
        plane,
        job.model,
        mask,
        splits,
        cfg,
        out_dir / "surface.h5",
        fp_surface,
        resolved,
        job.counts,
    )
    eval_seconds = time.perf_counter() - t_eval
    metrics = pattern_metrics(values, mask, trainable_cells(mask, cfg.skip_interior_cells))
    metrics.update(
        steps=result.steps,
        max_steps=cfg.steps,
        converged=result.converged,
        train_seconds=round(result.seconds, 2),
        heldout_seconds=round(result.heldout_seconds, 2),
        eval_seconds=round(eval_seconds, 2),
        wall_seconds=round(time.perf_counter() - start, 2),
        scale=float(exported["scale"]),
        job=job_identity(cfg, job.model),
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log.info("metrics: %s", json.dumps(metrics))
    if cfg.plot:
        from landscape_hpc.mpo.figures import plot_mpo

        for png in plot_mpo(out_dir, mask, values):
            log.info("plot: %s", png)
    return metrics


def evaluate_cells(
    subspace: Subspace,
    grid: Grid,
    model: nn.Module,
    splits: dict[str, Split],
    cfg: MPOConfig,
    flat: np.ndarray,
) -> dict[str, np.ndarray]:
    """Loss and accuracy of the plane's cells `flat` (flat indices of the surface grid, row = y)
    through the engine: {train_loss: (len(flat),), ...}."""
    options = cfg.engine
    if cfg.eval_samples is not None:
        splits = {s: subset(splits[s], cfg.eval_samples, cfg.dataset.seed) for s in SPLITS}
    data = {s: (splits[s].inputs, splits[s].labels) for s in SPLITS}
    coords = torch.from_numpy(grid.coords(flat))
    m = evaluate_points(model, subspace, coords, data, options, splits["train"].inputs)
    return surface_file.metric_values(m)


def evaluate_plane(
    plane: Plane,
    model: nn.Module,
    mask: np.ndarray,
    splits: dict[str, Split],
    cfg: MPOConfig,
    path: Path,
    fp: dict[str, Any],
    config_yaml: str,
    counts: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Every cell through the engine, written to the surface file in chunks (resumable); returns
    {train_loss, ...} in surface orientation (H, W)."""
    grid = Grid(*cell_coords(mask.shape))
    subspace = plane.to_subspace()
    attrs = {"config": config_yaml, "kind": "mpo", "mask_sha256": fp["mask_sha256"], **counts}
    attrs["precision"] = cfg.engine.precision
    fp = {**fp, "plane_sha256": directions_sha256([subspace.origin, *subspace.basis])}
    # the surface is derived from this folder's plane: a stale one (the plane trained on) is
    # recomputed, never mixed with the new plane's values
    stored = surface_file.existing_fingerprint(path, "out_dir") if not cfg.overwrite else None
    stale = path.exists() and stored != json.loads(json.dumps(fp))
    surface = surface_file.SurfaceFile.open(
        path, grid, subspace.basis, list(SPLITS), fp, attrs, overwrite=cfg.overwrite or stale
    )
    try:
        pending = surface.pending()
        for start in range(0, len(pending), EVAL_CHUNK_CELLS):
            flat = pending[start : start + EVAL_CHUNK_CELLS]
            surface.write(flat, evaluate_cells(subspace, grid, model, splits, cfg, flat))
        return {name: surface.f[name][()] for name in surface_file.metric_names(list(SPLITS))}
    finally:
        surface.close()


def plane_values(
    plane: Plane, model: nn.Module, mask: np.ndarray, splits: dict[str, Split], cfg: MPOConfig
) -> dict[str, np.ndarray]:
    """Every cell through the engine, in memory: {train_loss, ...} (H, W), surface orientation."""
    grid, subspace = Grid(*cell_coords(mask.shape)), plane.to_subspace()
    chunks = np.array_split(np.arange(grid.size), -(-grid.size // EVAL_CHUNK_CELLS))
    parts = [evaluate_cells(subspace, grid, model, splits, cfg, flat) for flat in chunks]
    return {k: np.concatenate([p[k] for p in parts]).reshape(mask.shape) for k in parts[0]}


def pattern_metrics(
    values: dict[str, np.ndarray], mask: np.ndarray, trained: np.ndarray | None = None
) -> dict[str, Any]:
    """Means over low-loss and high-loss cells per split, acc in percent, gap = low − high: over
    all cells (acc_low, ...) and over the trained (boundary) cells only (trained_acc_low, ...,
    the paper code's figure-4 numbers). `trained` (H, W) defaults to every cell."""
    low = pattern_to_surface(mask)  # the mask in surface orientation
    used = pattern_to_surface(np.ones_like(mask) if trained is None else trained)
    out: dict[str, Any] = {}
    for split in SPLITS:
        loss, acc = values[f"{split}_loss"], values[f"{split}_acc"]
        row: dict[str, float] = {}
        for prefix, cells in (("", np.ones_like(used)), ("trained_", used)):
            row[f"{prefix}acc_low"] = _mean(acc[low & cells])
            row[f"{prefix}acc_high"] = _mean(acc[~low & cells])
            row[f"{prefix}acc_gap"] = row[f"{prefix}acc_low"] - row[f"{prefix}acc_high"]
            row[f"{prefix}loss_low"] = _mean(loss[low & cells])
            row[f"{prefix}loss_high"] = _mean(loss[~low & cells])
        out[split] = row
    return out


def _mean(values: np.ndarray) -> float:
    """The mean, NaN for no values (a pattern whose class has no trained cell)."""
    return float(values.mean()) if values.size else float("nan")
