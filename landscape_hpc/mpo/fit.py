"""Fitting the MPO plane to a pattern: the training loop, checkpoints and resume.

Each step draws a data batch and `cells_per_step` trainable cells of each class from a generator
seeded by (seed, step), so a resumed run draws exactly what an uninterrupted one would have.
With a held-out split (the validation split carved from the training split: a job passes the
rest as `train`, mpo/job.py `fit_splits`), every `eval_every` steps the plane is checked on a
fixed held-out set (mpo/convergence.py); the history is kept, and the fit ends by itself once
the stop rule says it has converged (`steps` is then only the maximum). The plane, the Adam
state and the history are saved to `checkpoint.pt` every `checkpoint_every` steps and at the
end; `fit_plane` continues from that file when it exists and was made by the same job.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from landscape_hpc.config import FitOptions
from landscape_hpc.data import Split
from landscape_hpc.engine.precision import precision as at_precision
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.files.hdf5 import fingerprint_diff
from landscape_hpc.mpo.convergence import (
    HISTORY_COLUMNS,
    HISTORY_CSV,
    HeldOut,
    StopRule,
    history_row,
    write_history_csv,
)
from landscape_hpc.mpo.objective import (
    STEP_STRATEGIES,
    StepStats,
    cell_bytes,
    cells_per_chunk,
    objective_batched,
    objective_loop,
    training_template,
)
from landscape_hpc.mpo.patterns import trainable_cells
from landscape_hpc.mpo.plane import Plane, cell_alpha_beta
from landscape_hpc.paths import require_regular

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
#: running averages in the progress bar: weight of the newest step
_EMA = 0.1


def stop_rule(opts: FitOptions) -> StopRule:
    return StopRule(opts.early_stop, opts.patience, opts.min_delta, opts.min_steps)


def fit_settings(opts: FitOptions) -> dict[str, Any]:
    """The FitOptions keys of `opts` (an MPOConfig is a FitOptions with more keys)."""
    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(FitOptions)}


#: FitOptions that change neither the trajectory nor the history: a checkpoint made with other
#: values resumes (more steps continue; the stop rule is re-applied to the stored history)
RESUMABLE_OPTIONS = (
    "steps",
    "strategy",
    "early_stop",
    "patience",
    "min_delta",
    "min_steps",
    "threads",
)


class Diverged(UserError):
    """The objective became NaN or infinite: the fit cannot go on (lr too high, no clipping)."""


@dataclass
class FitResult:
    plane: Plane
    steps: int  # steps done in total, resumed ones included
    seconds: float  # training wall time in total, resumed runs included
    last: Optional[StepStats]
    history: list[list[float]] = field(default_factory=list)  # rows in HISTORY_COLUMNS order
    converged: bool = False  # the stop rule ended the fit (not the step limit)
    heldout_seconds: float = 0.0  # of this run's fit time, spent on held-out checks
    resumed_seconds: float = 0.0  # of `seconds`, the runs before this one (from the checkpoint)

    @property
    def run_seconds(self) -> float:
        """Training wall time of this run alone."""
        return self.seconds - self.resumed_seconds


def check_fit_options(opts: FitOptions) -> None:
    """Raises a UserError naming the key for a value the fit cannot use."""
    for key in ("steps", "cells_per_step", "batch_size"):
        value = getattr(opts, key)
        if value <= 0:
            raise UserError(f"{key}={value} must be a positive integer")
    if not opts.lr > 0:
        raise UserError(f"lr={opts.lr} must be positive")
    if not opts.ce_threshold > 0:
        raise UserError(f"ce_threshold={opts.ce_threshold} must be positive (nats)")
    if opts.grad_clip is not None and not opts.grad_clip > 0:
        raise UserError(f"grad_clip={opts.grad_clip} must be positive, or null for no clipping")
    for key in ("eval_every", "val_samples", "heldout_samples", "heldout_cells", "patience"):
        value = getattr(opts, key)
        if value <= 0:
            raise UserError(f"{key}={value} must be a positive integer")
    if not opts.min_delta >= 0:
        raise UserError(f"min_delta={opts.min_delta} must be 0 or more (points of accuracy)")
    if opts.min_steps < 0:
        raise UserError(f"min_steps={opts.min_steps} must be 0 or more")
    if opts.threads is not None and opts.threads < 1:
        raise UserError(f"threads={opts.threads} must be at least 1, or null for the default")
    if opts.checkpoint_every < 0:
        raise UserError(f"checkpoint_every={opts.checkpoint_every} must be 0 (end only) or more")
    check_choice("strategy", opts.strategy, STEP_STRATEGIES)
    if not opts.memory_mb > 0:
        raise UserError(f"memory_mb={opts.memory_mb} must be positive (MiB)")


def chunk_cells_for(model: nn.Module, sample: Tensor, opts: FitOptions) -> int:
    """Cells per vmapped forward/backward under memory_mb; a UserError when one does not fit."""
    chunk = cells_per_chunk(model, sample, opts.batch_size, opts.memory_mb)
    if chunk < 1:
        need = cell_bytes(model, sample, opts.batch_size) / 2**20
        raise UserError(
            f"memory_mb={opts.memory_mb:g} is too small: one cell at batch_size="
            f"{opts.batch_size} needs about {need:.0f} MiB; raise memory_mb or lower batch_size"
        )
    return chunk


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one step: a function of (seed, step) only, so resume is exact."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def sample_cells(cells: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """min(k, len(cells)) distinct rows of `cells` (N, 2) (row, col), drawn by `generator`."""
    order = torch.randperm(cells.shape[0], generator=generator)[: min(k, cells.shape[0])]
    return cells[order]


def fit_plane(
    plane: Plane,
    model: nn.Module,
    mask: np.ndarray,
    train: Split,
    opts: FitOptions,
    out_dir: Optional[Path] = None,
    fingerprint: Optional[dict[str, Any]] = None,
    overwrite: bool = False,
    progress: bool = True,
    heldout: Optional[Split] = None,
    precision: str = "fp32",
) -> FitResult:
    """Trains `plane` on `mask` (H, W; True = low-loss) with eq. (3); resumes and writes
    `out_dir/checkpoint.pt` (and history.csv) when out_dir is given. With `heldout` (a split:
    the validation split, never the test split), checks the plane every eval_every steps and
    stops by the stop rule; `train` must then exclude its samples (convergence.validation_split).
    The data are tensors on the plane's device. `precision` (engine.precision: fp32, tf32,
    bf16; engine/precision.py): the arithmetic of the objective's forwards and backwards and of
    the held-out checks; Adam's step stays float32."""
    check_fit_options(opts)
    device = train.inputs.device
    chunk = chunk_cells_for(model, train.inputs[0], opts)
    template = training_template(model).to(device)
    trained = trainable_cells(mask, opts.skip_interior_cells)
    low = torch.from_numpy(np.argwhere(mask & trained))  # (N_low, 2) pattern (row, col)
    high = torch.from_numpy(np.argwhere(~mask & trained))
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    check = None
    if heldout is not None:
        check = HeldOut.build(
            mask, trained, heldout, opts.heldout_samples, opts.heldout_cells, opts.seed
        )
    rule = stop_rule(opts)

    optimizer = torch.optim.Adam(plane.parameters(), lr=opts.lr)
    start_step, seconds, history = 0, 0.0, []
    path = None if out_dir is None else Path(out_dir) / CHECKPOINT_NAME
    losses: list[float] = []  # objectives since the last held-out check
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if path is not None and path.exists() and not overwrite:
        plane, optimizer, start_step, seconds, history, losses = _resume(
            path, fingerprint, opts, device
        )
    converged = rule.converged(history)
    if converged or start_step >= opts.steps:
        why = "converged" if converged else f"steps={opts.steps}"
        log.info("plane already trained for %d steps (%s): nothing to do", start_step, why)
        return FitResult(plane, start_step, seconds, None, history, converged, 0.0, seconds)
    if start_step:
        log.info("resuming the fit from %s at step %d", path, start_step)
    resumed_seconds = seconds

    n = train.labels.shape[0]
    bar = tqdm(range(start_step, opts.steps), desc="mpo", unit="step", disable=not progress)
    running_loss, running_gap, stats = None, None, None
    heldout_seconds = 0.0
    t0 = time.perf_counter()

    def record(step: int) -> None:
        """One held-out check: a history row, history.csv, the progress bar."""
        nonlocal heldout_seconds
        t = time.perf_counter()
        with at_precision(precision, device):
            values = check.evaluate(plane, template, chunk)  # type: ignore[union-attr]
        heldout_seconds += time.perf_counter() - t
        loss = float(np.mean(losses)) if losses else math.nan
        scale = float(plane.scale.detach())
        history.append(history_row(step, values, loss, scale, seconds + t - t0))
        if step % opts.eval_every == 0:  # a last row off the beat leaves the average running,
            losses.clear()  # so a resumed fit's rows equal an uninterrupted one's
        if out_dir is not None:
            write_history_csv(history, Path(out_dir) / HISTORY_CSV)

    if check is not None and not history:
        record(0)
    done = start_step
    for step in bar:
        g = step_generator(opts.seed, step)
        batch = torch.randperm(n, generator=g)[: min(opts.batch_size, n)].to(device)
        low_coords = cell_alpha_beta(shape, *sample_cells(low, opts.cells_per_step, g).T)
        high_coords = cell_alpha_beta(shape, *sample_cells(high, opts.cells_per_step, g).T)
        optimizer.zero_grad(set_to_none=True)
        cells = (low_coords.to(device), high_coords.to(device))
        x, y = train.inputs[batch], train.labels[batch]
        with at_precision(precision, device):
            if opts.strategy == "loop":
                stats = objective_loop(plane, template, *cells, x, y, opts.ce_threshold)
            else:
                stats = objective_batched(plane, template, *cells, x, y, opts.ce_threshold, chunk)
        if not math.isfinite(stats.loss):
            bar.close()
            raise Diverged(
                f"the fit diverged at step {step + 1}: objective {stats.loss}; lower lr "
                f"(now {opts.lr:g}) or set grad_clip"
            )
        if opts.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(plane.parameters(), opts.grad_clip)
        optimizer.step()
        losses.append(stats.loss)
        gap = stats.acc_low - stats.acc_high
        running_loss = stats.loss if running_loss is None else _ema(running_loss, stats.loss)
        running_gap = gap if running_gap is None else _ema(running_gap, gap)
        done = step + 1
        if check is not None and (done % opts.eval_every == 0 or done == opts.steps):
            record(done)
            converged = rule.converged(history)
        postfix = {"loss": f"{running_loss:.3f}", "gap": f"{running_gap:.1f}"}
        if history:
            postfix["held-out gap"] = f"{history[-1][1]:.1f}"
        bar.set_postfix(**postfix, s=f"{float(plane.scale.detach()):.3f}")
        if path is not None and opts.checkpoint_every and done % opts.checkpoint_every == 0:
            elapsed = seconds + time.perf_counter() - t0
            _save(path, plane, optimizer, done, elapsed, fingerprint, history, losses)
        if converged:
            log.info("converged at step %d: held-out gap %.1f points", done, history[-1][1])
            break
    bar.close()
    seconds += time.perf_counter() - t0
    if path is not None:
        _save(path, plane, optimizer, done, seconds, fingerprint, history, losses)
    return FitResult(
        plane, done, seconds, stats, history, converged, heldout_seconds, resumed_seconds
    )


def _ema(old: float, new: float) -> float:
    return (1 - _EMA) * old + _EMA * new


def _save(
    path: Path,
    plane: Plane,
    optimizer: torch.optim.Optimizer,
    step: int,
    seconds: float,
    fingerprint: Optional[dict[str, Any]],
    history: list[list[float]],
    losses: list[float],
) -> None:
    """Writes the checkpoint atomically: a killed run leaves the previous one intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "plane": plane.raw_state(),
            "optimizer": optimizer.state_dict(),
            "step": int(step),
            "seconds": float(seconds),
            "fingerprint": json.dumps(fingerprint or {}, sort_keys=True),
            "history": torch.tensor(history, dtype=torch.float64).reshape(-1, len(HISTORY_COLUMNS)),
            # objectives since the last history row, so a resumed row averages the same steps
            "pending_losses": torch.tensor(losses, dtype=torch.float64),
        },
        tmp,
    )
    os.replace(tmp, path)


def _resume(
    path: Path, fingerprint: Optional[dict[str, Any]], opts: FitOptions, device: torch.device
) -> tuple[Plane, torch.optim.Optimizer, int, float, list[list[float]], list[float]]:
    require_regular(path, "checkpoint")  # a FIFO would block torch.load forever
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which and how to get past it
        raise UserError(
            f"cannot read the checkpoint {path} ({err}); delete it or set overwrite=true"
        ) from None
    try:
        return _resume_from(ck, path, fingerprint, opts, device)
    except UserError:  # already says what is wrong (a ValueError too)
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise UserError(
            f"{path} is not a checkpoint of an MPO fit ({type(err).__name__}: {err}); use "
            "another out_dir, or overwrite=true to start again"
        ) from None


def _resume_from(
    ck: Any,
    path: Path,
    fingerprint: Optional[dict[str, Any]],
    opts: FitOptions,
    device: torch.device,
) -> tuple[Plane, torch.optim.Optimizer, int, float, list[list[float]], list[float]]:
    stored = json.loads(ck["fingerprint"])
    wanted = json.loads(json.dumps(fingerprint or {}, sort_keys=True))
    if stored != wanted:
        diff = fingerprint_diff(stored, wanted, holder="checkpoint")
        if "val_samples" in wanted and "val_samples" not in stored:
            raise UserError(
                f"{path} was made before the validation split (its held-out checks read the "
                "test split, its batches every training sample), so it cannot resume exactly; "
                "use another out_dir or overwrite=true to start again"
            )
        raise UserError(
            f"{path} was made by another MPO job ({'; '.join(diff)}); use another out_dir or "
            "overwrite=true to start again"
        )
    plane = Plane.from_raw_state(ck["plane"], device)
    optimizer = torch.optim.Adam(plane.parameters(), lr=opts.lr)
    optimizer.load_state_dict(ck["optimizer"])
    history = ck["history"].tolist() if "history" in ck else []
    losses = ck["pending_losses"].tolist() if "pending_losses" in ck else []
    step = _checked_step(ck, path, history, opts)
    return plane, optimizer, step, float(ck["seconds"]), history, losses


def _checked_step(ck: Any, path: Path, history: list[list[float]], opts: FitOptions) -> int:
    """The checkpoint's step, checked against what else it holds (issue 33: a file is checked
    against what it claims): Adam's own step count (every fit step is one optimizer step) and
    the history (a held-out check every eval_every steps, so the last row lies at most
    eval_every - 1 steps behind). A UserError when they disagree: a checkpoint claiming 10^12
    steps would otherwise end the fit with "nothing to do"."""
    raw = ck["step"]
    fix = "the file was edited or damaged; delete it or pass overwrite=true to start again"
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise UserError(f"{path}: its step {raw!r} is not a whole number >= 0; {fix}")
    step = int(raw)
    counts = [
        float(state["step"])
        for state in ck["optimizer"].get("state", {}).values()
        if isinstance(state, dict) and "step" in state
    ]
    # Adam counts in float32 (exact to 2**24): allow its rounding beyond that
    off = [c for c in counts if abs(c - step) > max(0.5, step * 2.0**-23)]
    if off or (step > 0 and not counts):
        adam = f"{off[0]:.0f}" if off else "no"
        raise UserError(
            f"{path}: its step {step} is not its optimizer's step count ({adam} Adam steps); {fix}"
        )
    if history:
        last = int(history[-1][0])
        if not last <= step < last + opts.eval_every:
            raise UserError(
                f"{path}: its step {step} does not match its history (last held-out check at "
                f"step {last} of {len(history)} rows, one every eval_every={opts.eval_every}); "
                f"{fix}"
            )
    return step
