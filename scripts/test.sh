#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: set up the environment if needed, start the local
# one-node SLURM cluster and install Chromium for the browser tests (as root), run pytest. Extra
# arguments go to pytest:
#   scripts/test.sh                 # everything
#   scripts/test.sh -k surface -x   # a subset
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  scripts/setup.sh
  # OpenMPI refuses to start as root unless told; tests run mpirun with more ranks than cores.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  if [ "${LANDSCAPE_SLURM:-1}" = 1 ]; then
    # SLURM tests are asked for: a cluster that does not start fails the run (no silent skips)
    if ! scripts/slurm_local.sh up; then
      echo "[test] the local SLURM cluster did not start; LANDSCAPE_SLURM=0 runs without its tests" >&2
      exit 1
    fi
  fi
  if [ "${LANDSCAPE_BROWSER:-1}" = 1 ]; then
    # the HTML figure's tests open it in headless Chromium (Debian's package)
    if ! scripts/browser.sh; then
      echo "[test] Chromium did not install; LANDSCAPE_BROWSER=0 runs without its tests" >&2
      exit 1
    fi
  fi
else
  scripts/setup.sh
fi

# lint first: CI fails on a ruff finding or an unformatted file
.venv/bin/ruff check landscape_hpc tests scripts examples
.venv/bin/ruff format --check landscape_hpc tests scripts examples

export MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
