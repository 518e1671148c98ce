"""`python -m landscape_hpc.geometry <experiment> [overrides]`: runs one geometry experiment."""

from __future__ import annotations

import importlib
import os
import sys

from landscape_hpc.errors import USER_ERROR_EXIT
from landscape_hpc.geometry import EXPERIMENTS


def usage() -> str:
    width = max(map(len, EXPERIMENTS))
    lines = [f"  {name:<{width}}  {e.what}" for name, e in EXPERIMENTS.items()]
    return (
        "usage: landscape-geometry <experiment> [key=value ...]"
        "  (or python -m landscape_hpc.geometry ...)\n"
        "experiments (config in conf/geometry/<experiment>.yaml):\n" + "\n".join(lines)
    )


def _completion(argv: list[str]) -> None:
    """Hydra's tab completion (`-sc install=bash`, `-sc query=bash`) through the dispatcher:
    the experiment's own app completes its keys once the experiment word is on the line (Hydra
    reads the line from COMP_LINE, here without that word); before it, the experiment names."""
    words = os.environ.get("COMP_LINE", "").split(" ")
    name = words[1] if len(words) > 2 and words[1] in EXPERIMENTS else None
    if any(a.startswith("query") for a in argv[2:]):
        if name is None:
            typed = words[1] if len(words) > 1 else ""
            print(" ".join(n for n in EXPERIMENTS if n.startswith(typed)))
            return
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]])
        point = int(os.environ.get("COMP_POINT", len(os.environ["COMP_LINE"])))
        os.environ["COMP_POINT"] = str(max(0, point - len(name) - 1))
    module = EXPERIMENTS[name or next(iter(EXPERIMENTS))].module
    importlib.import_module(f"landscape_hpc.geometry.{module}").main()


def main(argv: list[str]) -> None:
    if len(argv) >= 3 and argv[1] in EXPERIMENTS and argv[2] in ("-sc", "--shell-completion"):
        del argv[1]  # `landscape-geometry hessian -sc ...`: the same as without the name
    if len(argv) >= 2 and argv[1] in ("-sc", "--shell-completion"):
        return _completion(argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else USER_ERROR_EXIT)
    name = argv[1]
    if name not in EXPERIMENTS:
        print(f"error: unknown experiment {name!r}\n{usage()}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    del argv[1]  # the rest is Hydra's command line
    importlib.import_module(f"landscape_hpc.geometry.{EXPERIMENTS[name].module}").main()


def run() -> None:
    """`landscape-geometry <experiment> [overrides]` (the console command)."""
    main(sys.argv)


if __name__ == "__main__":
    run()
