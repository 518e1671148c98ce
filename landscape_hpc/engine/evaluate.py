"""The evaluation engine: losses and accuracies of K points of a subspace on one data split.

Three strategies compute the same values (per-sample mean loss with sums in float64, accuracy in
percent) in different ways:

- vmap (stacked.py): K points' weights stacked to (K, ...), one batched forward of the K
  networks per data batch, as many points per pass as engine.memory_mb allows;
- sequential (pointwise.py): one point at a time on whole batches, weights loaded into a flat
  buffer a model copy views, channels-last on a CPU;
- threads (pointwise.py): sequential on several threads at once, one intra-op thread each.

`auto` (the default) times them on the first points and keeps the fastest (autotune.py).
`evaluate_points_loop` is the plain per-point reference the engine is tested against; both run
at engine.precision (precision.py: the TF32 flags set explicitly, bf16 by autocast).

The data are any form of the data protocol (data.py: tensors, (inputs, labels) pairs, dicts of
splits, Datasets, DataLoaders streamed batch by batch), the loss any of the loss protocol
(losses.py: ce, mse, lm, a metric callable); a model whose class sets `loss_output = True` (the
n-wedge) returns per-sample losses: the mean of its output is the loss, its accuracy NaN. No
MPI, HDF5 or Hydra.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

import landscape_hpc.engine.autotune as autotune
from landscape_hpc.config import EngineConfig
from landscape_hpc.engine.autotune import Plan
from landscape_hpc.engine.batchnorm import has_bn, recompute_bn_single
from landscape_hpc.engine.data import Inputs, Split, as_split, as_splits
from landscape_hpc.engine.losses import LOSSES, Loss, Sums, resolve_loss, run_model
from landscape_hpc.engine.memory import cpu_batch_size, points_per_pass
from landscape_hpc.engine.metrics import Points, split_sums
from landscape_hpc.engine.pointwise import Pointwise
from landscape_hpc.engine.precision import PRECISIONS, precision
from landscape_hpc.engine.stacked import Batched
from landscape_hpc.engine.subspace import Subspace, tie, tied_aliases
from landscape_hpc.errors import UserError, check_choice

BN_MODES = ("eval", "recompute")
STRATEGIES = ("auto", "vmap", "sequential", "threads")


@dataclass
class Metrics:
    """Per-point mean loss and accuracy (percent), float64 arrays of shape (K,)."""

    loss: np.ndarray
    acc: np.ndarray


def check_engine(cfg: EngineConfig, key: str = "engine") -> None:
    """A UserError naming the key of a value the engine cannot use (key "": the bare names, as
    a library function's keyword arguments)."""
    prefix = f"{key}." if key else ""
    check_choice(f"{prefix}bn", cfg.bn, BN_MODES)
    check_choice(f"{prefix}loss", cfg.loss, (*LOSSES, "auto"))
    check_choice(f"{prefix}strategy", cfg.strategy, STRATEGIES)
    check_choice(f"{prefix}precision", cfg.precision, PRECISIONS)
    for name in ("batch_size", "memory_mb"):
        value = getattr(cfg, name)
        if not value > 0:
            raise UserError(f"{prefix}{name}={value} must be > 0")


def conv_net_on_cpu(model: nn.Module, device: torch.device) -> bool:
    """A net with 2-D convolutions evaluated on a CPU: there one point at a time is the default,
    and its memory layout (channels-last or NCHW) is worth timing."""
    return device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def default_strategy(model: nn.Module, device: torch.device) -> str:
    """What auto runs when there are too few points to time: vmap over points on GPUs and for
    conv-free nets; on CPUs conv nets one point at a time in channels_last, because oneDNN's
    grouped convolutions (what vmap turns a batch of K convolutions into) reach a fraction of
    the dense ones' speed there (docs/benchmarks.md has the figures)."""
    return "sequential" if conv_net_on_cpu(model, device) else "vmap"


def points_at_once(model: nn.Module, subspace: Subspace, sample: Inputs, options: EngineConfig):
    """How many points one pass of the engine evaluates before auto has timed anything (it
    sizes a surface's chunks): the vmap budget, or the threads running points side by side."""
    strategy = options.strategy
    if strategy == "auto":
        strategy = default_strategy(model, _device(subspace))
    if strategy == "vmap":
        return points_per_pass(model, subspace, sample, options.batch_size, options.memory_mb)
    return torch.get_num_threads() if strategy == "threads" else 1


def _device(subspace: Subspace) -> torch.device:
    """Where the points are evaluated: the subspace's device (the data are moved there)."""
    return next(iter(subspace.origin.values())).device


def bn_split(
    model: nn.Module, data: Mapping[str, Split], bn_data: Any, options: EngineConfig
) -> Split | None:
    """The split BN statistics are recomputed from (bn=recompute and the model has BN): bn_data
    in any form of the data protocol, else the "train" split of the data; else None."""
    if not (options.bn == "recompute" and has_bn(model)):
        return None
    if bn_data is not None:
        device = next(iter(data.values())).device
        return as_split(bn_data, device, options.batch_size, "bn_data")
    if "train" in data:
        return data["train"]
    raise UserError(
        "bn=recompute needs the training inputs: pass bn_data=, or include a 'train' split"
    )


#: what `loss=` takes: a name of LOSSES, a metric(outputs, batch) callable or a Loss
LossSpec = Union[str, Callable, Loss, None]


class Evaluator:
    """Loss and accuracy at points of one subspace on fixed data, called chunk after chunk: the
    strategy is chosen (auto: timed) on the first call, and what it builds (model copies,
    vmapped forwards) is kept for the next.

    `model` is a template (its own weights are not used). `data`: {split: data} in any form of
    the data protocol (engine/data.py; the {split: (inputs, labels)} tensors of the commands are
    the resident case), moved to the subspace's device. `bn_data`: the training data BN
    statistics are recomputed from when options.bn == "recompute" (default: the "train" split).
    `loss`: any spec of the loss protocol (engine/losses.py), overriding options.loss. The
    weights of a point are built (and BN statistics recomputed) once for all splits.
    """

    def __init__(
        self,
        model: nn.Module,
        subspace: Subspace,
        data: Any,
        options: EngineConfig | None = None,
        bn_data: Any = None,
        plan: Plan | None = None,
        loss: LossSpec = None,
    ):
        """`plan`: run this plan instead of options.strategy's (to pin the plan auto chose)."""
        self.options = options = options or EngineConfig()
        self.model, self.subspace = model.eval(), tie(subspace, tied_aliases(model))
        subspace = self.subspace
        self.device = _device(subspace)
        self.data = as_splits(data, self.device, options.batch_size)
        # one point at a time on a CPU, a conv net may run channels-last (the default) or NCHW
        self._layouts = conv_net_on_cpu(model, self.device)
        self.bn_data = bn_split(model, self.data, bn_data, options)
        self.loss = resolve_loss(options.loss if loss is None else loss, model)
        self.points = Points(
            self.model, subspace, self.data, self.loss, self.bn_data, options.batch_size
        )
        self.plan = plan
        if plan is None and options.strategy != "auto":
            self.plan = self._plan(options.strategy)
        self.key: str | None = None  # auto: the fingerprint its choice is kept under
        self._runners: dict[Plan, Batched | Pointwise] = {}

    @functools.cached_property
    def _cpu_batch_cap(self) -> int:
        """The largest batch a one-point-at-a-time forward may take on a CPU (memory.py)."""
        sample = next(iter(self.data.values())).sample()
        return cpu_batch_size(self.model, sample, 2**62)

    def _plan(self, strategy: str, batch_size: int | None = None) -> Plan:
        batch = batch_size or self.options.batch_size
        if strategy != "vmap" and self.device.type == "cpu":
            batch = min(batch, self._cpu_batch_cap)
        workers = torch.get_num_threads() if strategy == "threads" else 1
        channels_last = True if self._layouts and strategy != "vmap" else None
        return Plan(strategy, batch, workers, channels_last)

    def _build(self, plan: Plan, points: Points) -> Batched | Pointwise:
        if plan.strategy == "vmap":
            return Batched(points, plan.batch_size, self.options.memory_mb)
        fold, channels_last = self.options.fold_bn, bool(plan.channels_last)
        memory = self.options.memory_mb
        return Pointwise(points, plan.batch_size, plan.workers, fold, channels_last, memory)

    def _runner(self, plan: Plan) -> Batched | Pointwise:
        """The runner of `plan` on all the data, built once."""
        if plan not in self._runners:
            self._runners[plan] = self._build(plan, self.points)
        return self._runners[plan]

    def _candidates(self) -> list[Plan]:
        plans = [self._plan("vmap"), self._plan("sequential")]
        if self.device.type == "cpu" and torch.get_num_threads() > 1:
            plans.append(self._plan("threads"))
        return plans

    def _choose(self, coords: Tensor) -> Plan:
        """auto: the default rule for a first call of a few points, else timed (autotune)."""
        if coords.shape[0] < autotune.MIN_POINTS:
            return self._plan(default_strategy(self.model, self.device))
        self.key = key = autotune.fingerprint(
            repr(self.model),
            [(k, tuple(v.shape), v.dtype) for k, v in self.subspace.origin.items()],
            sorted({k for d in self.subspace.basis for k in d}),
            self.device,
            [(name, split.signature()) for name, split in self.data.items()],
            self.options,
            self.loss.name,
            self.bn_data is not None,
        )

        # a streamed split comes in its loader's batches: no other batch size to time for it
        resident = [split.n for split in self.data.values() if not split.streamed]
        larger = self.device.type == "cpu"
        sizes = (
            autotune.batch_sizes(self.options.batch_size, max(resident), larger) if resident else []
        )

        # every candidate on the same points and samples: a few batches of the largest size (a
        # streamed split: its first few batches, read once and kept, so timing reads little)
        count, size = autotune.PROBE_BATCHES, max([self.options.batch_size, *sizes])
        data = {name: split.head(count, size) for name, split in self.data.items()}
        bn = self.bn_data
        if bn is not None and bn.streamed:
            bn = bn.head(count, size)
        probe_points = replace(self.points, data=data, bn_data=bn)

        def seconds_per_point(plan: Plan) -> float:
            run = self._build(plan, probe_points)
            per_pass = run.per_pass if isinstance(run, Batched) else 2 * plan.workers
            probe = coords[: autotune.probe_points(coords.shape[0], per_pass)]
            return autotune.best_time(lambda: run(probe)) / probe.shape[0]

        def other_batches(plan: Plan) -> list[Plan]:  # capped as _plan caps them
            return [
                replace(plan, batch_size=self._plan(plan.strategy, b).batch_size) for b in sizes
            ]

        def other_layout(plan: Plan) -> list[Plan]:
            flip = plan.channels_last is not None
            return [replace(plan, channels_last=not plan.channels_last)] if flip else []

        return autotune.choose(
            key, self._candidates(), seconds_per_point, [other_batches, other_layout]
        )

    def __call__(self, coords: Tensor) -> dict[str, Metrics]:
        """Loss and accuracy at each row of coords (K, d) on every split."""
        return metrics_of(self.sums(coords))

    def sums(self, coords: Tensor) -> dict[str, Sums]:
        """The float64 sums at each row of coords (K, d) on every split, rows (K,), before any
        mean: what ranks holding disjoint shards of the data add up (api/run.py)."""
        coords = coords.to(device=self.device, dtype=torch.float64)
        with precision(self.options.precision, self.device):  # auto times at it too
            plan = self.plan or self._choose(coords)
            if coords.shape[0] >= autotune.MIN_POINTS:  # timed (or pinned): kept; else again
                self.plan = plan
            return self._runner(plan)(coords)


def metrics_of(sums: Mapping[str, Sums]) -> dict[str, Metrics]:
    """{split: Metrics} of {split: Sums}: the means, as float64 arrays (K,)."""
    out = {}
    for name, total in sums.items():
        loss, acc = total.means()
        out[name] = Metrics(loss.cpu().numpy(), acc.cpu().numpy())
    return out


def evaluate_points(
    model: nn.Module,
    subspace: Subspace,
    coords: Tensor,
    data: Any,
    options: EngineConfig | None = None,
    bn_data: Any = None,
    loss: LossSpec = None,
) -> dict[str, Metrics]:
    """Loss and accuracy at each row of coords (K, d) on every split of `data`: one call of an
    Evaluator (for many chunks of one subspace, keep an Evaluator)."""
    return Evaluator(model, subspace, data, options, bn_data, loss=loss)(coords)


def evaluate_points_loop(
    model: nn.Module,
    subspace: Subspace,
    coords: Tensor,
    data: Any,
    options: EngineConfig | None = None,
    bn_data: Any = None,
    loss: LossSpec = None,
) -> dict[str, Metrics]:
    """The plain reference: for each point, its weights loaded into a copy of the model, then
    for each split, for each batch (a streamed split is read once per point)."""
    options = options or EngineConfig()
    # no grad on the copy's weights: autocast (engine.precision=bf16) keeps its bfloat16 copies
    # of weights that require grad for the whole block, so each point would run the first's
    net = copy.deepcopy(model).eval().requires_grad_(False)
    subspace = tie(subspace, tied_aliases(model))
    device = _device(subspace)
    splits = as_splits(data, device, options.batch_size)
    bn = bn_split(model, splits, bn_data, options)
    loss_fn = resolve_loss(options.loss if loss is None else loss, model)
    coords = coords.to(dtype=torch.float64)
    out = {name: Metrics(np.zeros(coords.shape[0]), np.zeros(coords.shape[0])) for name in splits}
    with torch.no_grad(), precision(options.precision, device):
        for i, c in enumerate(coords):
            net.load_state_dict(subspace.point(c.to(device)))
            if bn is not None:
                recompute_bn_single(net, bn, options.batch_size)
            for name, split in splits.items():
                forward = lambda x: run_model(net, x).unsqueeze(0)  # noqa: E731
                loss_mean, acc = split_sums(forward, split, options.batch_size, loss_fn).means()
                out[name].loss[i] = float(loss_mean[0])
                out[name].acc[i] = float(acc[0])
    return out
