"""The directions of a surface: the vectors in weight space its grid spans (Li et al. 2018).

maths   random filter-normalised directions and model differences (pure; re-exported here)
pca     PCA directions of a training trajectory, and the trajectory projected onto them
build   the directions a config asks for (random, models, pca, or loaded from a file), the
        same on every MPI rank
"""

from landscape_hpc.directions.maths import (
    DIR_TYPES,
    IGNORES,
    KINDS,
    NORMS,
    direction_keys,
    model_difference,
    normalize_direction,
    normalize_tensor,
    random_basis,
    random_direction,
)

__all__ = [
    "DIR_TYPES",
    "IGNORES",
    "KINDS",
    "NORMS",
    "direction_keys",
    "model_difference",
    "normalize_direction",
    "normalize_tensor",
    "random_basis",
    "random_direction",
]
