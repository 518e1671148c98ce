"""Which device a rank computes on (landscape_hpc/devices.py), on any machine: the GPU count is
what torch reports, so these tests stand in a machine with N GPUs by patching torch.cuda."""

from __future__ import annotations

import pytest
import torch

from landscape_hpc import devices, parallel
from landscape_hpc.errors import UserError


def pretend_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(
    "count, local_rank, want",
    [
        (0, 0, torch.device("cpu")),
        (0, 5, torch.device("cpu")),
        (1, 0, torch.device("cuda", 0)),
        (1, 3, torch.device("cuda", 0)),
        (4, 1, torch.device("cuda", 1)),
        (4, 6, torch.device("cuda", 2)),  # 8 ranks on a 4-GPU node: two per GPU, round robin
    ],
)
def test_auto_takes_gpu_local_rank_mod_count_or_the_cpu(monkeypatch, count, local_rank, want):
    pretend_gpus(monkeypatch, count)
    assert devices.resolve_device("auto", local_rank) == want


def test_an_explicit_device_is_kept_and_a_missing_gpu_is_refused(monkeypatch):
    pretend_gpus(monkeypatch, 2)
    assert devices.resolve_device("cuda:1", 0) == torch.device("cuda", 1)
    assert devices.resolve_device("cpu", 3) == torch.device("cpu")
    with pytest.raises(UserError, match="device=cuda:2 but this machine has 2 CUDA GPU"):
        devices.resolve_device("cuda:2", 0)
    pretend_gpus(monkeypatch, 0)
    with pytest.raises(UserError, match="device=cuda but this machine has no CUDA GPU"):
        devices.resolve_device("cuda", 0)
    with pytest.raises(UserError, match="device='gpu' is not a device"):
        devices.resolve_device("gpu", 0)


class FakeComm:
    """A communicator of `size` ranks seen from `rank` (rank_device only asks these)."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    def Get_rank(self) -> int:  # noqa: N802 - mpi4py's name
        return self.rank

    def Get_size(self) -> int:  # noqa: N802
        return self.size


@pytest.mark.parametrize(
    "rank, size, local_rank, want",
    [
        (0, 4, 0, torch.device("cpu")),  # the master only hands out work
        (1, 4, 1, torch.device("cuda", 1)),
        (3, 4, 3, torch.device("cuda", 1)),
        (0, 1, 0, torch.device("cuda", 0)),  # a world of one computes itself
    ],
)
def test_rank_device_puts_the_master_on_the_cpu_and_workers_on_gpus(
    monkeypatch, rank, size, local_rank, want
):
    pretend_gpus(monkeypatch, 2)
    monkeypatch.setattr(parallel, "placement", lambda comm: parallel.Placement(local_rank, size, 3))
    threads = torch.get_num_threads()
    try:
        assert devices.rank_device(FakeComm(rank, size), "auto") == want
        # on the CPU torch gets the rank's share of the cores; a GPU rank leaves them alone
        assert torch.get_num_threads() == (3 if want.type == "cpu" else threads)
    finally:
        torch.set_num_threads(threads)
