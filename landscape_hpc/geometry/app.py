"""The Hydra plumbing every geometry experiment shares: its schema in the ConfigStore, its YAML in
conf/geometry/<name>.yaml, one output folder for all MPI ranks, and one failing rank ending them
all. An experiment module supplies only its config class and a command:

    main = experiment_main("tunnel", TunnelConfig, _command)

where `_command(cfg, comm)` runs the experiment, writes its files and returns a `Report` on
rank 0 (None on the other ranks); `python -m landscape_hpc.geometry tunnel [overrides]` then
calls `main()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from landscape_hpc import parallel
from landscape_hpc.cli import share_hydra_run_dir
from landscape_hpc.config import register_configs
from landscape_hpc.errors import exit_on_user_error

#: conf/geometry as an absolute path: the dispatcher imports the experiment modules by name, and
#: Hydra would then read a relative config_path as a Python package conf.geometry
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf" / "geometry")


@dataclass
class Report:
    """What rank 0 tells the user at the end of a command: a summary (printed), the files written
    (logged), and `then`, called last: a check that may still end the run with a UserError once
    everything is written (width: optima where no ray crosses the level)."""

    summary: str
    files: list[Path]
    then: Optional[Callable[[], None]] = None


Command = Callable[[Any, Any], Optional[Report]]


def experiment_main(name: str, schema: type, command: Command) -> Callable[[], None]:
    """Registers `schema` as `<name>_schema` (with the model/dataset groups) and returns the
    `main()` of the Hydra app for conf/geometry/<name>.yaml: the config as a `schema` object,
    `command(cfg, comm)` on every rank of the world under `parallel.abort_on_error`, and rank 0's
    report printed and logged (under the command's module logger)."""
    register_configs()
    ConfigStore.instance().store(name=f"{name}_schema", node=schema)
    log = logging.getLogger(command.__module__)

    def app(cfg: DictConfig) -> None:
        typed = OmegaConf.to_object(cfg)
        comm = parallel.world()
        with parallel.abort_on_error(comm):
            report = command(typed, comm)
            if report is None:  # a worker rank: rank 0 reports
                return
            print(report.summary)
            for f in report.files:
                log.info("wrote %s", f)
            if report.then is not None:
                report.then()

    # Hydra names the job (and its <job>.log) after the task function's module: the experiment's
    app.__module__ = command.__module__
    hydra_app = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name=name)(
        exit_on_user_error(app)
    )

    def main() -> None:
        share_hydra_run_dir()
        hydra_app()

    main.__doc__ = f"`python -m landscape_hpc.geometry {name} [overrides]` (the dispatcher)."
    return main
