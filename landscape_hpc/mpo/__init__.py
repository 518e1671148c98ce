"""Multi-point optimisation (Skorokhodov & Burtsev 2019, "Loss Landscape Sightseeing with
Multi-Point Optimization"): a learned plane of H×W networks whose loss draws a pattern.

`patterns` (which cells are low-loss), `plane` (eq. 1–2 and the BN re-parametrisation),
`plane_init` (how the plane starts: fresh or Xavier up and right), `objective` (eq. 3, batched
over cells), `convergence` (held-out checks, history, stop rule), `fit` (training loop,
checkpoints), `job` (fit, evaluate, write: the one code path under the command and
`lh.fit_mpo`), `command` (the `python -m landscape_hpc.mpo` app), `figures` (PNGs).
"""

from landscape_hpc.mpo.objective import objective_batched, objective_loop
from landscape_hpc.mpo.patterns import builtin_mask, image_mask, make_mask, random_mask
from landscape_hpc.mpo.plane import Plane, orthogonalize

__all__ = [
    "Plane",
    "builtin_mask",
    "image_mask",
    "make_mask",
    "objective_batched",
    "objective_loop",
    "orthogonalize",
    "random_mask",
]
