#!/usr/bin/env bash
# Idempotent setup from a fresh Debian machine (as root): OpenMPI, parallel HDF5, and a virtual
# environment at .venv with PyTorch, mpi4py, h5py built against parallel HDF5, Hydra, submitit.
# A second run with everything in place takes seconds.
# (The SLURM packages for the local test cluster come with scripts/slurm_local.sh up.)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv="$root/.venv"
py="$venv/bin/python"
stamp="$venv/.setup-ok"

log() { printf '[setup] %s\n' "$*"; }

apt_packages=(openmpi-bin libopenmpi-dev libhdf5-openmpi-dev pkg-config)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing system packages: ${missing[*]}"
    log "install them (or load your cluster's MPI/HDF5 modules) and re-run; see README 'Install on a cluster'"
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Fast path: everything installed and the package files unchanged since the last good run.
if [ -f "$stamp" ] && [ "$stamp" -nt setup.cfg ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup.sh ] \
   && [ "$stamp" -nt constraints.txt ] \
   && "$py" -c 'import h5py, sys; sys.exit(0 if h5py.get_config().mpi else 1)' 2>/dev/null; then
  log "environment ready ($venv)"
  exit 0
fi

[ -x "$py" ] || { log "creating $venv"; python3 -m venv "$venv"; }
# pip -q still warns about every local index folder that lacks a package: keep those out.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# Every install is held to the exact versions of constraints.txt (what the tests were run with).
pip() { quiet "$py" -m pip --disable-pip-version-check -q "$@" -c "$root/constraints.txt"; }

pip install --upgrade pip wheel setuptools
pip install torch torchvision
pip install mpi4py cython pkgconfig numpy
if ! "$py" -c 'import h5py, sys; sys.exit(0 if h5py.get_config().mpi else 1)' 2>/dev/null; then
  log "building h5py against parallel HDF5 (a minute or two)"
  "$py" -m pip uninstall -y -q h5py >/dev/null 2>&1 || true
  HDF5_MPI=ON CC=mpicc HDF5_PKGCONFIG_NAME=hdf5-openmpi \
    quiet "$py" -m pip --disable-pip-version-check -q install --no-binary=h5py --no-build-isolation --no-cache-dir \
    -c "$root/constraints.txt" h5py
fi
# the package's requirements, then the test tools ([dev] extra: pytest, ruff, scipy, xarray,
# nbclient + ipykernel for the notebook, ...) and mpi4py ([mpi] extra: the parallel h5py is
# built against it)
pip install hydra-core hydra-submitit-launcher submitit matplotlib scikit-learn tqdm pyyaml meshio xarray
pip install --no-build-isolation -e ".[dev,mpi,bench,hf]"

if ! "$py" -c 'import h5py, sys; sys.exit(0 if h5py.get_config().mpi else 1)'; then
  log "ERROR: h5py was built without MPI (h5py.get_config().mpi is False)."
  log "Check that libhdf5-openmpi-dev is installed and pkg-config finds hdf5-openmpi."
  exit 1
fi
"$py" -c 'import torch, torchvision, mpi4py, h5py, hydra, submitit; print("[setup] torch", torch.__version__, "h5py", h5py.__version__, "mpi", h5py.get_config().mpi)'
touch "$stamp"
log "environment ready ($venv)"
