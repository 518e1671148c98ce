"""Which device a process computes on."""

from __future__ import annotations

import torch

from landscape_hpc.errors import UserError


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """auto: GPU `local_rank mod device count` where there is a GPU, else the CPU; anything else
    as torch spells it (cpu, cuda, cuda:1), refused when it is not there."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"device={spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={spec} but this machine has no CUDA GPU; use device=cpu or auto")
    return device
