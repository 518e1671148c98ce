"""The engine's loss protocol: what a network's outputs on a batch are worth, one definition for
every strategy (vmap, sequential, threads, the plain loop), MPO's objective and the Hessian's
loss.

`resolve_loss(spec)` takes

    "ce"          cross-entropy of logits (B, C) against integer labels (B,); accuracy = argmax
    "mse"         integer labels (B,): loss-landscape's softmax probabilities against one-hot
                  targets, mean over classes (accuracy = argmax); float targets of the output's
                  shape: plain squared error, mean over the non-batch dims (no accuracy)
    "lm"          a causal language model's per-token cross-entropy: logits (B, T, V), labels
                  (B, T) with -100 ignored, shifted as HF's models shift for their own .loss
                  (labels = input_ids; logits[:, t] predicts labels[:, t+1]); with no labels the
                  input ids are the labels. Mean over the tokens counted, token accuracy
    "lm_aligned"  the same with labels already aligned (logits[:, t] predicts labels[:, t]);
                  LMLoss(shift=..., ignore_index=...) for other settings
    a callable    metric(outputs, batch) -> per-sample values (B,) or a (sum, count) pair of
                  scalars; `outputs` one network's (unwrapped) outputs, `batch` the engine's
                  Batch (.inputs, .target, .n); no accuracy
    a Loss        as it is
    "auto"        the model's own default (`default_loss`): its class's `default_loss` attribute
                  (gpt_tiny: "lm"), "lm" for a HF causal LM (*ForCausalLM, *LMHeadModel), else
                  "ce"; the surface and train commands' default

A model whose class sets `loss_output = True` (the n-wedge, models/nwedge.py) returns per-sample
losses: the mean of its output is the loss, its accuracy NaN (a named loss is then not used).

Means are weighted by counts (samples, or tokens for lm), never by batches; accuracy is NaN
where it is not defined. A Loss reads outputs of k networks at once, (k, B, ...), and gives
float64 sums for the engine (`sums`) or differentiable ones for training and curvature
(`terms`, `mean`). Output that does not fit the loss gets a UserError naming `loss` and the fix.

The unwrap rule (`unwrap_output`, applied inside every forward, so vmap never sees a model's
output object): a Tensor is itself; an object with a Tensor `.logits` (a HF ModelOutput) gives
it; a Mapping with "logits" gives that; a tuple or list gives its first item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from landscape_hpc.engine.data import Batch, Inputs
from landscape_hpc.errors import UserError, UserTypeError, check_choice

LOSSES = ("ce", "mse", "lm", "lm_aligned")
#: the label value a per-token loss skips (torch's and HF's)
IGNORE_INDEX = -100


def default_loss(model: nn.Module | None) -> str:
    """The loss "auto" names for `model` (module docstring): a language model's is lm."""
    declared = getattr(model, "default_loss", None)
    if isinstance(declared, str) and declared in LOSSES:
        return declared
    if type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        return "lm"
    return "ce"


def unwrap_output(out: Any) -> Tensor:
    """A model's output as the losses read it (the unwrap rule, module docstring)."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, Mapping) and "logits" in out:
        return unwrap_output(out["logits"])
    if isinstance(out, (tuple, list)) and out:
        return unwrap_output(out[0])
    raise UserTypeError(
        f"the model returned a {type(out).__name__}; the engine reads a Tensor, an object with "
        "a .logits Tensor (a HF ModelOutput), a dict with 'logits' or a tuple whose first item "
        "is the logits: wrap the model so its forward returns one of these"
    )


def run_model(model: nn.Module, inputs: Inputs, weights: Any = None) -> Tensor:
    """model(inputs) or model(**inputs), through functional_call with `weights` when given,
    unwrapped: (B, ...)."""
    if isinstance(inputs, Mapping):
        args, kwargs = (), dict(inputs)
    else:
        args, kwargs = (inputs,), None
    if weights is None:
        out = model(*args, **(kwargs or {}))
    else:
        out = functional_call(model, weights, args, kwargs)
    return unwrap_output(out)


def is_loss_output(model: nn.Module) -> bool:
    """True when the model's forward returns per-sample losses (B,), not logits (B, C)."""
    return bool(getattr(model, "loss_output", False))


#: up to this many classes, log_softmax runs over a transposed view (classes on dim -2): on a
#: CPU, torch's kernel for a short last dim vectorises over the classes only, and over the
#: batch when they are not last (10 classes × 64·1,437 rows: 7.1 against 0.69 ms, 2 threads);
#: the values differ from the last-dim kernel's by float32 rounding (≤ 1 ulp, 0.03% of them)
FEW_CLASSES = 16


def log_softmax(logits: Tensor) -> Tensor:
    """log_softmax over the last dim (classes), by the faster kernel for few classes on a CPU."""
    if logits.device.type == "cpu" and logits.dim() >= 2 and logits.shape[-1] <= FEW_CLASSES:
        return torch.log_softmax(logits.transpose(-1, -2), dim=-2).transpose(-1, -2)
    return torch.log_softmax(logits, dim=-1)


def per_sample_loss(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    """ce or mse of every sample: logits (..., B, C), integer labels (B,) -> (..., B). Logits
    below float32 (bfloat16 under engine.precision=bf16) are upcast first: log_softmax in
    float32."""
    if logits.is_floating_point() and torch.finfo(logits.dtype).bits < 32:
        logits = logits.float()
    labels = labels.expand(logits.shape[:-1])  # (..., B)
    if loss == "ce":
        return -log_softmax(logits).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    if loss == "mse":
        # loss-landscape's MSE: softmax probabilities against one-hot targets, mean over classes
        target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        return (torch.softmax(logits, dim=-1) - target).pow(2).mean(-1)
    raise ValueError(f"unknown loss {loss!r}; valid: ce, mse")


def _shape(outputs: Tensor) -> tuple[int, ...]:
    return tuple(outputs.shape[1:])  # one network's output shape


def _summed(values: Tensor, float64: bool) -> Tensor:
    """values (k, ...) summed per network, in float64 when asked (the engine's sums)."""
    return (values.double() if float64 else values).flatten(1).sum(-1)


@dataclass
class Sums:
    """The engine's float64 sums of k networks over the batches seen, (k,) each; a count that is
    the same for every network may be a Python int."""

    loss: Tensor
    loss_count: Tensor | int
    correct: Tensor
    acc_count: Tensor | int  # 0: no accuracy (it is NaN)

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.loss + other.loss,
            self.loss_count + other.loss_count,
            self.correct + other.correct,
            self.acc_count + other.acc_count,
        )

    def means(self) -> tuple[Tensor, Tensor]:
        """Mean loss and accuracy (percent), (k,) each: 0/0 is NaN (no accuracy)."""
        return self.loss / self.loss_count, 100.0 * self.correct / self.acc_count


class Loss:
    """What outputs (k, B, ...) of k networks on a batch are worth: subclasses define `terms`
    (per-network sums and counts) and, where it exists, `accuracy`."""

    name = "loss"

    def terms(
        self, outputs: Tensor, batch: Batch, float64: bool = False
    ) -> tuple[Tensor, Tensor | int]:
        """Summed loss (k,) and what it counts: differentiable, in the outputs' dtype, or
        summed in float64 (`float64`, the engine's)."""
        raise NotImplementedError

    def accuracy(self, outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor | int]:
        """Correct predictions (k,) and what they count; count 0 where no accuracy exists."""
        return torch.zeros(outputs.shape[0], device=outputs.device), 0

    def mean(self, outputs: Tensor, batch: Batch) -> Tensor:
        """The mean loss (k,) over what the batch counts, differentiable."""
        total, count = self.terms(outputs, batch)
        return total / count

    def sums(self, outputs: Tensor, batch: Batch) -> Sums:
        """The engine's float64 sums of one batch."""
        total, count = self.terms(outputs, batch, float64=True)
        correct, acc_count = self.accuracy(outputs, batch)
        return Sums(total, count, correct.double(), acc_count)

    def _fail(self, outputs: Tensor, batch: Batch, fix: str) -> UserError:
        target = None if batch.target is None else tuple(batch.target.shape)
        return UserError(
            f"loss={self.name!r}: the model's output has shape {_shape(outputs)} and the labels "
            f"{target} (batch of {batch.n}); {fix}"
        )


class ClassLoss(Loss):
    """ce or mse of class logits (B, C) against integer labels (B,); mse also of float targets
    of the output's shape (no accuracy)."""

    def __init__(self, name: str):
        self.name = name

    def _check(self, outputs: Tensor, batch: Batch) -> bool:
        """True for class labels, False for mse's float targets; a UserError where neither."""
        target = batch.target
        if target is None:
            raise UserError(
                f"loss={self.name!r} needs labels: give (inputs, labels) pairs, or batches that "
                "hold them (a tuple's second item, a dict's 'labels')"
            )
        if self.name == "mse" and target.is_floating_point():
            if _shape(outputs) != tuple(target.shape):
                raise self._fail(outputs, batch, "float targets must have the output's shape")
            return False
        if target.is_floating_point() or target.dim() != 1:
            lm = " (per-token labels (B, T): loss='lm')" if target.dim() == 2 else ""
            raise self._fail(outputs, batch, f"give integer class labels (B,){lm}")
        if outputs.dim() == 4:
            raise self._fail(
                outputs,
                batch,
                "a (B, T, V) output is per-token logits: use loss='lm' with (B, T) labels",
            )
        if outputs.dim() != 3 or outputs.shape[1] != batch.n:
            raise self._fail(
                outputs,
                batch,
                "it takes (B, C) class logits (a model returning per-sample losses sets "
                "loss_output = True)",
            )
        return True

    def per_sample(self, outputs: Tensor, batch: Batch) -> Tensor:
        """(k, B) losses of the k networks."""
        if self._check(outputs, batch):
            return per_sample_loss(outputs, batch.target, self.name)
        diff = outputs - batch.target  # (k, B, ...)
        return diff.pow(2).reshape(*outputs.shape[:2], -1).mean(-1)

    def terms(self, outputs: Tensor, batch: Batch, float64: bool = False) -> tuple[Tensor, int]:
        return _summed(self.per_sample(outputs, batch), float64), batch.n

    def mean(self, outputs: Tensor, batch: Batch) -> Tensor:
        return self.per_sample(outputs, batch).mean(-1)  # torch's mean: the bits of before

    def accuracy(self, outputs: Tensor, batch: Batch) -> tuple[Tensor, int]:
        if not self._check(outputs, batch):
            return super().accuracy(outputs, batch)
        return (outputs.argmax(-1) == batch.target).sum(-1), batch.n

    def sums(self, outputs: Tensor, batch: Batch) -> Sums:
        values = self.per_sample(outputs, batch)  # checked once, here
        if batch.target.is_floating_point():
            none = torch.zeros(outputs.shape[0], dtype=torch.float64, device=outputs.device)
            return Sums(values.double().sum(-1), batch.n, none, 0)
        correct = (outputs.argmax(-1) == batch.target).sum(-1).double()
        return Sums(values.double().sum(-1), batch.n, correct, batch.n)


class LMLoss(Loss):
    """Per-token cross-entropy of logits (B, T, V) against labels (B, T), `ignore_index`
    skipped; `shift`: HF's causal-LM convention (logits[:, t] predicts labels[:, t+1])."""

    def __init__(self, shift: bool = True, ignore_index: int = IGNORE_INDEX):
        self.shift, self.ignore_index = shift, ignore_index
        self.name = "lm" if shift else "lm_aligned"

    def _aligned(self, outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Logits (k, B, T', V) and the labels (B, T') they predict."""
        labels = batch.target
        if labels is None:  # a causal LM's own convention: the input ids are the labels
            ids = batch.inputs.get("input_ids") if isinstance(batch.inputs, Mapping) else None
            labels = batch.inputs if isinstance(batch.inputs, Tensor) else ids
        if labels is None or labels.is_floating_point():
            raise self._fail(outputs, batch, "it needs integer labels (B, T) (or input ids)")
        if outputs.dim() != 4 or _shape(outputs)[:2] != tuple(labels.shape):
            raise self._fail(
                outputs,
                batch,
                "it takes per-token logits (B, T, V) and labels (B, T) (class logits (B, C) "
                "with labels (B,): loss='ce')",
            )
        if self.shift:
            return outputs[:, :, :-1], labels[:, 1:]
        return outputs, labels

    def terms(self, outputs: Tensor, batch: Batch, float64: bool = False) -> tuple[Tensor, Tensor]:
        logits, labels = self._aligned(outputs, batch)
        k, vocab = logits.shape[0], logits.shape[-1]
        tokens = F.cross_entropy(  # (k·B·T',): 0 where ignored
            logits.reshape(-1, vocab),
            labels.expand(logits.shape[:-1]).reshape(-1),
            ignore_index=self.ignore_index,
            reduction="none",
        )
        count = (labels != self.ignore_index).sum()
        return _summed(tokens.view(k, -1), float64), count.expand(k)

    def accuracy(self, outputs: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        logits, labels = self._aligned(outputs, batch)
        counted = labels != self.ignore_index  # (B, T')
        hits = (logits.argmax(-1) == labels) & counted  # (k, B, T')
        return hits.flatten(1).sum(-1), counted.sum().expand(logits.shape[0])

    def sums(self, outputs: Tensor, batch: Batch) -> Sums:
        total, count = self.terms(outputs, batch, float64=True)
        correct, _ = self.accuracy(outputs, batch)
        return Sums(total, count.double(), correct.double(), count.double())


class OutputLoss(Loss):
    """A loss_output model's outputs (k, B) are its per-sample losses; no accuracy."""

    name = "loss_output"

    def _check(self, outputs: Tensor, batch: Batch) -> Tensor:
        if outputs.dim() != 2 or outputs.shape[1] != batch.n:
            raise self._fail(outputs, batch, "a loss_output model must return (B,) losses")
        return outputs

    def terms(self, outputs: Tensor, batch: Batch, float64: bool = False) -> tuple[Tensor, int]:
        return _summed(self._check(outputs, batch), float64), batch.n

    def mean(self, outputs: Tensor, batch: Batch) -> Tensor:
        return self._check(outputs, batch).mean(-1)


class MetricLoss(Loss):
    """A user's metric(outputs, batch) -> per-sample values (B,) or (sum, count), applied to
    each network's outputs in turn (a loop over the k networks); no accuracy."""

    def __init__(self, metric: Callable[[Tensor, Batch], Any]):
        self.metric = metric
        self.name = getattr(metric, "__name__", type(metric).__name__)

    def _one(self, outputs: Tensor, batch: Batch, float64: bool) -> tuple[Tensor, Tensor]:
        """(sum, count) of one network's outputs (B, ...), both 0-dim."""
        got = self.metric(outputs, batch)
        fix = (
            f"loss={self.name}: a metric(outputs, batch) returns per-sample values of shape "
            f"({batch.n},) or a (sum, count) pair of numbers"
        )
        if isinstance(got, Tensor):
            if tuple(got.shape) != (batch.n,):
                mean = (
                    " (a scalar is a mean: return the per-sample values)" if not got.dim() else ""
                )
                raise UserError(f"{fix}; it returned shape {tuple(got.shape)}{mean}")
            total = _summed(got.unsqueeze(0), float64)[0]
            return total, torch.tensor(float(batch.n), dtype=torch.float64, device=got.device)
        if isinstance(got, (tuple, list)) and len(got) == 2:
            total, count = (torch.as_tensor(v, device=outputs.device) for v in got)
            if total.numel() != 1 or count.numel() != 1:
                shapes = f"{tuple(total.shape)} and {tuple(count.shape)}"
                raise UserError(f"{fix}; its pair holds shapes {shapes}")
            count = count.reshape(()).double()
            if not bool(torch.isfinite(count)) or float(count) < 0:
                raise UserError(f"{fix}; its count {float(count)} must be finite and >= 0")
            total = total.reshape(())
            if float64 or not total.is_floating_point():
                total = total.double()
            return total, count
        raise UserTypeError(f"{fix}; it returned a {type(got).__name__}")

    def terms(self, outputs: Tensor, batch: Batch, float64: bool = False) -> tuple[Tensor, Tensor]:
        pairs = [self._one(outputs[j], batch, float64) for j in range(outputs.shape[0])]
        dtype = pairs[0][0].dtype
        for total, _ in pairs[1:]:
            dtype = torch.promote_types(dtype, total.dtype)
        totals = torch.stack([total.to(dtype) for total, _ in pairs])  # (k,)
        return totals, torch.stack([count for _, count in pairs])


def resolve_loss(spec: str | Callable | Loss | None, model: nn.Module | None = None) -> Loss:
    """The Loss of a spec (module docstring); None is "ce". A named loss of a `loss_output`
    model is its own output."""
    spec = "ce" if spec is None else spec
    if spec == "auto":
        spec = default_loss(model)
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, str):
        check_choice("loss", spec, LOSSES)
        if model is not None and is_loss_output(model):
            return OutputLoss()
        if spec in ("lm", "lm_aligned"):
            return LMLoss(shift=spec == "lm")
        return ClassLoss(spec)
    if callable(spec):
        return MetricLoss(spec)
    raise UserTypeError(
        f"loss={spec!r} is a {type(spec).__name__}; give one of {', '.join(LOSSES)}, a callable "
        "metric(outputs, batch) or a Loss"
    )
