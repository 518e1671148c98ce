"""What every geometry experiment shares: its YAML in conf/geometry/<name>.yaml over its schema
(config.SCHEMAS), started as every command is (cli.hydra_command), and a report at the end. An
experiment module supplies only its command:

    main = experiment_main("tunnel", _command)

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

from landscape_hpc.cli import CONF_DIR, hydra_command


@dataclass
class Report:
    """What rank 0 tells the user at the end of a command: a summary (printed), the files written
    (logged), and `then`, called last: a check that may still end the run with a UserError once
    everything is written (width: optima where no ray crosses the level)."""

    summary: str
    files: list[Path]
    then: Optional[Callable[[], None]] = None


Command = Callable[[Any, Any], Optional[Report]]


def experiment_main(name: str, command: Command) -> Callable[[], None]:
    """The `main()` of the Hydra app for conf/geometry/<name>.yaml (schema: config.SCHEMAS):
    `command(cfg, comm)` on every rank, and rank 0's report printed and logged (under the
    command's module logger)."""
    log = logging.getLogger(command.__module__)

    def run(cfg: Any, comm: Any) -> None:
        report = command(cfg, comm)
        if report is None:  # a worker rank: rank 0 reports
            return
        print(report.summary)
        for f in report.files:
            log.info("wrote %s", f)
        if report.then is not None:
            report.then()

    # Hydra names the job (and its <job>.log) after the task's module: the experiment's
    run.__module__ = command.__module__
    main = hydra_command(name, run, config_dir=CONF_DIR / "geometry")
    main.__doc__ = f"`python -m landscape_hpc.geometry {name} [overrides]` (the dispatcher)."
    return main
