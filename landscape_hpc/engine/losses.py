"""Per-sample losses and the per-split mean loss and accuracy of networks at points: the
arithmetic every strategy of the engine (evaluate.py) shares, so they differ only in how the
networks' outputs are produced.

A model whose class sets `loss_output = True` (the n-wedge, models/nwedge.py) returns per-sample
losses instead of logits: the mean of its output is the loss, its accuracy NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape_hpc.engine.subspace import Subspace

LOSSES = ("ce", "mse")

#: k networks on one batch of inputs: x (B, ...) -> outputs (k, B, [C])
Forward = Callable[[Tensor], Tensor]


def per_sample_loss(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    """Loss of every sample: logits (..., B, C), labels (B,) -> (..., B). Logits below float32
    (bfloat16 under engine.precision=bf16) are upcast first: log_softmax in float32."""
    if logits.is_floating_point() and torch.finfo(logits.dtype).bits < 32:
        logits = logits.float()
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


def sample_losses(outputs: Tensor, labels: Tensor, loss: str, loss_output: bool) -> Tensor:
    """The loss of every sample (..., B): a loss-output model's outputs themselves, else `loss`
    of the logits (..., B, C)."""
    return outputs if loss_output else per_sample_loss(outputs, labels, loss)


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


def batches(n: int, batch_size: int) -> list[slice]:
    """[0, n) in slices of at most batch_size."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def split_metrics(
    forward: Forward, k: int, split: tuple[Tensor, Tensor], batch_size: int, loss: str, out: bool
) -> tuple[Tensor, Tensor]:
    """Mean loss and accuracy (percent) of the k networks of `forward` on one split (inputs,
    labels), (k,) each, summed in float64 over the batches; `out`: the model's loss_output."""
    inputs, labels = split
    n = inputs.shape[0]
    if n <= batch_size:  # one batch: no running sums (a tiny net's points are this overhead)
        loss_sum, correct = batch_loss_and_correct(forward(inputs), labels, loss, out)
        return loss_sum / n, 100.0 * correct / n
    loss_sum = torch.zeros(k, dtype=torch.float64, device=inputs.device)
    correct = torch.zeros(k, dtype=torch.float64, device=inputs.device)
    for b in batches(n, batch_size):
        batch_loss, batch_correct = batch_loss_and_correct(forward(inputs[b]), labels[b], loss, out)
        loss_sum += batch_loss
        correct += batch_correct
    return loss_sum / n, 100.0 * correct / n


@dataclass
class Points:
    """What a strategy evaluates: `model` (a template, its own weights unused) at points of
    `subspace`, on `data` ({split: (inputs, labels)}) with `loss`; BN statistics recomputed from
    `bn_data` (in batches of `bn_batch_size`) when it is given."""

    model: nn.Module
    subspace: Subspace
    data: Mapping[str, tuple[Tensor, Tensor]]
    loss: str
    bn_data: Tensor | None = None
    bn_batch_size: int = 256

    @property
    def loss_output(self) -> bool:
        return is_loss_output(self.model)


def concat(
    parts: Sequence[Mapping[str, tuple[Tensor, Tensor]]],
) -> dict[str, tuple[Tensor, Tensor]]:
    """{split: (loss, accuracy)} of consecutive groups of points, joined in order."""
    return {
        name: (torch.cat([p[name][0] for p in parts]), torch.cat([p[name][1] for p in parts]))
        for name in parts[0]
    }
