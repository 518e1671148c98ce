#!/usr/bin/env bash
# The GPU figures in one call (scripts/bench_gpu.py): device and matmul peaks, the surface engine
# on resnet56 at CIFAR-10's shape, the MPO step of the BN pair, values vs the CPU path.
#   scripts/bench_gpu.sh                # on a GPU: about 5 minutes
#   scripts/bench_gpu.sh --dry-run      # tiny sizes on any machine (CI runs this on its CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" scripts/bench_gpu.py "$@"
