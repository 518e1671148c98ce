"""`python -m landscape_hpc.sweep [overrides]` runs the sweep (landscape_hpc/sweep/run.py);
`python -m landscape_hpc.sweep report <path>` gathers one (landscape_hpc/sweep/report.py)."""

from __future__ import annotations

import sys
from typing import Any

from landscape_hpc.cli import hydra_command
from landscape_hpc.config import MPOConfig


def _command(cfg: MPOConfig, comm: Any) -> None:
    from landscape_hpc.sweep.run import run_sweep

    path = run_sweep(cfg, comm)
    if path is not None:
        print(f"sweep file: {path}", flush=True)


main = hydra_command("sweep", _command)


def run() -> None:
    """`landscape-sweep [overrides]` or `landscape-sweep report <path>` (the console command)."""
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        from landscape_hpc.sweep.report import main as report_main

        report_main(sys.argv[2:])
    else:
        main()


if __name__ == "__main__":
    run()
