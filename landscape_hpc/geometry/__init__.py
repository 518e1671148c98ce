"""Landscape geometry (Fort & Jastrzebski 2019; Li et al. 2018's Hessian maps): one module per
experiment, each a Hydra app with its config in conf/geometry/<experiment>.yaml.

    python -m landscape_hpc.geometry <experiment> [overrides]

Besides the experiments: `app` builds each one's Hydra app (`experiment_main`), `hull` holds the
points of the optima's hull that tunnel and connector share (loading the optima, optimising the
points over the MPI pool, evaluating them), and `hyperplane` the maths of both (no MPI, no files).
"""

#: experiment name -> what it measures (the module landscape_hpc.geometry.<name> runs it)
EXPERIMENTS: dict[str, str] = {
    "wedge": "the n-wedge toy landscape: random-hyperplane training and a tunnel vs the line",
    "subspace": "training in random d-dimensional hyperplanes (intrinsic dimension)",
    "tunnel": "a low-loss tunnel between two optima vs the linear path",
    "connector": "an m-connector in the convex hull of m optima vs the linear simplex",
    "width": "radial tunnel width: loss along random rays from an optimum",
    "hessian": "extreme Hessian eigenvalues (and trace) at a point or over a surface grid",
}
