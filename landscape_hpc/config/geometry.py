"""Landscape geometry (`python -m landscape_hpc.geometry <experiment>`): one schema per
experiment, stored as `<experiment>_schema` for conf/geometry/<experiment>.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from landscape_hpc.config.common import DatasetConfig, EngineConfig, ModelConfig


@dataclass
class HyperplaneConfig:
    # optimiser of each point inside its hyperplane: adam or sgd (with momentum)
    optimizer: str = "adam"
    # learning rate
    lr: float = 1e-3
    # SGD momentum
    momentum: float = 0.9
    # optimisation steps per point
    steps: int = 300
    # training samples per step; null = the whole training split at every step
    batch_size: Optional[int] = 128


@dataclass
class ShortDirsConfig:
    """Short directions (Fort & Jastrzebski 2019, fig. 4): at every optimised point of a tunnel
    or connector, at the same points of the linear path or simplex and at the optima, the
    distance along random unit directions at which the loss first exceeds the point's own loss
    + threshold; a direction is short when that distance is below `short`."""

    # random unit directions per point (the same directions at every point); 0 = off: each
    # direction costs n_distances evaluations at every point, linear and optimised
    n_directions: int = 0
    # largest distance along a direction (Euclidean, in weight space); a direction whose loss
    # stays below the level up to here has distance ≥ r_max (crossed = 0)
    r_max: float = 20.0
    # distances 0..r_max evaluated along each direction (41: steps of 0.5 with r_max = 20)
    n_distances: int = 41
    # the level a direction must cross: the point's own loss + threshold (as width's default)
    threshold: float = 1.0
    # a direction is short when it crosses the level below this distance (0 < short ≤ r_max).
    # 10 = half of r_max: the default mlp's optima on digits cross 1 nat higher at 10.5–18
    # (median 14, the width experiment's 16.8 ± 1.8), so a short direction is clearly steeper
    # than a typical direction at an optimum; scale it with r_max for other models
    short: float = 10.0
    # how the radius is set, before any point is counted: fixed (`short`) or linear_centre (the
    # `quantile` of the distances at the linear point nearest the optima's centre: the tunnel's
    # t nearest 0.5), so the rule is stated in advance rather than tuned to the counts
    radius: str = "fixed"
    # linear_centre's quantile of the distances there (0.5: half its directions are short)
    quantile: float = 0.5
    # split whose loss the directions measure
    split: str = "train"
    # seed of the directions (direction j uses an independent stream of it)
    seed: int = 0


@dataclass
class HullConfig:
    """The keys the tunnel and connector experiments share (each adds its own after them)."""

    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # the optima: checkpoints of one architecture (the one model=... builds); tunnel: two,
    # connector: m ≥ 2
    optima: list[str] = MISSING
    hyperplane: HyperplaneConfig = field(default_factory=HyperplaneConfig)
    # splits evaluated at the points (the optimisation always uses train)
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    # evaluation; engine.loss is also the loss the points are optimised on
    engine: EngineConfig = field(default_factory=EngineConfig)
    # positions (tunnel) or grid points (connector) per evaluation task handed to a worker
    # (fixed, so results do not depend on the number of ranks)
    chunk_points: int = 16
    # seed of the minibatch order of every point (point i uses an independent stream of it)
    seed: int = 0
    # auto (cuda when present, else cpu), cpu, cuda, cuda:1, ...
    device: str = "auto"
    # output folder of the experiment's CSV, .pt and PNG files
    out_dir: str = "${hydra:runtime.output_dir}"
    # write the experiment's PNG (tunnel.png, connector.png; short_dirs.png with short_dirs)
    plot: bool = True
    # short directions at the points (off by default: short_dirs.n_directions=0)
    short_dirs: ShortDirsConfig = field(default_factory=ShortDirsConfig)


@dataclass
class TunnelConfig(HullConfig):
    """HullConfig's keys (optima: exactly two), then the tunnel's own."""

    # segments of the linear path; its n_segments − 1 inner points are optimised
    n_segments: int = 8
    # positions t in [0, 1] where the linear path and the tunnel are evaluated (plus the points)
    n_dense: int = 41


@dataclass
class ConnectorConfig(HullConfig):
    """HullConfig's keys (optima: m ≥ 2), then the connector's own."""

    # grid of the simplex: barycentric coordinates in steps of 1/resolution
    resolution: int = 4
    # the connector (the polytope the optimised points span) and the linear simplex are also
    # evaluated on a finer grid, each grid step split this many times (0 = the grid only)
    dense: int = 4


@dataclass
class CurveConfig:
    """A trained curve between two optima (Garipov et al. 2018; geometry/curve.py)."""

    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # the two optima: checkpoints of `model` (model.pt or a state_dict file): [a.pt,b.pt]
    optima: list[str] = MISSING
    # bezier (quadratic Bézier through one bend) or polychain (two segments meeting at the bend)
    kind: str = "bezier"
    # optimiser of the bend: sgd (with momentum, as Garipov et al.) or adam
    optimizer: str = "sgd"
    # learning rate
    lr: float = 0.05
    # SGD momentum
    momentum: float = 0.9
    # L2 penalty on the bend (the optimiser's weight_decay)
    weight_decay: float = 0.0
    # optimiser steps, each at a t ~ U(0, 1) (a resumed run trains up to this many in all)
    steps: int = 500
    # training samples per step; null = the whole training split at every step
    train_batch_size: Optional[int] = 128
    # positions evaluated: [min, max, num] in [0, 1] (with 0 and 1 for the barriers)
    t: list[float] = field(default_factory=lambda: [0.0, 1.0, 21])
    # splits evaluated along both paths (the bend is trained on train)
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    # the evaluation (bn=recompute: BN statistics from the train split at every t, Garipov et
    # al.'s update_bn; eval: moved linearly between the optima's)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(bn="recompute"))
    # steps between checkpoints of the training (out_dir/curve_checkpoint.pt); 0 = none
    checkpoint_every: int = 100
    # seed of the t drawn and of the minibatch order
    seed: int = 0
    # auto, cpu, cuda or cuda:N
    device: str = "auto"
    # where the files go (and the checkpoint a rerun continues from)
    out_dir: str = "${hydra:runtime.output_dir}"
    # write curve.png (loss and accuracy along both paths, the bend's training)
    plot: bool = True
    # also evaluate the plane through θ_a, the bend and θ_b (Garipov et al.'s Figure 1): a
    # plane_num × plane_num grid (plane.h5, and curve_plane.png with plot=true); off by default:
    # plane_num² evaluations (with bn=recompute a BN pass each), e.g. 441 for 21
    plane: bool = False
    # grid points per axis of the plane
    plane_num: int = 21
    # the plane grid's margin around the three points, a fraction of their span per axis
    plane_margin: float = 0.2


@dataclass
class WidthConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # one or more optima (checkpoints of one architecture) to measure and compare
    optima: list[str] = MISSING
    # a name per optimum for the table and the plot; null = the checkpoints' folder names
    labels: Optional[list[str]] = None
    # random rays from each optimum
    n_directions: int = 20
    # largest distance along a ray (units: see `directions`)
    r_max: float = 20.0
    # distances 0..r_max evaluated along each ray
    n_distances: int = 41
    # loss level that ends the tunnel: see threshold_kind
    threshold: float = 1.0
    # above_optimum: level = loss at the optimum + threshold; absolute: level = threshold
    threshold_kind: str = "above_optimum"
    # unit: unit-length Gaussian rays (Euclidean distance); filter: filter-normalised rays
    directions: str = "unit"
    # split whose loss defines the width
    split: str = "train"
    engine: EngineConfig = field(default_factory=EngineConfig)
    # seed of the rays (ray i uses an independent stream of it, the same from every optimum)
    seed: int = 0
    # auto (cuda when present, else cpu), cpu, cuda, cuda:1, ...
    device: str = "auto"
    # output folder of width.csv, width_curves.csv and width.png
    out_dir: str = "${hydra:runtime.output_dir}"
    # write width.png
    plot: bool = True


@dataclass
class WedgeHyperplaneConfig:
    # optimiser of each tunnel point inside its hyperplane: adam or sgd (with momentum)
    optimizer: str = "adam"
    # learning rate (the wedge loss is a distance: its gradient has norm 1 everywhere off it)
    lr: float = 0.01
    # SGD momentum
    momentum: float = 0.9
    # optimisation steps per point
    steps: int = 300


@dataclass
class WedgeConfig:
    # D: dimensions of θ
    dim: int = 40
    # n: dimension of each wedge (free coordinates); the loss is zero on C(D, n) subspaces
    n: int = 30
    # (a) dimensions d of the random hyperplanes; null = 1 .. min(D, 2(D − n) + 2)
    dims: Optional[list[int]] = None
    # (a) training runs per d, each from its own θ0 and hyperplane
    trials: int = 3
    # (a) Adam steps and initial learning rate (cosine decay) of train_in_subspace
    steps: int = 500
    lr: float = 0.05
    # (a) a run succeeds when its final loss is below this
    success_loss: float = 1e-3
    # scale of the random θ0 and of the optima's free coordinates (standard normal × scale)
    init_scale: float = 1.0
    # (b) segments of the linear path between the two optima; the inner points are optimised
    n_segments: int = 8
    # (b) positions where the linear path and the tunnel are evaluated
    n_dense: int = 201
    # (b) how each tunnel point is optimised in its hyperplane
    hyperplane: WedgeHyperplaneConfig = field(default_factory=WedgeHyperplaneConfig)
    # seed of θ0s, hyperplanes and optima (run i uses an independent stream)
    seed: int = 0
    # output folder of the CSV, PNG and checkpoint files
    out_dir: str = "${hydra:runtime.output_dir}"
    # write wedge.png
    plot: bool = True


@dataclass
class IntrinsicDimConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # dimensions d of the random hyperplanes, one training run each
    dims: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100, 200])
    # sparse projection (a few ±1 per parameter) instead of a dense Gaussian one
    sparse: bool = False
    # Adam steps on c (full batch), and the initial learning rate (cosine decay to 0); P has
    # unit-norm columns, so |Δθ| = |Δc|: 0.1 moves the mlp on digits to ~99% train accuracy at
    # d = 200 in 500 steps
    steps: int = 500
    lr: float = 0.1
    # seed of the projections (the same for every d: dense hyperplanes of one seed are nested)
    seed: int = 0
    # ce or mse (softmax vs one-hot); ignored by loss-output models (the wedge)
    loss: str = "ce"
    # samples per forward pass of the full-batch loss (memory only, not the optimisation)
    batch_size: int = 1024
    # loss-output models (the wedge): a run succeeds when its final loss is below this
    threshold: float = 0.05
    # also train every parameter directly (same steps and schedule): the full model's accuracy,
    # whose 90% defines d_int90 (Li et al. 2018)
    baseline: bool = True
    # output folder: results.csv, accuracy_vs_d.png
    out_dir: str = "${hydra:runtime.output_dir}"
    # auto, cpu, cuda, ...
    device: str = "auto"
    # write accuracy_vs_d.png
    plot: bool = True


@dataclass
class HessianConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # surface file (from landscape_hpc.surface) to add max_eig / min_eig maps to; null = one point
    surface: Optional[str] = None
    # surface mode: the surface's checkpoint when it has moved (its SHA-256 must match the file's)
    surface_checkpoint: Optional[str] = None
    # split whose mean loss is differentiated
    split: str = "train"
    # seeded random subset of at most this many samples of the split; null = all of it
    max_samples: Optional[int] = None
    # the most Lanczos iterations (Hessian-vector products) per point. Ritz values lie inside the
    # spectrum: max_eig is a lower bound of λ_max, min_eig an upper bound of λ_min, tightening
    # with more steps (the largest converges first; exact at steps = parameter count)
    lanczos_steps: int = 20
    # stop a point's Lanczos run once both extreme Ritz values move by less than this (relative
    # to the largest) in one step; a run that reaches lanczos_steps first is reported as not
    # converged (warning, CSV, the maps' `lanczos` attribute). 0: always lanczos_steps steps
    # (maps made before this key existed were made so)
    lanczos_tol: float = 1e-3
    # Hutchinson probes for tr H at a point (0 = no trace); not computed over a grid
    trace_samples: int = 100
    # point mode: the k largest eigenpairs by Lanczos with full re-orthogonalisation (0 = none):
    # eigenvalues and residuals ‖Hv − λv‖ in hessian_eigen.csv, eigenvectors (unit norm, over the
    # parameters) in hessian_eigenvectors.h5, a directions file (directions.load= reads the
    # top two as a surface's axes). A run stops once every residual is ≤ lanczos_tol·|λ_1|
    k: int = 0
    # the most Lanczos steps of the top-k run and of each block's run (raised to k when lower;
    # clustered eigenvalues need more)
    eigen_steps: int = 100
    # point mode: the eigenvalue spectral density by stochastic Lanczos quadrature (Ghorbani et
    # al. 2019): hessian_density.csv (grid, density), hessian_slq.csv (the Ritz nodes and
    # weights of every probe), hessian_density.png (log density, as PyHessian's)
    density: bool = False
    # SLQ probes (Rademacher start vectors); their halves' densities give the convergence signal
    n_probes: int = 8
    # Lanczos steps per probe: the quadrature is exact for polynomials of degree < 2·steps
    density_steps: int = 60
    # Gaussian broadening: standard deviation σ as a fraction of the spectrum's width (the
    # nodes' λ_max − λ_min); PyHessian's variance 1e-5·max(1, width) is σ ≈ 0.003·√width
    density_sigma: float = 0.01
    # points of the density's grid (the nodes' span widened by 5σ each side)
    density_bins: int = 1000
    # point mode: per-block curvature (λ_max and trace of each diagonal block H_bb): fnmatch
    # patterns of parameter names, one block each (e.g. [conv*, fc*]); [layers]: one block per
    # module holding parameters; [] = none. hessian_blocks.csv, hessian_blocks.png
    blocks: list[str] = field(default_factory=list)
    # seed of the Lanczos start vector and of the Hutchinson probes
    seed: int = 0
    # point mode: auto (the model's own: lm for gpt_tiny and HF causal LMs, else ce), ce, mse,
    # lm or lm_aligned (surface mode uses the surface's engine.loss)
    loss: str = "auto"
    # compute in float64 (model and data cast): small eigenvalues exact, a few times slower
    double: bool = False
    # arithmetic of the Hessian-vector products, as engine.precision (engine/precision.py): fp32
    # (TF32 off), tf32 (Ampere+ GPUs) or bf16 (autocast); float32 only (not with double=true)
    precision: str = "fp32"
    # samples per forward pass inside a Hessian-vector product (memory only)
    batch_size: int = 1024
    # surface mode: recompute every point, replacing maps made with other settings
    overwrite: bool = False
    # point mode output folder: hessian_point.csv, hessian_ritz.png
    out_dir: str = "${hydra:runtime.output_dir}"
    # auto, cpu, cuda, ...
    device: str = "auto"
    # write the PNG (surface mode: next to the surface file, <stem>_hessian.png)
    plot: bool = True
