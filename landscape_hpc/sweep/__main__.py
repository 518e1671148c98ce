"""`python -m landscape_hpc.sweep [overrides]` runs the sweep (landscape_hpc/sweep/run.py);
`python -m landscape_hpc.sweep report <path>` gathers one (landscape_hpc/sweep/report.py)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import OmegaConf

from landscape_hpc import parallel
from landscape_hpc.cli import share_hydra_run_dir, tune_allocator
from landscape_hpc.config import MPOConfig, register_configs
from landscape_hpc.errors import exit_on_user_error

register_configs()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="sweep")
@exit_on_user_error
def main(cfg) -> None:
    from landscape_hpc.sweep.run import run_sweep

    sweep_cfg: MPOConfig = OmegaConf.to_object(cfg)
    comm = parallel.world()
    with parallel.abort_on_error(comm):  # one failing rank ends them all, none hangs
        path = run_sweep(sweep_cfg, comm)
        if path is not None:
            print(f"sweep file: {path}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from landscape_hpc.sweep.report import main as report_main

        report_main(sys.argv[2:])
    else:
        tune_allocator()
        share_hydra_run_dir()
        main()
