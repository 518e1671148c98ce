"""Training in random d-dimensional hyperplanes, the `subspace` experiment: the intrinsic dimension
of a task (Li, Farkhoor, Liu & Yosinski 2018, "Measuring the intrinsic dimension of objective
landscapes"; Fort & Jastrzebski 2019, sec. 3, on the n-wedge toy landscape).

θ(c) = θ0 + P·c with P (P_params × d) random and fixed, c ∈ R^d trained from 0 by Adam. The
smallest d at which training succeeds is the intrinsic dimension; on the n-wedge model in D
dimensions success flips at d = D − n, where a random d-plane starts to meet an n-wedge.

    python -m landscape_hpc.geometry subspace                       # mlp on digits, d = 1..200
    python -m landscape_hpc.geometry subspace dims=[10,100,1000] sparse=true steps=1000
    python -m landscape_hpc.geometry subspace model=mpo_cnn model.checkpoint=ck.pt
    python -m landscape_hpc.geometry subspace model=wedge model.kwargs.dim=40 model.kwargs.n=30 \\
        dims=[2,4,6,8,9,10,11,12,15,20] lr=0.05
    mpirun -n 3 python -m landscape_hpc.geometry subspace           # one task per d over 2 workers

Training is full-batch (the whole training split, or dataset.max_samples of it) in eval mode:
BN layers use the model's stored running statistics. Writes results.csv (d, final loss,
train/test accuracy, success, seconds, rank) and accuracy_vs_d.png to the output folder, and
prints a summary.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from landscape_hpc import parallel, params
from landscape_hpc.config import IntrinsicDimConfig
from landscape_hpc.data import Split
from landscape_hpc.devices import rank_device
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.evaluate import LOSSES, is_loss_output
from landscape_hpc.flat import LossFn, flat_loss
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.problem import Problem, load_problem

log = logging.getLogger(__name__)

#: nonzeros of each row of a sparse projection (one row per parameter; fewer when d is smaller)
SPARSE_NONZEROS_PER_ROW = 4
_JOB_KEY = "subspace_job"
CSV_FIELDS = ("d", "final_loss", "train_acc", "test_acc", "success", "seconds", "rank")


# ---------------------------------------------------------------------------------------------
# the maths: projections and training of c


class DenseProjection:
    """P (P_params × d) with i.i.d. Gaussian columns scaled to unit norm, stored as (d, P_params).

    Drawn row by row of the stored (d, P) matrix, so the first d columns are the same for every
    larger d with the same seed: the hyperplanes of one seed are nested.
    """

    def __init__(self, num_params: int, d: int, generator: torch.Generator, like: Tensor):
        basis = torch.randn(d, num_params, generator=generator, dtype=torch.float64)  # (d, P)
        basis /= basis.norm(dim=1, keepdim=True)
        self.basis = basis.to(device=like.device, dtype=like.dtype)

    def __call__(self, c: Tensor) -> Tensor:
        return c @ self.basis  # (P,)


class SparseProjection:
    """A sparse P (Li et al. 2018, sec. 2: sparse random projections instead of a dense P):
    every parameter's row holds ±1 in min(SPARSE_NONZEROS_PER_ROW, d) distinct random columns,
    and the columns are scaled to unit norm.

    Only the nonzeros are stored, (rows, cols, values) of length P_params · nonzeros; P·c is
    one gather and one scatter-add, never a dense P_params × d matrix.
    """

    def __init__(self, num_params: int, d: int, generator: torch.Generator, like: Tensor):
        per_row = min(SPARSE_NONZEROS_PER_ROW, d)
        cols = _distinct_columns(num_params, d, per_row, generator).reshape(-1)  # (P·k,)
        rows = torch.arange(num_params).repeat_interleave(per_row)
        signs = torch.randint(0, 2, (num_params * per_row,), generator=generator) * 2 - 1
        values = signs.to(torch.float64)
        col_norm = torch.zeros(d, dtype=torch.float64).index_add_(0, cols, values**2).sqrt()
        # a column no parameter drew would be zero: P would have rank < d (rare for small P)
        values = values / col_norm.clamp_min(1e-12)[cols]
        self.num_params = num_params
        self.rows = rows.to(like.device)
        self.cols = cols.to(like.device)
        self.values = values.to(device=like.device, dtype=like.dtype)

    def __call__(self, c: Tensor) -> Tensor:
        out = c.new_zeros(self.num_params)
        return out.index_add(0, self.rows, self.values * c[self.cols])  # (P,)


def _distinct_columns(rows: int, d: int, k: int, generator: torch.Generator) -> Tensor:
    """(rows, k) column indices, each row a uniform random k-subset of range(d): Floyd's
    algorithm, vectorised over rows (k steps, no (rows, d) matrix)."""
    chosen = torch.empty(rows, k, dtype=torch.long)
    for i, j in enumerate(range(d - k, d)):
        t = (torch.rand(rows, generator=generator, dtype=torch.float64) * (j + 1)).long()
        taken = (chosen[:, :i] == t[:, None]).any(dim=1)
        chosen[:, i] = torch.where(taken, torch.full_like(t, j), t)
    return chosen


@dataclass
class SubspaceResult:
    """The outcome of training c in one random d-dimensional hyperplane."""

    d: int
    final_loss: float  # loss at the final θ
    c: Tensor  # (d,) coordinates of the final point
    theta: Tensor  # (P,) the final weights θ0 + P·c
    losses: list[float] = field(default_factory=list)  # loss before each Adam step
    seconds: float = 0.0


def train_in_subspace(
    loss_fn: Callable[[Tensor], Tensor],
    theta0: Tensor,
    d: int,
    *,
    sparse: bool = False,
    steps: int = 500,
    lr: float = 1e-2,
    seed: int = 0,
) -> SubspaceResult:
    """Minimises loss_fn(θ0 + P·c) over c ∈ R^d, from c = 0, by `steps` Adam steps.

    loss_fn maps a flat θ (P,) to a scalar (a flat.LossFn). P is a random projection with
    unit-norm columns drawn from `seed` (dense Gaussian, or sparse with a few nonzeros per row).
    The learning rate follows a cosine decay from `lr` to 0, so the last iterate settles instead
    of circling the minimum at the step size (the wedge loss is a norm: its gradient never
    shrinks). Raises UserError when d is not in [1, P].
    """
    num_params = theta0.numel()
    if not 1 <= d <= num_params:
        raise UserError(
            f"subspace dimension d={d} must lie in [1, {num_params}], the number of trained "
            "parameters; drop it from dims"
        )
    if steps < 0:
        raise UserError(f"steps={steps} must be zero or positive")
    start = time.perf_counter()
    theta0 = theta0.detach().reshape(-1)
    generator = torch.Generator().manual_seed(seed)
    projection = (SparseProjection if sparse else DenseProjection)(num_params, d, generator, theta0)
    c = torch.zeros(d, dtype=theta0.dtype, device=theta0.device, requires_grad=True)
    optimizer = torch.optim.Adam([c], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
    )
    losses: list[float] = []
    for _ in range(steps):
        loss = loss_fn(theta0 + projection(c))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        theta = theta0 + projection(c)
        final = float(loss_fn(theta))
    return SubspaceResult(d, final, c.detach(), theta.detach(), losses, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# the command


@dataclass
class IntrinsicDimJob:
    """What every rank needs to train one d: the problem (the model template and the data), θ0
    (the model's state: its checkpoint or init), the settings."""

    problem: Problem
    state: dict[str, Tensor]
    cfg: IntrinsicDimConfig
    keys: list[str] = field(init=False)  # the trained tensors: the entries of a flat θ

    def __post_init__(self) -> None:
        self.keys = self.problem.param_keys

    def loss_fn(self) -> LossFn:
        train = self.problem.splits["train"]
        loss, _ = flat_loss(
            self.problem.model,
            self.state,
            self.keys,
            train.inputs,
            train.labels,
            self.cfg.batch_size,
            self.cfg.loss,
        )
        return loss

    def theta0(self) -> Tensor:
        return params.flatten(self.state, self.keys).detach()

    def accuracy(self, theta: Tensor, split: Split) -> float:
        """Accuracy (%) of the net at θ on a split; NaN for a loss-output model."""
        if is_loss_output(self.problem.model):
            return float("nan")
        weights = {**self.state, **params.unflatten(theta, self.state, self.keys)}
        correct, n, size = 0, len(split.labels), self.cfg.batch_size
        with torch.no_grad():
            for i in range(0, n, size):
                logits = functional_call(self.problem.model, weights, (split.inputs[i : i + size],))
                correct += int((logits.argmax(-1) == split.labels[i : i + size]).sum())
        return 100.0 * correct / n

    def run(self, d: int) -> dict[str, Any]:
        cfg = self.cfg
        result = train_in_subspace(
            self.loss_fn(),
            self.theta0(),
            d,
            sparse=cfg.sparse,
            steps=cfg.steps,
            lr=cfg.lr,
            seed=cfg.seed,
        )
        row = {
            "d": d,
            "final_loss": result.final_loss,
            "train_acc": self.accuracy(result.theta, self.problem.splits["train"]),
            "test_acc": self.accuracy(result.theta, self.problem.splits["test"]),
            "success": "",
            "seconds": round(result.seconds, 3),
        }
        if is_loss_output(self.problem.model):
            row["success"] = int(result.final_loss < cfg.threshold)
        return row


def _train_task(d: int) -> dict[str, Any]:
    job: IntrinsicDimJob = parallel.worker_state(_JOB_KEY)
    return job.run(d)


def check_config(cfg: IntrinsicDimConfig) -> None:
    check_choice("loss", cfg.loss, LOSSES)
    if not cfg.dims:
        raise UserError("dims is empty; give the hyperplane dimensions, e.g. dims=[1,10,100]")
    if any(not isinstance(d, int) or d < 1 for d in cfg.dims):
        raise UserError(f"dims={list(cfg.dims)}: every d must be a positive integer")
    if cfg.steps < 1:
        raise UserError(f"steps={cfg.steps} must be at least 1")
    if not cfg.lr > 0:
        raise UserError(f"lr={cfg.lr} must be positive")
    if cfg.batch_size < 1:
        raise UserError(f"batch_size={cfg.batch_size} must be at least 1")


def setup_job(cfg: IntrinsicDimConfig, device: torch.device) -> IntrinsicDimJob:
    """Loads the data, builds the model (θ0 = its checkpoint or init), checks every d ≤ P."""
    problem = load_problem(cfg.model, cfg.dataset, device)
    state = {k: v.detach() for k, v in problem.model.state_dict().items()}
    num_params = sum(state[k].numel() for k in problem.param_keys)
    too_big = [d for d in cfg.dims if d > num_params]
    if too_big:
        raise UserError(
            f"dims {too_big} exceed the {num_params} trained parameters of model="
            f"{cfg.model.name}; a hyperplane cannot have more dimensions than the space"
        )
    return IntrinsicDimJob(problem, state, cfg)


def run_subspace(cfg: IntrinsicDimConfig, comm: Any = None) -> Optional[list[dict[str, Any]]]:
    """Trains every d of cfg.dims (one task each over the MPI pool); on rank 0 returns the rows
    sorted by d, on the other ranks None."""
    comm = parallel.world_if_none(comm)
    rank = comm.Get_rank()
    check_config(cfg)
    job = setup_job(cfg, rank_device(comm, cfg.device))
    rows = []
    describe = lambda d: f"subspace d={d}"  # noqa: E731
    with parallel.worker_pool(_JOB_KEY, job):
        for result in parallel.run_tasks(comm, _train_task, list(cfg.dims), describe):
            rows.append({**result.value, "rank": result.rank})
            log.info(
                "d=%d: final loss %.4g, test acc %s (rank %d, %.1f s)",
                result.task,
                result.value["final_loss"],
                f"{result.value['test_acc']:.2f}%",
                result.rank,
                result.seconds,
            )
    return sorted(rows, key=lambda r: r["d"]) if rank == 0 else None


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def summarize(rows: list[dict[str, Any]], cfg: IntrinsicDimConfig) -> str:
    kind = "sparse" if cfg.sparse else "dense"
    lines = [f"subspace training, {cfg.model.name}, {kind} projections, {cfg.steps} Adam steps:"]
    for r in rows:
        text = f"  d={r['d']:>6}: final loss {r['final_loss']:.4g}"
        if np.isfinite(r["test_acc"]):
            text += f", train acc {r['train_acc']:.2f}%, test acc {r['test_acc']:.2f}%"
        if r["success"] != "":
            text += ", success" if r["success"] else ", no success"
        lines.append(text + f"  ({r['seconds']:.1f} s, rank {r['rank']})")
    wins = [r["d"] for r in rows if r["success"] == 1]
    if any(r["success"] != "" for r in rows):
        first = f"d={min(wins)}" if wins else "none of the dims"
        lines.append(f"  first success (loss < {cfg.threshold:g}): {first}")
        flip = wedge_flip(cfg)
        if flip is not None:
            lines.append(f"  D - n = {flip} (where the paper's toy model flips)")
    return "\n".join(lines)


def wedge_flip(cfg: IntrinsicDimConfig) -> Optional[int]:
    """D − n for model=wedge: the smallest d at which a random d-plane meets an n-wedge."""
    kwargs = cfg.model.kwargs
    if cfg.model.name != "wedge" or "dim" not in kwargs or "n" not in kwargs:
        return None
    return int(kwargs["dim"]) - int(kwargs["n"])


def _command(cfg: IntrinsicDimConfig, comm: Any) -> Optional[Report]:
    rows = run_subspace(cfg, comm)
    if rows is None:
        return None
    out = Path(cfg.out_dir)
    files = [write_csv(rows, out / "results.csv")]
    if cfg.plot:
        loss_model = any(r["success"] != "" for r in rows)
        title = f"{cfg.model.name}: training in random d-dimensional hyperplanes"
        threshold = cfg.threshold if loss_model else None
        from landscape_hpc.geometry import figures

        png = figures.plot_intrinsic_dim(
            rows, out / "accuracy_vs_d.png", title, threshold, wedge_flip(cfg)
        )
        files.append(png)
    return Report(summarize(rows, cfg), files)


main = experiment_main("subspace", _command)
