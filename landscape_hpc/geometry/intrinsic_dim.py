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

Training is full-batch (the whole training split, or dataset.max_samples of it, in chunks of
batch_size). BN nets train in train mode, as Li et al. trained theirs: each chunk is normalised
by its own batch statistics, and the accuracies are measured in eval mode with running
statistics recomputed from the training split at the final θ. With `baseline` (default) every
parameter is also trained directly, with the same Adam steps and schedule: the full model's
accuracy, 90% of which defines d_int90, the smallest d of dims whose test accuracy reaches it
(Li et al. 2018). Writes results.csv (d, final loss, train/test accuracy, success, seconds,
rank, full = 1 for the baseline row) and accuracy_vs_d.png to the output folder, and prints a
summary.
"""

from __future__ import annotations

import csv
import logging
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
from landscape_hpc.engine.batchnorm import has_bn, recompute_bn_state, train_mode_copy
from landscape_hpc.engine.flat import LossFn, flat_loss
from landscape_hpc.engine.losses import LOSSES, is_loss_output
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.projection import train_in_subspace
from landscape_hpc.problem import Problem, load_problem

log = logging.getLogger(__name__)

#: nonzeros of each row of a sparse projection (one row per parameter; fewer when d is smaller)
SPARSE_NONZEROS_PER_ROW = 4
_JOB_KEY = "subspace_job"
#: the task of the baseline run: every parameter trained (its row's d is the parameter count)
FULL = 0
CSV_FIELDS = ("d", "final_loss", "train_acc", "test_acc", "success", "seconds", "rank", "full")
#: d_int90: the smallest d reaching this fraction of the full model's test accuracy
D_INT_FRACTION = 0.9


def d_int(rows: list[dict[str, Any]], fraction: float = D_INT_FRACTION) -> Optional[int]:
    """The smallest subspace d whose test accuracy reaches `fraction` of the full model's (the
    row with full = 1); None without a baseline, a classifier's accuracy, or such a d."""
    base = [r["test_acc"] for r in rows if r.get("full") == 1]
    if not base or not np.isfinite(base[0]):
        return None
    hits = [r["d"] for r in rows if r.get("full") != 1 and r["test_acc"] >= fraction * base[0]]
    return min(hits) if hits else None


# ---------------------------------------------------------------------------------------------
# the maths: projections and training of c


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
        """The full-batch training loss of a flat θ; BN nets in train mode (batch statistics
        of each chunk of batch_size samples, no running statistics)."""
        train = self.problem.splits["train"]
        model, state = self.problem.model, self.state
        if has_bn(model):
            model = train_mode_copy(model, track_running_stats=False)
            state = {k: v for k, v in state.items() if k in model.state_dict()}
        loss, _ = flat_loss(
            model, state, self.keys, train.inputs, train.labels, self.cfg.batch_size, self.cfg.loss
        )
        return loss

    def theta0(self) -> Tensor:
        return params.flatten(self.state, self.keys).detach()

    def accuracy(self, theta: Tensor, split: Split) -> float:
        """Accuracy (%) of the net at θ on a split; NaN for a loss-output model."""
        if is_loss_output(self.problem.model):
            return float("nan")
        weights = {**self.state, **params.unflatten(theta, self.state, self.keys)}
        if has_bn(self.problem.model):  # the statistics of the final θ, not of θ0
            train = self.problem.splits["train"].inputs
            weights = recompute_bn_state(self.problem.model, weights, train, self.cfg.batch_size)
        correct, n, size = 0, len(split.labels), self.cfg.batch_size
        with torch.no_grad():
            for i in range(0, n, size):
                logits = functional_call(self.problem.model, weights, (split.inputs[i : i + size],))
                correct += int((logits.argmax(-1) == split.labels[i : i + size]).sum())
        return 100.0 * correct / n

    def run(self, d: int) -> dict[str, Any]:
        """One training run: in a random d-plane, or (d = 0) of every parameter directly."""
        cfg, splits, nan = self.cfg, self.problem.splits, float("nan")
        result = train_in_subspace(
            self.loss_fn(),
            self.theta0(),
            d,
            sparse=cfg.sparse,
            steps=cfg.steps,
            lr=cfg.lr,
            seed=cfg.seed,
            full=d == FULL,
        )
        row = {
            "d": result.d,
            "full": int(d == FULL),
            "final_loss": result.final_loss,
            "train_acc": self.accuracy(result.theta, splits["train"]),
            "test_acc": self.accuracy(result.theta, splits["test"]) if "test" in splits else nan,
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
    return subspace_job(problem, cfg, f"model={cfg.model.name}")


def subspace_job(problem: Problem, cfg: IntrinsicDimConfig, what: str) -> IntrinsicDimJob:
    """The job of `problem` (θ0 = its model's state) after checking every d ≤ P (`what` names
    the model in the message)."""
    state = {k: v.detach() for k, v in problem.model.state_dict().items()}
    num_params = sum(state[k].numel() for k in problem.param_keys)
    too_big = [d for d in cfg.dims if d > num_params]
    if too_big:
        raise UserError(
            f"dims {too_big} exceed the {num_params} trained parameters of {what}; a "
            "hyperplane cannot have more dimensions than the space"
        )
    return IntrinsicDimJob(problem, state, cfg)


def run_subspace(cfg: IntrinsicDimConfig, comm: Any = None) -> Optional[list[dict[str, Any]]]:
    """The command: the problem cfg names, then `train_subspaces`; on rank 0 the rows sorted by
    d, on the other ranks None."""
    comm = parallel.world_if_none(comm)
    check_config(cfg)
    return train_subspaces(setup_job(cfg, rank_device(comm, cfg.device)), comm)


def train_subspaces(job: IntrinsicDimJob, comm: Any = None) -> Optional[list[dict[str, Any]]]:
    """Trains every d of job.cfg.dims (one task each over the MPI pool; the baseline first):
    the core under the command and lh.subspace_training. On rank 0 returns the rows sorted by
    d (the baseline last), on the other ranks None."""
    comm = parallel.world_if_none(comm)
    cfg = job.cfg
    check_config(cfg)
    rows = []
    describe = lambda d: "every parameter (baseline)" if d == FULL else f"subspace d={d}"  # noqa: E731
    tasks = [*([FULL] if cfg.baseline else []), *cfg.dims]  # the longest first
    with parallel.worker_pool(_JOB_KEY, job):
        for result in parallel.run_tasks(comm, _train_task, tasks, describe):
            rows.append({**result.value, "rank": result.rank})
            log.info(
                "d=%d: final loss %.4g, test acc %s (rank %d, %.1f s)",
                result.value["d"],
                result.value["final_loss"],
                f"{result.value['test_acc']:.2f}%",
                result.rank,
                result.seconds,
            )
    return sorted(rows, key=lambda r: (r["full"], r["d"])) if comm.Get_rank() == 0 else None


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
        name = "every parameter" if r["full"] else f"d={r['d']:>6}"
        text = f"  {name}: final loss {r['final_loss']:.4g}"
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
    full = [r for r in rows if r["full"]]
    if full and np.isfinite(full[0]["test_acc"]):
        level = D_INT_FRACTION * full[0]["test_acc"]
        found = d_int(rows)
        what = f"d={found}" if found is not None else "not reached by any d of dims"
        lines.append(f"  d_int90 (test accuracy ≥ {level:.2f}%, 90% of the full model's): {what}")
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
            rows, out / "accuracy_vs_d.png", title, threshold, wedge_flip(cfg), d_int(rows)
        )
        files.append(png)
    return Report(summarize(rows, cfg), files)


main = experiment_main("subspace", _command)
