"""engine.precision: the arithmetic the engine's forwards, the MPO fit and the Hessian run in.

- fp32 (the default): float32 everywhere, TF32 off for matmuls and for cuDNN convolutions.
  PyTorch's own defaults leave cuDNN's TF32 on (torch.backends.cudnn.allow_tf32 = True), so
  without this a "float32" convolution on an Ampere or newer GPU rounds its inputs to TF32's 10
  mantissa bits; fp32 sets both flags False.
- tf32: both flags True, so float32 matmuls and convolutions on an Ampere or newer GPU round their
  inputs to TF32 and accumulate in float32. On a CPU (and on older GPUs) the flags change nothing:
  tf32 there is fp32, bit for bit.
- bf16: torch.autocast(device, bfloat16), on a GPU and on a CPU alike: the ops autocast lists
  (convolutions, matmuls, linear layers) run in bfloat16, the rest in float32; TF32 off.

Whatever the precision, losses are computed from outputs upcast to float32 (losses.py) and sums
over samples stay in float64. The flags are set only inside `precision(...)`'s block and restored
after it: the library leaves the process's settings as it found them, outside its calls. Inside
them it sets them explicitly, and they are process-wide: another thread's float32 matmuls see
them while the block runs. Autocast is per thread: a pool of threads enters the caller's state
with `autocast_like`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def _autocast_available(device_type: str) -> bool:
    return bool(torch.amp.is_autocast_available(device_type))


@contextmanager
def precision(name: str, device: torch.device | str) -> Iterator[None]:
    """The block runs at precision `name` (PRECISIONS) on `device`: both TF32 flags set
    explicitly (True for tf32, else False), autocast to bfloat16 for bf16 and off otherwise (a
    caller's own autocast does not leak into an fp32 run); the flags restored afterwards."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    if name == "bf16" and not _autocast_available(device_type):
        raise ValueError(f"precision bf16: torch has no autocast for {device_type} devices")
    # the matmul flag is one face of the float32 matmul precision (highest/high/medium): keep
    # that, so a caller's "medium" comes back as it was, not as "high"
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    tf32 = name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        if not _autocast_available(device_type):
            yield
        else:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=name == "bf16"):
                yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def autocast_like(device: torch.device | str) -> Callable[[], AbstractContextManager[Any]]:
    """The calling thread's autocast state for `device`, as a factory of context managers that
    put another thread in the same state (autocast is per thread; the TF32 flags are not)."""
    device_type = torch.device(device).type
    if not _autocast_available(device_type):
        return contextlib.nullcontext
    enabled = torch.is_autocast_enabled(device_type)
    dtype = torch.get_autocast_dtype(device_type)
    return lambda: torch.autocast(device_type, dtype=dtype, enabled=enabled)


def precision_error(values: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, float]:
    """How far values at a lower precision are from the fp32 `reference` on the same points:
    the largest relative loss difference and the largest accuracy difference (points of
    percent) over splits and points. Both map a split to an object with `.loss` and `.acc`
    arrays of shape (K,) (evaluate.Metrics); NaN where no point of the reference is finite."""
    loss_rel, acc_points = [], []
    for split, ref in reference.items():
        got = values[split]
        finite = [
            (abs(a - b) / max(abs(b), 1e-30), abs(p - q))
            for a, b, p, q in zip(got.loss, ref.loss, got.acc, ref.acc)
            if math.isfinite(b)
        ]
        loss_rel += [float(e) for e, _ in finite]
        acc_points += [float(e) for _, e in finite if math.isfinite(e)]
    return {
        "loss_rel": max(loss_rel, default=math.nan),
        "acc_points": max(acc_points, default=math.nan),
    }
