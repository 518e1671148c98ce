"""Fixtures shared by several test modules; a module opts in with
`pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    # Tiny models on small batches gain nothing from a second thread, and OpenMP threads that
    # share two cores with other processes slow down several-fold; one thread keeps them fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mlp_optima(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three tiny MLPs trained on digits from seeds 1, 2, 3 (tests/hull_helpers.py)."""
    from hull_helpers import train_mlp

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("optima")
        return [train_mlp(root / f"seed{s}", s) for s in (1, 2, 3)]
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def partition() -> str:
    """The default partition of a reachable SLURM cluster; skips the test where there is none."""
    from mpi_helpers import slurm_partition

    name = slurm_partition()
    if name is None:
        pytest.skip(
            "sbatch is missing or sinfo cannot reach a SLURM controller "
            "(start the local one: scripts/slurm_local.sh up)"
        )
    return name
