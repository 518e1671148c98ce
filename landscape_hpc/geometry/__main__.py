"""`python -m landscape_hpc.geometry <experiment> [overrides]`: runs one geometry experiment."""

from __future__ import annotations

import importlib
import sys

from landscape_hpc.errors import USER_ERROR_EXIT
from landscape_hpc.geometry import EXPERIMENTS


def usage() -> str:
    width = max(map(len, EXPERIMENTS))
    lines = [f"  {name:<{width}}  {e.what}" for name, e in EXPERIMENTS.items()]
    return (
        "usage: python -m landscape_hpc.geometry <experiment> [key=value ...]\n"
        "experiments (config in conf/geometry/<experiment>.yaml):\n" + "\n".join(lines)
    )


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else USER_ERROR_EXIT)
    name = argv[1]
    if name not in EXPERIMENTS:
        print(f"error: unknown experiment {name!r}\n{usage()}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    del argv[1]  # the rest is Hydra's command line
    importlib.import_module(f"landscape_hpc.geometry.{EXPERIMENTS[name].module}").main()


if __name__ == "__main__":
    main(sys.argv)
