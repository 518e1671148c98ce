"""One MPO job, the one code path under `python -m landscape_hpc.mpo` (mpo/command.py) and
`lh.fit_mpo` (api/mpo.py): fit the plane to the pattern (mpo/fit.py, resumable), evaluate every
cell through the surface engine, and sum the cells up per class.

The command builds the job from its config (registry model, data set, mask), the library from
the caller's model, tensors and mask; both then call `fit_and_evaluate`. With an output folder
it writes checkpoint.pt and history.csv (the fit), plane.pt, surface.h5 (the cells, x = α along
`right`, y = β along `up`, resumable) and metrics.json; without one everything stays in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from landscape_hpc.api.run import MemoryStore
from landscape_hpc.config import FitOptions, MPOConfig
from landscape_hpc.data import Split, subset
from landscape_hpc.engine.batchnorm import has_bn
from landscape_hpc.engine.evaluate import check_engine, evaluate_points
from landscape_hpc.engine.losses import is_loss_output
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.files import hdf5
from landscape_hpc.files import surface as surface_file
from landscape_hpc.files.directions import directions_sha256
from landscape_hpc.files.plane import PLANE_FILE, write_plane
from landscape_hpc.grid import Grid, cell_coords
from landscape_hpc.mpo.convergence import validation_split
from landscape_hpc.mpo.fit import (
    RESUMABLE_OPTIONS,
    FitResult,
    check_fit_options,
    fit_plane,
    fit_settings,
)
from landscape_hpc.mpo.patterns import trainable_cells
from landscape_hpc.mpo.plane import Plane
from landscape_hpc.mpo.plane_init import PLANE_INITS
from landscape_hpc.mpo.scores import pattern_metrics

SPLITS = ("train", "test")
#: cells per engine call when evaluating the fitted plane (one surface-file write each)
EVAL_CHUNK_CELLS = 100
SURFACE_FILE = "surface.h5"


def check_options(cfg: MPOConfig) -> None:
    """Every key of an MPO config but the problem and the pattern: the fit's, the evaluation's,
    the plane's start. A UserError names the first bad key."""
    check_fit_options(cfg)
    check_engine(cfg.engine)
    if cfg.engine.loss != "ce":
        raise UserError(f"engine.loss={cfg.engine.loss!r}: MPO trains on cross-entropy; use ce")
    if cfg.eval_samples is not None and cfg.eval_samples < 1:
        raise UserError(f"eval_samples={cfg.eval_samples} must be at least 1 (or null for all)")
    check_choice("plane_init", cfg.plane_init, PLANE_INITS)
    if not cfg.scale_init > 0:
        raise UserError(f"scale_init={cfg.scale_init} must be positive")


def check_model(name: str, model: nn.Module, bn: str) -> None:
    """A UserError for a net MPO cannot fit, or cannot evaluate the way it was trained."""
    if is_loss_output(model):
        raise UserError(
            f"model={name} outputs its own loss; MPO fits classifiers (its objective is "
            "cross-entropy over the pattern's cells): use mpo_cnn, mpo_cnn_bn, mlp, ..."
        )
    if has_bn(model) and bn != "recompute":
        raise UserError(
            f"engine.bn={bn}: {name} has BatchNorm and the plane was trained on batch "
            "statistics; evaluate with engine.bn=recompute"
        )


def mask_sha256(mask: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()


def fingerprint(
    problem: dict[str, Any], mask: np.ndarray, counts: dict[str, Any], cfg: MPOConfig
) -> dict[str, Any]:
    """Everything that makes two runs the same fit (steps excluded: more steps resume):
    `problem` names the model and data (the command: registry name, kwargs, checkpoint, seeds;
    the library: the model's class and the digest of its weights)."""
    return {
        **problem,
        **counts,
        "mask_sha256": mask_sha256(mask),
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


@dataclass
class JobOutcome:
    """A fitted and evaluated plane: the fit (steps, history), plane.pt's contents, the cells'
    values {train_loss, ...} (H, W) in surface orientation, and metrics.json's contents."""

    fit: FitResult
    exported: dict[str, Any]
    values: dict[str, np.ndarray]
    metrics: dict[str, Any] = field(default_factory=dict)


def fit_splits(splits: dict[str, Split], cfg: FitOptions) -> tuple[Split, Split]:
    """The fit's data: (the training split without the validation samples, the validation
    split of cfg.val_samples samples drawn by cfg.seed). The held-out checks and the stop rule
    read the validation split only; the test split is left to the final evaluation."""
    return validation_split(splits["train"], cfg.val_samples, cfg.seed)


def fit_and_evaluate(
    job: Job,
    splits: dict[str, Split],
    out_dir: Optional[Path],
    *,
    config_text: str,
    identity: dict[str, Any],
    progress: bool = True,
    start: Optional[float] = None,
) -> JobOutcome:
    """Fits (or resumes) the plane, evaluates every cell, writes the outputs into `out_dir`
    (none when None). `config_text` goes into plane.pt and surface.h5, `identity` into the
    metrics (job); `start`: perf_counter at the run's start (wall_seconds), default now."""
    start = time.perf_counter() if start is None else start
    cfg, mask = job.cfg, job.mask
    if out_dir is not None:
        hdf5.check_writable(out_dir / PLANE_FILE, "out_dir")
        if not cfg.overwrite:  # refused before plane.pt or the checkpoint is rewritten
            surface_file.existing_fingerprint(out_dir / SURFACE_FILE, "out_dir")
    train, validation = fit_splits(splits, cfg)
    result = fit_plane(
        job.plane,
        job.model,
        mask,
        train,
        cfg,
        out_dir,
        job.fingerprint,
        cfg.overwrite,
        progress=progress,
        heldout=validation,
        precision=cfg.engine.precision,
    )
    exported = result.plane.export()
    t_eval = time.perf_counter()
    if out_dir is None:
        values = plane_values(result.plane, job.model, mask, splits, cfg)
    else:
        write_plane(out_dir / PLANE_FILE, exported, mask, config_text)
        fp = {**job.fingerprint, "steps": result.steps, "eval_samples": cfg.eval_samples}
        attrs = {"config": config_text, "kind": "mpo", "mask_sha256": fp["mask_sha256"]}
        attrs["precision"] = cfg.engine.precision
        values = evaluate_plane(
            result.plane, job.model, mask, splits, cfg, out_dir / SURFACE_FILE, fp,
            {**attrs, **job.counts},
        )  # fmt: skip
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
        job=identity,
    )
    if out_dir is not None:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return JobOutcome(result, exported, values, metrics)


def evaluate_cells(
    subspace: Subspace,
    grid: Grid,
    model: nn.Module,
    splits: dict[str, Split],
    cfg: MPOConfig,
    flat: np.ndarray,
) -> dict[str, np.ndarray]:
    """Loss and accuracy of the plane's cells `flat` (flat indices of the surface grid, row = y)
    through the engine: {train_loss: (len(flat),), ...}. With eval_samples, on a subset seeded
    by dataset.seed."""
    if cfg.eval_samples is not None:
        splits = {s: subset(splits[s], cfg.eval_samples, cfg.dataset.seed) for s in SPLITS}
    data = {s: (splits[s].inputs, splits[s].labels) for s in SPLITS}
    coords = torch.from_numpy(grid.coords(flat))
    m = evaluate_points(model, subspace, coords, data, cfg.engine, splits["train"].inputs)
    return surface_file.metric_values(m)


def evaluate_into(
    store: Any,
    subspace: Subspace,
    grid: Grid,
    model: nn.Module,
    splits: dict[str, Split],
    cfg: MPOConfig,
) -> None:
    """The store's pending cells (a surface file or a MemoryStore), EVAL_CHUNK_CELLS at a time:
    the same chunks in memory and in a file, so both hold the same bits."""
    pending = store.pending()
    for start in range(0, len(pending), EVAL_CHUNK_CELLS):
        flat = pending[start : start + EVAL_CHUNK_CELLS]
        store.write(flat, evaluate_cells(subspace, grid, model, splits, cfg, flat))


def evaluate_plane(
    plane: Plane,
    model: nn.Module,
    mask: np.ndarray,
    splits: dict[str, Split],
    cfg: MPOConfig,
    path: Path,
    fp: dict[str, Any],
    attrs: dict[str, Any],
) -> dict[str, np.ndarray]:
    """Every cell through the engine, written to the surface file in chunks (resumable); returns
    {train_loss, ...} in surface orientation (H, W)."""
    grid = Grid(*cell_coords(mask.shape))
    subspace = plane.to_subspace()
    fp = {**fp, "plane_sha256": directions_sha256([subspace.origin, *subspace.basis])}
    # the surface is derived from this folder's plane: a stale one (the plane trained on) is
    # recomputed, never mixed with the new plane's values
    stored = surface_file.existing_fingerprint(path, "out_dir") if not cfg.overwrite else None
    stale = path.exists() and stored != json.loads(json.dumps(fp))
    surface = surface_file.SurfaceFile.open(
        path, grid, subspace.basis, list(SPLITS), fp, attrs, overwrite=cfg.overwrite or stale
    )
    try:
        evaluate_into(surface, subspace, grid, model, splits, cfg)
        return {name: surface.f[name][()] for name in surface_file.metric_names(list(SPLITS))}
    finally:
        surface.close()


def plane_values(
    plane: Plane, model: nn.Module, mask: np.ndarray, splits: dict[str, Split], cfg: MPOConfig
) -> dict[str, np.ndarray]:
    """Every cell through the engine, in memory: {train_loss, ...} (H, W), surface orientation."""
    grid, subspace = Grid(*cell_coords(mask.shape)), plane.to_subspace()
    store = MemoryStore(grid, surface_file.metric_names(list(SPLITS)))
    evaluate_into(store, subspace, grid, model, splits, cfg)
    return {k: v for k, v in store.arrays.items() if k != "done"}
