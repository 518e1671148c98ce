"""Multi-point optimisation from Python (Skorokhodov & Burtsev 2019): a plane of H×W networks
whose loss draws a pattern, fitted for a model and data that exist only in memory.

    import landscape_hpc as lh
    mask = lh.mpo_mask("builtin", name="ring", size=20)      # or any (H, W) array of 0/1
    res = lh.fit_mpo(model, {"train": (x, y), "test": (xt, yt)}, mask, steps=2000)
    res.surface.test_acc.plot()                              # dims (y, x): one value per cell
    res.history.plot(x="step", y="gap_trained")              # the held-out checks

The command `python -m landscape_hpc.mpo` runs the same job (mpo/job.py `fit_and_evaluate`):
it builds the model, data and mask from its config, this module from the caller's objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import Tensor, nn

from landscape_hpc.api import results
from landscape_hpc.api.options import model_device, on_device, splits_on
from landscape_hpc.api.surface import state_sha256
from landscape_hpc.config import (
    DatasetConfig,
    EngineConfig,
    FitOptions,
    MaskConfig,
    ModelConfig,
    MPOConfig,
)
from landscape_hpc.data import Split
from landscape_hpc.engine.batchnorm import has_bn
from landscape_hpc.errors import UserError, check_choice, check_seeds
from landscape_hpc.grid import Grid, cell_coords, pattern_to_surface
from landscape_hpc.mpo import patterns
from landscape_hpc.mpo.convergence import HISTORY_COLUMNS
from landscape_hpc.mpo.job import Job, JobOutcome, check_model, check_options, fit_and_evaluate
from landscape_hpc.mpo.job import fingerprint as job_fingerprint
from landscape_hpc.mpo.patterns import trainable_cells
from landscape_hpc.mpo.plane import cell_alpha_beta
from landscape_hpc.mpo.plane_init import check_redrawable, fresh_copy, initial_plane
from landscape_hpc.params import ParamDict

MaskLike = Union[str, np.ndarray, Tensor]
#: the MPOConfig keys fit_mpo takes as they are: the fit's, the plane's start, the evaluation's
_OPTIONS = (
    *(f.name for f in fields(FitOptions)),
    "scale_init",
    "plane_init",
    "eval_samples",
    "overwrite",
)


def mpo_mask(
    kind: str = "builtin",
    *,
    name: str = "ring",
    size: Any = 20,
    fill_prob: float = 0.5,
    seed: int = 0,
    frame: bool = False,
    path: Optional[str] = None,
    threshold: float = 0.5,
    invert: bool = False,
) -> np.ndarray:
    """A pattern for `fit_mpo`, as the command's mask= draws it: (H, W) bool, True = low-loss
    cell, row 0 the top of the picture.

    Args:
        kind: builtin (a shape drawn by code), random (each cell low-loss with fill_prob) or
            image (a picture, dark pixels low-loss).
        name: builtin: ring, cross, square, smiley, stripes, checkerboard, corners, letter_a,
            noise (unframed random, fill 0.5, seed 0).
        size: cells: n for n×n, or (H, W).
        fill_prob: random: the probability that a cell is low-loss, in (0, 1).
        seed: random: the pattern's seed.
        frame: random: the paper code's layout (high-loss outer ring, low-loss frame, random
            interior; size at least 4).
        path: image: a PNG or JPG file.
        threshold: image: brightness in [0, 1] below which a cell is low-loss.
        invert: image: light pixels are low-loss instead.

    Returns:
        The mask, holding both classes (a UserError otherwise).
    """
    check_choice("kind", kind, patterns.MASK_KINDS)
    if kind == "builtin":
        mask, what = patterns.builtin_mask(name, size, prefix=""), f"mpo_mask(name={name!r})"
    elif kind == "random":
        mask = patterns.random_mask(size, fill_prob, seed, frame, prefix="")
        what = f"mpo_mask('random', fill_prob={fill_prob}, seed={seed})"
    else:
        mask = patterns.image_mask(path, size, threshold, invert, prefix="")
        what = f"mpo_mask('image', path={path!r})"
    patterns.check_both_classes(mask, what, prefix="")
    return mask


def as_mask(mask: MaskLike) -> np.ndarray:
    """`mask` as the fit takes it, (H, W) bool; a UserError naming mask= for anything else."""
    if isinstance(mask, str):
        check_choice("mask", mask, tuple(patterns.BUILTINS))
        return mpo_mask("builtin", name=mask)
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    how = "give an (H, W) array of 0/1 (1 = low-loss cell, row 0 the top), lh.mpo_mask(...)"
    try:
        array = np.asarray(mask)
    except ValueError:  # ragged nested lists
        raise UserError(f"mask= is not a rectangular array; {how}") from None
    if array.ndim != 2 or min(array.shape) < 2 or max(array.shape) > patterns.MAX_SIDE:
        raise UserError(
            f"mask= has shape {array.shape}, not (H, W) with 2 to {patterns.MAX_SIDE} cells a "
            f"side; {how}"
        )
    patterns.check_cells(f"mask= of shape {array.shape}", array.shape)
    if array.dtype != bool:
        numeric = np.issubdtype(array.dtype, np.number)
        bad = array[~np.isin(array, (0, 1))].tolist()[:3] if numeric else [str(array.dtype)]
        if bad:
            raise UserError(f"mask= holds values other than 0 and 1 ({bad}); {how}")
        array = array == 1
    if array.all() or not array.any():
        which = "low-loss (1)" if not array.any() else "high-loss (0)"
        raise UserError(f"mask= has no {which} cells; the pattern needs both classes")
    return np.ascontiguousarray(array)


@dataclass
class MPOResult:
    """A fitted plane. `surface`: an xarray.Dataset over the cells, dims (y, x), x = α (along
    right), y = β (along up), one unit per cell, y ascending (the picture upright): train_loss,
    train_acc, test_loss, test_acc (percent), `mask` (1 = low-loss cell), `trained` (1 = a
    cell the fit trained on), `done`; attrs["basis"] = [scale·right, scale·up], so
    `lh.save(res.surface, path)` writes a surface file. `mask`: the pattern (H, W) bool, row 0
    the top. `history`: the held-out checks, a DataFrame with the columns of history.csv (step,
    gap_trained, gap_all, acc_low_trained, ..., loss, scale, seconds). `plane`: plane.pt's
    origin, up, right ({state_dict key: tensor}, origin with the buffers) and scale (float),
    θ(α, β) = origin + scale·(α·right + β·up). `metrics`: metrics.json (per split: acc_low,
    acc_high, acc_gap, ...; steps, converged, seconds, scale)."""

    surface: xr.Dataset
    mask: np.ndarray
    history: pd.DataFrame
    plane: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def directions(self) -> list[ParamDict]:
        """[scale·right, scale·up], for `lh.surface(net, data, directions=res.directions)` with
        net holding res.plane["origin"]: grid coordinates are then cells (α, β)."""
        s = self.plane["scale"]
        return [{k: s * v for k, v in self.plane[d].items()} for d in ("right", "up")]

    def cell_state(self, row: int, col: int) -> ParamDict:
        """The state dict of the network at pattern cell (row, col), row 0 the top: load it with
        model.load_state_dict to use that network."""
        h, w = self.mask.shape
        if not (0 <= row < h and 0 <= col < w):
            raise UserError(f"cell ({row}, {col}) is outside the {h}×{w} pattern")
        alpha, beta = cell_alpha_beta((h, w), torch.tensor([row]), torch.tensor([col]))[0]
        s, origin = self.plane["scale"], self.plane["origin"]
        right, up = self.plane["right"], self.plane["up"]
        return {
            k: (v + s * (alpha * right[k] + beta * up[k]) if k in up else v.clone())
            for k, v in origin.items()
        }


def _engine(engine: Any) -> EngineConfig:
    """The evaluation's EngineConfig: the command's default (bn=recompute) with `engine`'s keys."""
    if isinstance(engine, EngineConfig):
        return engine
    base = EngineConfig(bn="recompute")
    if engine is None:
        return base
    if not isinstance(engine, Mapping):
        raise UserError(f"engine={engine!r}: give a dict of EngineConfig keys or an EngineConfig")
    known = {f.name for f in fields(EngineConfig)}
    unknown = sorted(set(engine) - known)
    if unknown:
        raise UserError(f"engine= has unknown keys {unknown}; EngineConfig takes {sorted(known)}")
    return replace(base, **dict(engine))


def _tensors(split: Any, name: str) -> Split:
    """A split of `data` as the fit draws batches from it: inputs and (N,) labels on a device."""
    if isinstance(split, tuple):
        inputs, labels = split[0], split[1] if len(split) > 1 else None
    elif getattr(split, "streamed", True) is False:  # the engine's resident split
        inputs, labels = split.inputs, split.target
    else:
        raise UserError(
            f"data[{name!r}] is streamed (a DataLoader or a large Dataset); MPO draws random "
            "batches of samples, so pass the split as (inputs, labels) tensors"
        )
    if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor) or labels.dim() != 1:
        raise UserError(
            f"data[{name!r}]: MPO fits a classifier: give (inputs, labels) with inputs a Tensor "
            "(N, ...) and labels (N,) class indices"
        )
    if labels.is_floating_point():
        raise UserError(f"data[{name!r}]: labels are {labels.dtype}; give class indices (int64)")
    return Split(inputs.float() if inputs.is_floating_point() else inputs, labels.long())


def _config(engine: Any, eval_seed: int, options: dict[str, Any]) -> MPOConfig:
    """The MPOConfig of the keyword arguments (the problem and pattern come as objects)."""
    cfg = MPOConfig(
        model=ModelConfig(name="library"),
        dataset=DatasetConfig(seed=eval_seed),  # dataset.seed: the eval_samples subset's seed
        mask=MaskConfig(),
        engine=_engine(engine),
        **options,
    )
    check_options(cfg)
    return cfg


def fit_mpo(
    model: nn.Module,
    data: Any,
    mask: MaskLike,
    *,
    steps: int = 5000,
    lr: float = 1e-3,
    batch_size: int = 32,
    cells_per_step: int = 16,
    ce_threshold: float = 2.0,
    grad_clip: Optional[float] = None,
    skip_interior_cells: bool = True,
    seed: int = 0,
    init_seed: int = 0,
    plane_init: str = "fresh",
    scale_init: float = 0.1,
    strategy: str = "vmap",
    memory_mb: float = 2048.0,
    eval_every: int = 50,
    val_samples: int = 256,
    heldout_samples: int = 256,
    heldout_cells: int = 32,
    early_stop: bool = True,
    patience: int = 12,
    min_delta: float = 1.0,
    min_steps: int = 1000,
    eval_samples: Optional[int] = 400,
    eval_seed: int = 0,
    engine: Optional[Union[Mapping[str, Any], EngineConfig]] = None,
    threads: Optional[int] = None,
    checkpoint_every: int = 100,
    out_dir: Optional[Union[str, Path]] = None,
    overwrite: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = True,
) -> MPOResult:
    """Fits a plane θ(α, β) = origin + s·(α·right + β·up) of networks of the model's architecture
    so that the cells of `mask` have low loss and the others high loss (eq. 3: cross-entropy on
    low-loss cells, minus min(CE, ce_threshold) on high-loss ones), then evaluates every cell.

    The plane starts at the model's weights (origin, as the command's model.checkpoint: never
    re-drawn); up and φ_right start as copies of the model re-initialised by their layers'
    reset_parameters() from init_seed + 1 and + 2 (mpo/plane_init.py). For nets whose __init__
    draws nothing of its own (mlp, mpo_cnn, mpo_cnn6, mpo_cnn_bn, vgg9 of the registry; not the
    resnets, which re-draw their convolutions) those are the weights of the command's freshly
    built models of model.init_seed=init_seed, so both fit the same plane bit for bit. The
    model itself is not modified (its training mode comes back). One process: the command is
    not MPI either (the sweep spreads many fits over ranks).

    Args:
        model: an nn.Module classifier ((B, ...) -> (B, classes) logits); the template of every
            cell, its weights the plane's origin.
        data: {"train": (inputs, labels), "test": (inputs, labels)}, tensors held in memory:
            the fit draws batches from train less its validation split (val_samples) and
            checks the plane on that split (history, the stop rule); every cell is evaluated
            on train and test, and test is read by that final evaluation alone.
        mask: the pattern: an (H, W) array (numpy, tensor or nested lists) of 0/1, 1 = low-loss
            cell, row 0 the top of the picture; a builtin name (ring, cross, square, smiley,
            stripes, checkerboard, corners, letter_a, noise: 20×20); or lh.mpo_mask(...) for
            other sizes, random masks, pictures.
        steps: the most optimisation steps (early_stop may end sooner).
        lr: Adam learning rate.
        batch_size: training samples per step, shared by all sampled cells.
        cells_per_step: cells of each class sampled per step.
        ce_threshold: high-loss cells count min(CE, ce_threshold), in nats.
        grad_clip: clip the plane's gradient norm to this (None: no clipping).
        skip_interior_cells: train only cells with a neighbour of the other class.
        seed: seed of the batches, the sampled cells, the validation split and the held-out
            set.
        init_seed: up and φ_right start from init_seed + 1 and + 2 (the command's
            model.init_seed); with plane_init="xavier" they are re-drawn from those seeds.
        plane_init: fresh (the layers' own init) or xavier (Xavier-uniform weights, zero
            biases) for up and φ_right.
        scale_init: the plane's initial scale s (learned).
        strategy: the cells of a step: vmap (batched) or loop (one by one).
        memory_mb: memory for the stacked cell weights and activations of a training chunk (MiB).
        eval_every: check the plane on the held-out set every this many steps.
        val_samples: the validation split: this many samples (at most a fifth) drawn (by
            seed) from train and left out of its batches; the held-out checks and the stop
            rule read only it.
        heldout_samples: at most this many validation samples in the held-out set.
        heldout_cells: at most this many cells of each class in the held-out set.
        early_stop: end the fit once the held-out gap stops improving.
        patience: checks without improvement that end the fit.
        min_delta: the improvement that counts, in points of accuracy.
        min_steps: no stop before this step.
        eval_samples: evaluate the cells on a seeded subset of at most this many samples per
            split (BN statistics from the train subset); None: every sample.
        eval_seed: the seed of that subset (the command's dataset.seed).
        engine: the cells' evaluation: a dict of EngineConfig keys (strategy, batch_size,
            memory_mb, bn, fold_bn, ...) over the command's default (bn="recompute").
        threads: CPU threads during the fit (None: as they are); restored afterwards.
        checkpoint_every: with out_dir, save the plane and optimiser every this many steps.
        out_dir: write the command's files here (checkpoint.pt, history.csv, plane.pt,
            surface.h5, metrics.json) and resume: a second call with the same arguments
            continues the fit (more steps) or only reads the results back.
        overwrite: start again in an out_dir made by another job.
        device: where to fit (default: the model's device); data are moved there.
        progress: show a progress bar.

    Returns:
        An MPOResult: .surface (xarray.Dataset over the cells), .mask, .history (DataFrame),
        .plane (origin, up, right, scale), .metrics; .directions and .cell_state(row, col).
    """
    check_seeds(seed=seed, init_seed=init_seed, eval_seed=eval_seed)
    pattern = as_mask(mask)
    options = {k: v for k, v in locals().items() if k in _OPTIONS}
    cfg = _config(engine, eval_seed, options)
    template = on_device(model, device)
    name = type(model).__name__
    check_model(name, template, cfg.engine.bn)
    check_redrawable(template, plane_init, "model")
    every, _ = splits_on(data, model_device(template, None), None, None)
    missing = [s for s in ("train", "test") if s not in every]
    if missing:
        raise UserError(
            f"data= lacks the split(s) {missing}: MPO fits on train and checks on test; pass "
            "{'train': (inputs, labels), 'test': (inputs, labels)}"
        )
    splits = {s: _tensors(every[s], s) for s in ("train", "test")}
    fresh = [fresh_copy(template, init_seed + offset) for offset in (1, 2)]
    plane = initial_plane([template, *fresh], plane_init, init_seed, scale_init, False)
    counts = {f"n_{s}": int(splits[s].labels.shape[0]) for s in ("train", "test")}
    problem = {
        "model_class": type(model).__qualname__,
        "origin_sha256": state_sha256(template.state_dict()),
        "init_seed": init_seed,
        "eval_seed": eval_seed,
    }
    fp = job_fingerprint(problem, pattern, counts, cfg)
    job = Job(cfg, pattern, plane.to(model_device(template, None)), template, counts, fp)
    settings = {"made_by": "landscape_hpc.fit_mpo (library)", **problem, **options}
    identity = {"model": name, "bn": has_bn(template), "mask": "given", "seed": seed}
    training, before = template.training, torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    template.eval()  # as the command's model: probing its memory in train mode would move BN
    try:
        outcome = fit_and_evaluate(
            job, splits, None if out_dir is None else Path(out_dir), progress=progress,
            config_text=json.dumps(settings, indent=2, sort_keys=True, default=str),
            identity=identity,
        )  # fmt: skip
    finally:
        template.train(training)
        torch.set_num_threads(before)
    return _result(outcome, pattern, cfg, {**settings, "engine": str(cfg.engine)})


def _result(
    outcome: JobOutcome, mask: np.ndarray, cfg: MPOConfig, attrs: dict[str, Any]
) -> MPOResult:
    """The outcome of a job as the library hands it back."""
    grid = Grid(*cell_coords(mask.shape))
    trained = trainable_cells(mask, cfg.skip_interior_cells)
    arrays = {
        **outcome.values,
        "mask": pattern_to_surface(mask).astype(np.uint8),
        "trained": pattern_to_surface(trained).astype(np.uint8),
        "done": np.ones(mask.shape, np.uint8),
    }
    plane = outcome.exported
    basis = [{k: plane["scale"] * v for k, v in plane[d].items()} for d in ("right", "up")]
    info = {"kind": "mpo", "steps": outcome.fit.steps, "converged": outcome.fit.converged}
    ds = results.to_dataset(grid, arrays, basis, {**attrs, **info, "scale": plane["scale"]})
    ds["mask"].attrs["long_name"] = "1 = low-loss cell of the pattern"
    ds["trained"].attrs["long_name"] = "1 = cell trained on"
    history = pd.DataFrame(
        np.asarray(outcome.fit.history, np.float64).reshape(-1, len(HISTORY_COLUMNS)),
        columns=list(HISTORY_COLUMNS),
    ).astype({"step": np.int64})
    return MPOResult(ds, mask, history, plane, outcome.metrics)
