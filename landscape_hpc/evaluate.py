"""The evaluation engine: losses and accuracies of K points of a subspace on one data split.

The K points are evaluated together: their weights are stacked to (K, ...) and one
`torch.func.vmap` of `torch.func.functional_call` runs the K networks on each data batch, with
the data resident on the device. A small model then costs one batched kernel per layer instead
of K Python-driven forwards. Points are processed in chunks that fit a memory budget.

`evaluate_points_loop` is the plain per-point reference the engine is tested against. Both
compute the exact per-sample mean loss (sums in float64) and the accuracy in percent. A model
whose class sets `loss_output = True` (the n-wedge, models/nwedge.py) returns per-sample losses
instead of logits: the mean of its output is the loss, its accuracy NaN. No MPI, HDF5 or Hydra.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from landscape_hpc.config import EngineConfig
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.params import ParamDict
from landscape_hpc.subspace import Subspace

LOSSES = ("ce", "mse")
BN_MODES = ("eval", "recompute")
STRATEGIES = ("auto", "vmap", "sequential")

_FLOAT_BYTES = 4
#: the largest activation a CPU forward may allocate: glibc's largest mmap threshold (32 MiB)
#: halved, so the tuned allocator (cli.tune_allocator) keeps it in the heap with room to spare
CPU_ACTIVATION_BYTES = 16 * 2**20


@dataclass
class Metrics:
    """Per-point mean loss and accuracy (percent), float64 arrays of shape (K,)."""

    loss: np.ndarray
    acc: np.ndarray


def check_engine(cfg: EngineConfig, key: str = "engine") -> None:
    """A UserError naming the key of a value the engine cannot use."""
    check_choice(f"{key}.bn", cfg.bn, BN_MODES)
    check_choice(f"{key}.loss", cfg.loss, LOSSES)
    check_choice(f"{key}.strategy", cfg.strategy, STRATEGIES)
    for name in ("batch_size", "memory_mb"):
        value = getattr(cfg, name)
        if not value > 0:
            raise UserError(f"{key}.{name}={value} must be > 0")


def per_sample_loss(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    """Loss of every sample: logits (..., B, C), labels (B,) -> (..., B)."""
    labels = labels.expand(logits.shape[:-1])  # (..., B)
    if loss == "ce":
        logp = torch.log_softmax(logits, dim=-1)
        return -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if loss == "mse":
        # loss-landscape's MSE: softmax probabilities against one-hot targets, mean over classes
        target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        return (torch.softmax(logits, dim=-1) - target).pow(2).mean(-1)
    raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")


def is_loss_output(model: nn.Module) -> bool:
    """True when the model's forward returns per-sample losses (B,), not logits (B, C)."""
    return bool(getattr(model, "loss_output", False))


def batch_loss_and_correct(
    outputs: Tensor, labels: Tensor, loss: str, loss_output: bool
) -> tuple[Tensor, Tensor]:
    """Summed loss (float64) and correct count over the batch axis: outputs (..., B, C) logits,
    or (..., B) per-sample losses when `loss_output` (then the count is NaN) -> (...), (...)."""
    summed = sample_losses(outputs, labels, loss, loss_output).double().sum(-1)
    if loss_output:
        nan = torch.full(summed.shape, float("nan"), dtype=torch.float64, device=outputs.device)
        return summed, nan
    return summed, (outputs.argmax(-1) == labels).sum(-1).double()


def sample_losses(outputs: Tensor, labels: Tensor, loss: str, loss_output: bool) -> Tensor:
    """The loss of every sample (..., B): a loss-output model's outputs themselves, else `loss`
    of the logits (..., B, C)."""
    return outputs if loss_output else per_sample_loss(outputs, labels, loss)


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def _activation_sizes(model: nn.Module, sample: Tensor) -> list[int]:
    """Bytes of each module output for one sample."""
    sizes: list[int] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            sizes.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(sample.unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
    return sizes


def activation_bytes_per_sample(model: nn.Module, sample: Tensor) -> int:
    """Bytes of every module output for one sample: a bound on the activations a forward holds."""
    return sum(_activation_sizes(model, sample))


def cpu_batch_size(model: nn.Module, sample: Tensor, batch_size: int) -> int:
    """The batch of a one-point-at-a-time forward on a CPU: at most `batch_size`, and small enough
    that the largest activation stays within CPU_ACTIVATION_BYTES. A larger block is mmap'ed
    and page-faulted in afresh by every forward, and spills the last-level cache: mpo_cnn on
    28×28 inputs runs 2× faster at batch 64 than at 256 (docs/benchmarks.md)."""
    largest = max(_activation_sizes(model, sample), default=0)
    return max(1, min(batch_size, CPU_ACTIVATION_BYTES // max(largest, 1)))


def points_per_pass(
    model: nn.Module, subspace: Subspace, sample: Tensor, batch_size: int, memory_mb: float
) -> int:
    """How many points fit the memory budget: stacked moving weights + activations of a batch."""
    moving = {k for d in subspace.basis for k in d}
    weight_bytes = sum(subspace.origin[k].numel() for k in moving) * _FLOAT_BYTES
    device = next(iter(subspace.origin.values())).device
    act_bytes = activation_bytes_per_sample(model, sample.to(device))
    # x2: the forward keeps a layer's input and output alive at once, plus the loss temporaries
    per_point = weight_bytes + 2 * act_bytes * batch_size
    return max(1, int(memory_mb * 2**20 // max(per_point, 1)))


class _Stacked:
    """functional_call of a template model on (moving (K, ...), fixed) weights, vmapped over K."""

    def __init__(self, model: nn.Module):
        self.model = model

        def forward(moving: ParamDict, fixed: ParamDict, x: Tensor) -> Tensor:
            return functional_call(self.model, (moving, fixed), (x,))

        self.forward = vmap(forward, in_dims=(0, None, None))

    def __call__(self, moving: ParamDict, fixed: ParamDict, x: Tensor) -> Tensor:
        return self.forward(moving, fixed, x)  # (K, B, C)


def _fresh_bn_state(model: nn.Module, moving: ParamDict, fixed: ParamDict, k: int):
    """Replaces the BN running statistics by fresh (K, C) ones and zero batch counters."""
    moving, fixed = dict(moving), dict(fixed)
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            for key, value in (("running_mean", 0.0), ("running_var", 1.0)):
                full = f"{name}.{key}"
                fixed.pop(full, None)
                ref = getattr(m, key)
                moving[full] = torch.full(
                    (k, *ref.shape), value, dtype=ref.dtype, device=ref.device
                )
            fixed[f"{name}.num_batches_tracked"] = torch.zeros(
                (), dtype=torch.long, device=m.running_mean.device
            )
    return moving, fixed


def train_mode_copy(model: nn.Module, **bn_settings: object) -> nn.Module:
    """A copy in train mode (BN normalises with the statistics of each batch) with dropout off,
    its BN layers given `bn_settings` (attribute values, e.g. momentum=None)."""
    template = copy.deepcopy(model).train()
    for m in template.modules():
        if isinstance(m, _BatchNorm):
            for name, value in bn_settings.items():
                setattr(m, name, value)
        elif isinstance(m, nn.Dropout):
            m.eval()
    return template


def _bn_recompute_template(model: nn.Module) -> nn.Module:
    """A copy in train mode whose BN layers average the statistics of every batch equally
    (momentum=None), as torch.optim.swa_utils.update_bn and dnn-mode-connectivity do."""
    return train_mode_copy(model, momentum=None)


def recompute_bn_batched(
    model: nn.Module, moving: ParamDict, fixed: ParamDict, bn_data: Tensor, batch_size: int
) -> tuple[ParamDict, ParamDict]:
    """BN running statistics recomputed at each of the K points from `bn_data` (inputs only)."""
    k = next(iter(moving.values())).shape[0] if moving else 1
    moving, fixed = _fresh_bn_state(model, moving, fixed, k)
    stacked = _Stacked(_bn_recompute_template(model))
    with torch.no_grad():
        for b in _batches(bn_data.shape[0], batch_size):
            stacked(moving, fixed, bn_data[b])  # updates moving[...running_*] in place
    return moving, fixed


def recompute_bn_single(model: nn.Module, bn_data: Tensor, batch_size: int) -> None:
    """Reference: the same recomputation on one model, in place."""
    template = _bn_recompute_template(model)
    template.load_state_dict(model.state_dict())
    for m in template.modules():
        if isinstance(m, _BatchNorm):
            m.reset_running_stats()
    with torch.no_grad():
        for b in _batches(bn_data.shape[0], batch_size):
            template(bn_data[b])
    model.load_state_dict(template.state_dict())


def recompute_bn_state(
    model: nn.Module, state: ParamDict, bn_data: Tensor, batch_size: int
) -> ParamDict:
    """The same recomputation for one full state, functionally (no vmap, no module copy)."""
    moving, fixed = _fresh_bn_state(model, {}, dict(state), 1)
    fresh = {**fixed, **{k: v[0] for k, v in moving.items()}}
    template = _bn_recompute_template(model)
    with torch.no_grad():
        for b in _batches(bn_data.shape[0], batch_size):
            functional_call(template, fresh, (bn_data[b],))  # updates fresh[...running_*]
    return fresh


def resolve_strategy(model: nn.Module, device: torch.device, strategy: str) -> str:
    """auto: vmap over points on GPUs and for conv-free nets; on CPUs conv nets run one point at a
    time on the whole batch in channels_last, because oneDNN's grouped convolutions (what vmap
    turns a batch of K convolutions into) reach a fraction of the dense ones' speed there
    (docs/benchmarks.md has the figures)."""
    if strategy != "auto":
        return strategy
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return "sequential" if device.type == "cpu" and has_conv else "vmap"


def _to_channels_last(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


Forward = Callable[[Tensor], Tensor]


def _one_point(
    model: nn.Module, subspace: Subspace, c: Tensor, bn_data: Tensor | None, batch_size: int
) -> Forward:
    """The sequential strategy's network at coordinates c (d,): x (B, ...) -> (1, B, [C]). BN
    statistics recomputed from bn_data when given; channels-last weights on the CPU."""
    state = subspace.point(c)
    if bn_data is not None:
        state = recompute_bn_state(model, state, bn_data, batch_size)
    if c.device.type == "cpu":
        state = {key: _to_channels_last(v) for key, v in state.items()}
    return lambda x: functional_call(model, state, (x,)).unsqueeze(0)


def _stacked_points(
    stacked: _Stacked, subspace: Subspace, coords: Tensor, bn_data: Tensor | None, batch_size: int
) -> Forward:
    """The vmap strategy's k = len(coords) networks: x (B, ...) -> (k, B, [C])."""
    moving, fixed = subspace.points(coords)
    if bn_data is not None:
        moving, fixed = recompute_bn_batched(stacked.model, moving, fixed, bn_data, batch_size)
    if moving:
        return lambda x: stacked(moving, fixed, x)
    k = coords.shape[0]  # no direction moves anything: one network, shared by all k points

    def shared(x: Tensor) -> Tensor:
        out = functional_call(stacked.model, fixed, (x,))
        return out.expand(k, *out.shape)

    return shared


def _split_metrics(
    forward: Forward, k: int, split: tuple[Tensor, Tensor], batch_size: int, loss: str, out: bool
) -> tuple[Tensor, Tensor]:
    """Mean loss and accuracy (percent) of the k networks of `forward` on one split (inputs,
    labels), (k,) each, summed in float64 over the batches; `out`: the model's loss_output."""
    inputs, labels = split
    n = inputs.shape[0]
    loss_sum = torch.zeros(k, dtype=torch.float64, device=inputs.device)
    correct = torch.zeros(k, dtype=torch.float64, device=inputs.device)
    for b in _batches(n, batch_size):
        batch_loss, batch_correct = batch_loss_and_correct(forward(inputs[b]), labels[b], loss, out)
        loss_sum += batch_loss
        correct += batch_correct
    return loss_sum / n, 100.0 * correct / n


def evaluate_points(
    model: nn.Module,
    subspace: Subspace,
    coords: Tensor,
    data: Mapping[str, tuple[Tensor, Tensor]],
    options: EngineConfig | None = None,
    bn_data: Tensor | None = None,
) -> dict[str, Metrics]:
    """Loss and accuracy at each row of coords (K, d) on every split of `data`
    ({name: (inputs, labels)}), batched over points.

    `model` is a template (its own weights are not used); `bn_data` holds the inputs BN statistics
    are recomputed from when options.bn == "recompute" (the training split). The weights of a
    chunk of points are built (and BN statistics recomputed) once for all splits.
    """
    options = options or EngineConfig()
    model = model.eval()
    first = next(iter(data.values()))[0]
    device = first.device
    coords = coords.to(device=device, dtype=torch.float64)
    recompute = options.bn == "recompute" and has_bn(model)
    if recompute and bn_data is None:
        raise ValueError("bn=recompute needs bn_data (the training inputs)")
    strategy = resolve_strategy(model, device, options.strategy)
    batch_size = options.batch_size
    if strategy == "sequential":
        per_pass = 1
        if device.type == "cpu":
            data = {name: (_to_channels_last(x), y) for name, (x, y) in data.items()}
            batch_size = cpu_batch_size(model, first[0], batch_size)
    else:
        per_pass = points_per_pass(model, subspace, first[0], options.batch_size, options.memory_mb)
    stacked = _Stacked(model)
    loss_output = is_loss_output(model)
    sums = {name: ([], []) for name in data}
    bn_source = bn_data if recompute else None
    with torch.no_grad():
        for chunk in _batches(coords.shape[0], per_pass):
            points = coords[chunk]
            if strategy == "sequential":
                forward = _one_point(model, subspace, points[0], bn_source, options.batch_size)
            else:
                forward = _stacked_points(stacked, subspace, points, bn_source, options.batch_size)
            for name, split in data.items():
                loss, acc = _split_metrics(
                    forward, len(points), split, batch_size, options.loss, loss_output
                )
                sums[name][0].append(loss)
                sums[name][1].append(acc)
    return {
        name: Metrics(torch.cat(loss).cpu().numpy(), torch.cat(acc).cpu().numpy())
        for name, (loss, acc) in sums.items()
    }


def evaluate_points_loop(
    model: nn.Module,
    subspace: Subspace,
    coords: Tensor,
    data: Mapping[str, tuple[Tensor, Tensor]],
    options: EngineConfig | None = None,
    bn_data: Tensor | None = None,
) -> dict[str, Metrics]:
    """The plain reference: one point at a time, weights loaded into a copy of the model."""
    options = options or EngineConfig()
    net = copy.deepcopy(model).eval()
    loss_output = is_loss_output(model)
    coords = coords.to(dtype=torch.float64)
    out = {name: Metrics(np.zeros(coords.shape[0]), np.zeros(coords.shape[0])) for name in data}
    with torch.no_grad():
        for i, c in enumerate(coords):
            net.load_state_dict(subspace.point(c.to(next(net.parameters()).device)))
            if options.bn == "recompute" and has_bn(net):
                recompute_bn_single(net, bn_data, options.batch_size)
            for name, (inputs, labels) in data.items():
                n = inputs.shape[0]
                loss_sum, correct = 0.0, 0
                for b in _batches(n, options.batch_size):
                    outputs = net(inputs[b])
                    if loss_output:  # per-sample losses (B,): no classes, no accuracy
                        loss_sum += outputs.double().sum().item()
                        correct = float("nan")
                        continue
                    loss = per_sample_loss(outputs, labels[b], options.loss)
                    loss_sum += loss.double().sum().item()
                    correct += int((outputs.argmax(-1) == labels[b]).sum())
                out[name].loss[i] = loss_sum / n
                out[name].acc[i] = 100.0 * correct / n
    return out
