#!/usr/bin/env bash
# The main job on the embedded default, no downloads: train a small CNN (mpo_cnn) on scikit-learn's
# digits unless a checkpoint is given, then compute a 2D filter-normalised train+test loss surface
# around it, write the surface file and contour PNGs, and say where they are.
#   scripts/demo.sh                              # train, then a 21x21 surface
#   CHECKPOINT=path/to/model.pt scripts/demo.sh  # surface around your checkpoint
#   scripts/demo.sh grid.x=[-1,1,41] grid.y=[-1,1,41]   # extra surface overrides
#   DEMO_TRAIN_ARGS="epochs=2" scripts/demo.sh           # extra training overrides
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=${DEMO_OUT:-runs/demo}
py=.venv/bin/python
checkpoint=${CHECKPOINT:-}

if [ -z "$checkpoint" ]; then
  checkpoint="$out/train/model.pt"
  if [ ! -f "$checkpoint" ]; then
    echo "[demo] training mpo_cnn on digits -> $checkpoint"
    # shellcheck disable=SC2086  # DEMO_TRAIN_ARGS is a list of overrides
    "$py" -m landscape_hpc.train model=mpo_cnn dataset=digits hydra.run.dir="$out/train" \
      ${DEMO_TRAIN_ARGS:-}
  fi
fi

echo "[demo] 2D loss surface around $checkpoint"
"$py" -m landscape_hpc.surface model=mpo_cnn dataset=digits model.checkpoint="$checkpoint" \
  grid.x=[-1,1,21] grid.y=[-1,1,21] hydra.run.dir="$out/surface" out="$out/surface/surface.h5" "$@"

echo
echo "[demo] surface file: $out/surface/surface.h5"
echo "[demo] contour plots:"
ls -1 "$out"/surface/*.png | sed 's/^/  /'
