"""The MPO objective (eq. 3, appendices A–B), batched over cells, and its per-cell reference.

For a data batch and sampled cells L (low-loss) and H (high-loss) of the pattern:

    loss = 1/|L| Σ_{c∈L} CE(θ(c))  −  1/|H| Σ_{c∈H} min(CE(θ(c)), ce_threshold)          eq. (3)

The high-loss term is clamped so the plane cannot win by sending a few cells to infinite loss.
`objective_batched` builds the weights of a chunk of cells from the plane (so autograd reaches
origin, up, φ_right and s), runs one `vmap` of `functional_call` over the chunk and does one
backward per chunk; `objective_loop` is loss-patterns' way, one forward and backward per cell,
kept as the reference the batched path is tested and benchmarked against.

Training uses BN batch statistics (appendix C): the template's BN layers run in train mode and
track no running statistics, so nothing is updated in place and vmap can batch them.

CE is the engine's loss (engine/losses.py, `loss="ce"`, the paper's); any other spec of the loss
protocol (mse, lm, a metric callable) takes its place, its mean weighted by what it counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor, nn
from torch.func import vmap

from landscape_hpc.engine.batchnorm import train_mode_copy
from landscape_hpc.engine.data import Batch, leading_size
from landscape_hpc.engine.losses import Loss, resolve_loss, run_model
from landscape_hpc.engine.memory import activation_bytes_per_sample
from landscape_hpc.mpo.plane import Plane

_FLOAT_BYTES = 4
#: bytes per activation kept for backward per sample and cell, relative to the forward outputs:
#: the outputs saved for backward, their gradients, and temporaries of the loss
_TRAIN_ACTIVATION_FACTOR = 3
#: bytes per moving weight per cell: the stacked weights, their gradient, the build temporaries
_TRAIN_WEIGHT_FACTOR = 3


@dataclass
class StepStats:
    """What one objective evaluation measured (means over the sampled cells, acc in percent)."""

    loss: float
    ce_low: float
    ce_high: float
    acc_low: float
    acc_high: float


def training_template(model: nn.Module) -> nn.Module:
    """A copy that computes BN with the statistics of each batch and updates no buffers."""
    return train_mode_copy(model, track_running_stats=False)


#: how the cells of a step run: one vmapped forward/backward per chunk, or one per cell
STEP_STRATEGIES = ("vmap", "loop")


def cell_bytes(model: nn.Module, sample: Tensor, batch_size: int) -> int:
    """Memory one cell needs in a training step: its stacked weights and the activations of a
    batch, with their gradients."""
    n_params = sum(p.numel() for p in model.parameters())
    acts = activation_bytes_per_sample(model, sample)
    return _TRAIN_WEIGHT_FACTOR * n_params * _FLOAT_BYTES + (
        _TRAIN_ACTIVATION_FACTOR * acts * batch_size
    )


def cells_per_chunk(model: nn.Module, sample: Tensor, batch_size: int, memory_mb: float) -> int:
    """Cells evaluated together in one forward/backward under a budget of `memory_mb` MiB; 0 when
    not even one cell fits."""
    return int(memory_mb * 2**20 // max(cell_bytes(model, sample, batch_size), 1))


def _signed_weights(n_low: int, n_high: int, device: torch.device) -> Tensor:
    """+1/|L| for low-loss cells, −1/|H| for high-loss cells (eq. 3), shape (n_low + n_high,)."""
    return torch.cat(
        [
            torch.full((n_low,), 1.0 / n_low, device=device),
            torch.full((n_high,), -1.0 / n_high, device=device),
        ]
    )


def _cell_terms(ce: Tensor, is_high: Tensor, ce_threshold: float) -> Tensor:
    """CE of low-loss cells, CE clamped at the threshold for high-loss cells."""
    return torch.where(is_high, ce.clamp(max=ce_threshold), ce)


#: the cells' loss: a spec of the engine's loss protocol
LossSpec = Union[str, Callable, Loss]


def _stats(loss: float, ce: Tensor, correct: Tensor, n_low: int, batch: Tensor | int) -> StepStats:
    acc = 100.0 * correct.double() / batch  # NaN where the loss has no accuracy (0 / 0)
    return StepStats(
        loss=loss,
        ce_low=float(ce[:n_low].mean()),
        ce_high=float(ce[n_low:].mean()),
        acc_low=float(acc[:n_low].mean()),
        acc_high=float(acc[n_low:].mean()),
    )


def objective_batched(
    plane: Plane,
    template: nn.Module,
    low_coords: Tensor,
    high_coords: Tensor,
    inputs: Tensor,
    labels: Tensor,
    ce_threshold: float,
    chunk_cells: int,
    backward: bool = True,
    loss: LossSpec = "ce",
) -> StepStats:
    """eq. (3) over cells (K_low, 2) and (K_high, 2) of (α, β), `chunk_cells` cells per vmapped
    forward; with `backward`, accumulates the gradients into the plane's leaves (.grad)."""
    n_low, n_high = low_coords.shape[0], high_coords.shape[0]
    device = labels.device
    coords = torch.cat([low_coords, high_coords]).to(device)  # (K, 2)
    signs = _signed_weights(n_low, n_high, device)  # (K,)
    is_high = torch.arange(coords.shape[0], device=device) >= n_low
    loss_fn = resolve_loss(loss, template)
    batch = Batch(inputs, labels, leading_size(inputs))

    def forward(weights: dict[str, Tensor], x: Tensor) -> Tensor:
        return run_model(template, x, weights)  # unwrapped inside the vmap

    batched = vmap(forward, in_dims=(0, None))
    total = 0.0
    ces, corrects = [], []
    counted: Tensor | int = 0
    for start in range(0, coords.shape[0], max(chunk_cells, 1)):
        part = slice(start, start + max(chunk_cells, 1))
        with torch.set_grad_enabled(backward):
            # rebuilt per chunk (O(parameters), cheap) so each chunk's graph is freed at once
            weights = plane.cell_weights(coords[part])  # {key: (k, ...)}
            logits = batched(weights, inputs)  # (k, B, C)
            ce = loss_fn.mean(logits, batch)  # (k,)
            chunk_loss = (signs[part] * _cell_terms(ce, is_high[part], ce_threshold)).sum()
            if backward:
                chunk_loss.backward()
        total += float(chunk_loss.detach())
        ces.append(ce.detach())
        correct, counted = loss_fn.accuracy(logits.detach(), batch)
        corrects.append(correct)
    return _stats(total, torch.cat(ces), torch.cat(corrects), n_low, _count(counted))


def _count(counted: Tensor | int) -> Tensor | int:
    """What the accuracy counts, the same for every cell (samples, tokens)."""
    return counted if isinstance(counted, int) else counted[0]


def objective_loop(
    plane: Plane,
    template: nn.Module,
    low_coords: Tensor,
    high_coords: Tensor,
    inputs: Tensor,
    labels: Tensor,
    ce_threshold: float,
    backward: bool = True,
    loss: LossSpec = "ce",
) -> StepStats:
    """The reference (loss-patterns' way): one forward and one backward per cell."""
    n_low, n_high = low_coords.shape[0], high_coords.shape[0]
    device = labels.device
    coords = torch.cat([low_coords, high_coords]).to(device)
    signs = _signed_weights(n_low, n_high, device)
    loss_fn = resolve_loss(loss, template)
    batch = Batch(inputs, labels, leading_size(inputs))
    total = 0.0
    ces, corrects = [], []
    counted: Tensor | int = 0
    for k in range(coords.shape[0]):
        with torch.set_grad_enabled(backward):
            weights = {key: w[0] for key, w in plane.cell_weights(coords[k : k + 1]).items()}
            logits = run_model(template, inputs, weights)  # (B, C)
            ce = loss_fn.mean(logits.unsqueeze(0), batch)[0]
            term = ce.clamp(max=ce_threshold) if k >= n_low else ce
            cell_loss = signs[k] * term
            if backward:
                cell_loss.backward()
        total += float(cell_loss.detach())
        ces.append(ce.detach())
        correct, counted = loss_fn.accuracy(logits.detach().unsqueeze(0), batch)
        corrects.append(correct[0])
    return _stats(total, torch.stack(ces), torch.stack(corrects), n_low, _count(counted))
