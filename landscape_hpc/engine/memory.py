"""How much of a split and how many points fit one forward pass: the activation sizes of a
model, measured with forward hooks on one sample (a Tensor, or keyword inputs: a dict of
Tensors), without its batch dim."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from landscape_hpc.engine.data import Inputs, map_inputs
from landscape_hpc.engine.losses import run_model
from landscape_hpc.engine.subspace import Subspace

_FLOAT_BYTES = 4
#: the largest activation a CPU forward may allocate: glibc's largest mmap threshold (32 MiB)
#: halved, so the tuned allocator (cli.tune_allocator) keeps it in the heap with room to spare
CPU_ACTIVATION_BYTES = 16 * 2**20
#: the largest activation of one vmap pass on a CPU (all its points): K points' activations
#: beyond the caches make every element-wise op (bias add, ReLU, log_softmax) run at memory
#: speed; the mlp on the digits at batch 256 ran 1,466 points/s with all 441 points in one pass
#: (29 MiB per activation), 2,020 with 128 (8 MiB), 1,949 with 32 (2 MiB) (one thread)
CPU_PASS_BYTES = 8 * 2**20


def _activation_sizes(model: nn.Module, sample: Inputs) -> list[int]:
    """Bytes of each module output for one sample, measured in eval mode (the caller's mode comes
    back): a train-mode forward would move BN's running statistics of the caller's model, and
    BatchNorm1d refuses a batch of one."""
    sizes: list[int] = []

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, Tensor):
            sizes.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    training = model.training
    try:
        with torch.no_grad():
            run_model(model.eval(), map_inputs(sample, lambda t: t.unsqueeze(0)))
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return sizes


def activation_bytes_per_sample(model: nn.Module, sample: Inputs) -> int:
    """Bytes of every module output for one sample: a bound on the activations a forward holds."""
    return sum(_activation_sizes(model, sample))


def cpu_batch_size(model: nn.Module, sample: Inputs, batch_size: int) -> int:
    """The batch of a one-point-at-a-time forward on a CPU: at most `batch_size`, and small enough
    that the largest activation stays within CPU_ACTIVATION_BYTES. A larger block is mmap'ed
    and page-faulted in afresh by every forward, and spills the last-level cache: mpo_cnn on
    28×28 inputs runs 2× faster at batch 64 than at 256 (docs/benchmarks.md)."""
    largest = max(_activation_sizes(model, sample), default=0)
    return max(1, min(batch_size, CPU_ACTIVATION_BYTES // max(largest, 1)))


def points_per_pass(
    model: nn.Module, subspace: Subspace, sample: Inputs, batch_size: int, memory_mb: float
) -> int:
    """How many points fit the memory budget: stacked moving weights + activations of a batch;
    on a CPU, also no more than keep the pass's largest activation within CPU_PASS_BYTES."""
    moving = {k for d in subspace.basis for k in d}
    weight_bytes = sum(subspace.origin[k].numel() for k in moving) * _FLOAT_BYTES
    device = next(iter(subspace.origin.values())).device
    sizes = _activation_sizes(model, map_inputs(sample, lambda t: t.to(device)))
    # x2: the forward keeps a layer's input and output alive at once, plus the loss temporaries
    per_point = weight_bytes + 2 * sum(sizes) * batch_size
    points = max(1, int(memory_mb * 2**20 // max(per_point, 1)))
    if device.type == "cpu":
        largest = max(sizes, default=0) * batch_size
        points = min(points, max(1, CPU_PASS_BYTES // max(largest, 1)))
    return points
