"""Which device a process computes on."""

from __future__ import annotations

from typing import Any

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
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise UserError(
            f"device={spec} but this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}; "
            "use one of them, cuda or auto"
        )
    return device


def rank_device(comm: Any, spec: str) -> torch.device:
    """This rank's device in a master/worker run: the CPU on the master of a multi-rank run (it
    only hands out work), else `resolve_device(spec, local rank)`. On the CPU, torch gets the
    threads that do not fight the node's other ranks for cores. Collective: every rank of comm
    calls it, at the same point, whatever its device."""
    from landscape_hpc import parallel  # mpi4py: imported by the MPI commands only, not here

    place = parallel.placement(comm)
    if comm.Get_rank() == 0 and comm.Get_size() > 1:
        device = torch.device("cpu")
    else:
        device = resolve_device(spec, place.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(place.cpu_threads)
    return device
