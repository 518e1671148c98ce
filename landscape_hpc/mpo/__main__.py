"""`python -m landscape_hpc.mpo`: the MPO Hydra app (see landscape_hpc/mpo/command.py)."""

from __future__ import annotations

import hydra
from omegaconf import OmegaConf

from landscape_hpc.cli import tune_allocator
from landscape_hpc.config import MPOConfig, register_configs
from landscape_hpc.errors import exit_on_user_error
from landscape_hpc.mpo.command import run_mpo

register_configs()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="mpo")
@exit_on_user_error
def main(cfg) -> None:
    tune_allocator()  # here, not at import: a submitit job calls main() without __main__
    mpo_cfg: MPOConfig = OmegaConf.to_object(cfg)
    run_mpo(mpo_cfg)


if __name__ == "__main__":
    main()
