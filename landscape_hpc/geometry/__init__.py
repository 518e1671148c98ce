"""Landscape geometry (Fort & Jastrzebski 2019; Li et al. 2018's Hessian maps): one module per
experiment, each a Hydra app with its config in conf/geometry/<experiment>.yaml.

    python -m landscape_hpc.geometry <experiment> [overrides]

The experiments keep their command-line names; EXPERIMENTS says which module runs each one
(`subspace` is intrinsic_dim.py, `hessian` is curvature.py, its kernel curvature_job.py).
Besides the experiments: `app` builds each one's Hydra app (`experiment_main`), `hull` holds
the points of the optima's hull that tunnel and connector share (loading the optima, optimising
the points over the MPI pool, evaluating them), `short_dirs` their option counting short random
directions at the points, `hyperplane` the maths of both (no MPI, no files), and `figures`
every experiment's PNG. Each experiment's core takes objects (optima, a problem, a job), so the
library (landscape_hpc/api/) runs the same code on nets in memory.
"""

from __future__ import annotations

from typing import NamedTuple


class Experiment(NamedTuple):
    """module: landscape_hpc.geometry.<module> runs it (its `main()`); what: what it measures."""

    module: str
    what: str


#: experiment name (the command line's and conf/geometry/<name>.yaml's) -> its module
EXPERIMENTS: dict[str, Experiment] = {
    "wedge": Experiment(
        "wedge", "the n-wedge toy landscape: random-hyperplane training and a tunnel vs the line"
    ),
    "subspace": Experiment(
        "intrinsic_dim", "training in random d-dimensional hyperplanes (intrinsic dimension)"
    ),
    "tunnel": Experiment("tunnel", "a low-loss tunnel between two optima vs the linear path"),
    "connector": Experiment(
        "connector", "an m-connector in the convex hull of m optima vs the linear simplex"
    ),
    "curve": Experiment(
        "curve_command", "a trained curve (Bézier, polychain) between two optima vs the line"
    ),
    "width": Experiment("width", "radial tunnel width: loss along random rays from an optimum"),
    "hessian": Experiment(
        "curvature", "extreme Hessian eigenvalues (and trace) at a point or over a surface grid"
    ),
}
