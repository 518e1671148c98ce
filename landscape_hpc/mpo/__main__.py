"""`python -m landscape_hpc.mpo`: the MPO Hydra app (see landscape_hpc/mpo/command.py)."""

from __future__ import annotations

from typing import Any

from landscape_hpc.cli import hydra_command
from landscape_hpc.config import MPOConfig


def _command(cfg: MPOConfig, comm: Any) -> None:
    from landscape_hpc.mpo.command import run_mpo

    run_mpo(cfg)


main = hydra_command("mpo", _command)

if __name__ == "__main__":
    main()
