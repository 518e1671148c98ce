"""Structured configs (Hydra ConfigStore): one dataclass per concern, one comment per field.

YAML files in `conf/` only select and override; the defaults, the types and the meaning of every
key live here. Model and dataset choices (`model=resnet56`, `dataset=cifar10`) are registered
from the registries' own name lists, so a name is known in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class ModelConfig:
    # registry name (mpo_cnn, mpo_cnn6, mpo_cnn_bn, vgg9, resnet20, resnet56_noshort, mlp, ...)
    # or custom
    name: str = MISSING
    # custom only: "package.module.callable" returning an nn.Module
    target: Optional[str] = None
    # keyword arguments passed to the model builder (registry or custom)
    kwargs: dict[str, Any] = field(default_factory=dict)
    # weights to load (state_dict, or a dict holding it under "state_dict" / "model"); None = fresh
    checkpoint: Optional[str] = None
    # allow full unpickling of the checkpoint (only for files you trust)
    trust_checkpoint: bool = False
    # seed of the initial weights when no checkpoint is given
    init_seed: int = 0


@dataclass
class DatasetConfig:
    # digits (embedded), mnist, fashion_mnist, cifar10, synthetic, custom
    name: str = "digits"
    # folder holding torchvision data sets (mnist, fashion_mnist, cifar10)
    root: Optional[str] = None
    # let torchvision download a missing data set into root
    download: bool = False
    # keep a seeded random subset of at most this many samples per split; None = all
    max_samples: Optional[int] = None
    # seed of the digits train/test split, of max_samples subsets and of synthetic tensors
    seed: int = 0
    # digits: fraction of the 1,797 images held out as the test split
    test_fraction: float = 0.2
    # synthetic: shape of one input (C, H, W) or (features,)
    shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    # synthetic: number of classes
    num_classes: int = 10
    # synthetic: samples in the train and test splits
    num_train: int = 1000
    num_test: int = 200
    # custom only: "package.module.callable" returning {split: (inputs, labels) or Dataset}
    target: Optional[str] = None
    # keyword arguments for the custom callable
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class DirectionsConfig:
    # random (seeded Gaussian), models (model2 - model, model3 - model), pca (training trajectory)
    kind: str = "random"
    # seed of the random directions (x uses it, y the next stream)
    seed: int = 0
    # normalisation of random directions: filter, layer, weight, none (pca: unit vectors, unused)
    norm: str = "filter"
    # biasbn: zero direction on 1-D tensors (biases, BN affine and statistics); none: keep them
    ignore: str = "biasbn"
    # weights: parameters only; states: the whole state_dict, BN running statistics included
    dir_type: str = "weights"
    # use the x direction as the y direction as well
    same_dir: bool = False
    # kind=models: checkpoint giving x = model2 - model
    model2: Optional[str] = None
    # kind=models: checkpoint giving y = model3 - model (2D plane through three nets)
    model3: Optional[str] = None
    # kind=pca: folder or glob of training checkpoints (a train run's folder: its checkpoints/);
    # the origin is model.checkpoint, or the last checkpoint of the trajectory when not given
    trajectory: Optional[str] = None
    # kind=pca: how checkpoints are placed in the plane: cos (scalar projection on each
    # direction, as loss-landscape) or lstsq (least squares in the plane)
    projection: str = "cos"
    # reuse the directions of a direction or surface file (ours or loss-landscape's layout)
    load: Optional[str] = None


@dataclass
class GridConfig:
    # x axis as [min, max, num]
    x: list[float] = field(default_factory=lambda: [-1.0, 1.0, 21])
    # y axis as [min, max, num]; null for a 1D surface
    y: Optional[list[float]] = field(default_factory=lambda: [-1.0, 1.0, 21])


@dataclass
class EngineConfig:
    # samples per forward pass
    batch_size: int = 256
    # memory the engine may use for stacked weights and activations of a chunk of points, in MiB
    memory_mb: float = 2048.0
    # BN statistics at each point: eval (the model's running statistics) or recompute (train data)
    bn: str = "eval"
    # ce (cross-entropy) or mse (softmax vs one-hot, as loss-landscape)
    loss: str = "ce"
    # auto, vmap (K points per batched forward) or sequential (one point at a time, whole batch)
    strategy: str = "auto"


@dataclass
class SurfaceConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    directions: DirectionsConfig = field(default_factory=DirectionsConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    # splits to evaluate at every point
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    # surface file (HDF5); relative paths are relative to the current directory
    out: str = "${hydra:runtime.output_dir}/surface.h5"
    # replace an existing surface file made for another grid, model or directions
    overwrite: bool = False
    # auto (cuda when present, else cpu), cpu, cuda, cuda:1, ...
    device: str = "auto"
    # surface file writes: auto (mpio when h5py has MPI, else gather), mpio, gather
    io: str = "auto"
    # grid points per work chunk handed to a worker; None = chosen from the grid size and world
    chunk_points: Optional[int] = None
    # also write a contour PNG of each computed metric next to the surface file
    plot: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # sgd (with momentum) or adam
    optimizer: str = "sgd"
    # learning rate
    lr: float = 0.1
    # SGD momentum
    momentum: float = 0.9
    # L2 weight decay
    weight_decay: float = 5e-4
    # epochs after which the learning rate is multiplied by lr_gamma
    lr_drops: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    # samples per optimisation step
    batch_size: int = 128
    # passes over the training split
    epochs: int = 10
    # seed of initial weights (unless model.init_seed differs), shuffling and dropout
    seed: int = 0
    # save a checkpoint every this many epochs (0 = only the final one)
    save_every: int = 1
    # folder for checkpoints/epoch_XXXX.pt and model.pt
    out_dir: str = "${hydra:runtime.output_dir}"
    # auto, cpu, cuda, ...
    device: str = "auto"


@dataclass
class MaskConfig:
    # builtin (shape drawn by code), image (a picture) or random; chosen with mask=<kind>
    kind: str = "builtin"
    # builtin: ring, cross, square, smiley, stripes
    name: str = "ring"
    # cells of the pattern: n for n×n, or [H, W]
    size: Any = 20
    # image: PNG or JPG file (grayscale, colour or with alpha; transparency counts as white)
    path: Optional[str] = None
    # image: brightness in [0, 1] below which a cell is low-loss, after area downsampling
    threshold: float = 0.5
    # image: light pixels are low-loss instead of dark ones
    invert: bool = False
    # random: probability that a cell is low-loss, in (0, 1)
    fill_prob: float = 0.5
    # random: seed of the pattern (with size, fill_prob and frame the only things it depends on)
    seed: int = 0
    # random: the paper code's layout (loss-patterns): high-loss outer ring, low-loss frame at
    # rows/columns 1 and -2, random interior; false = every cell drawn (needs size >= 4)
    frame: bool = False


@dataclass
class SweepConfig:
    # the nets compared (registry names); every net sees the same masks. The default pair is the
    # paper's: one six-conv net without and with BN (appendix B)
    models: list[str] = field(default_factory=lambda: ["mpo_cnn6", "mpo_cnn_bn"])
    # fill probabilities of the random masks, each in (0, 1)
    fill_probs: list[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    )
    # seeds: of the mask (mask.seed), the plane's initial vectors and the batches (seed)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    # python -m landscape_hpc.sweep: the shared sweep file (HDF5, one group per job)
    file: str = "${out_dir}/sweep.h5"
    # sweep file writes: auto (mpio when h5py has MPI, else gather), mpio, gather
    io: str = "auto"
    # run failed (diverged) jobs again on a re-run instead of keeping their failure
    retry_failed: bool = False


@dataclass
class MPOConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    mask: MaskConfig = MISSING
    # the most optimisation steps (each: one data batch, cells_per_step cells of each class);
    # with early_stop the fit ends sooner once the held-out gap stops improving
    steps: int = 2000
    # training samples per step, shared by all sampled cells
    batch_size: int = 512
    # cells of each class (low-loss, high-loss) sampled per step
    cells_per_step: int = 50
    # high-loss cells count min(CE, ce_threshold) (eq. 3), in nats; the paper's text says 2.5,
    # its code's BN-sweep config (loss-patterns, neg_loss_clip_threshold) 5
    ce_threshold: float = 2.5
    # Adam learning rate
    lr: float = 3e-4
    # clip the gradient norm of the plane to this value; null = no clipping (the paper's code
    # clips at 100, grad_clip_threshold)
    grad_clip: Optional[float] = None
    # initial plane scale s (learned)
    scale_init: float = 0.1
    # origin (unless model.checkpoint), up and φ_right start as: fresh (three freshly built
    # models, PyTorch's default init, as the paper's code loss-patterns does) or xavier
    # (Xavier-uniform weights, zero biases, BN scale 1)
    plane_init: str = "fresh"
    # skip cells whose neighbours are all of their own class (appendix A)
    skip_interior_cells: bool = True
    # seed of the plane's initial vectors (origin, up, right use seed, seed+1, seed+2), batches
    # and cell sampling
    seed: int = 0
    # memory for the stacked cell weights and activations of one training chunk, in MiB
    memory_mb: float = 2048.0
    # the cells of a step: vmap (one batched forward and backward per chunk of cells) or loop
    # (one per cell; the same objective and gradients). On a CPU vmap is 1.5x faster on 8x8
    # digits, the loop 2.5x faster on 28x28 images (grouped convolutions; docs/benchmarks.md)
    strategy: str = "vmap"
    # save the plane and optimiser every this many steps (0 = only at the end)
    checkpoint_every: int = 100
    # check the plane on the held-out set every this many steps (history.csv; the stop rule)
    eval_every: int = 50
    # the held-out set: at most this many samples of the test split (seeded, fixed for the fit)
    heldout_samples: int = 256
    # ... and at most this many cells of each class, drawn from the trained cells and from all
    heldout_cells: int = 32
    # end the fit once converged: the held-out gap over trained cells of the last `patience`
    # checks is at most `min_delta` points above the best before them (after min_steps steps)
    early_stop: bool = True
    patience: int = 12
    # in points of accuracy (percent)
    min_delta: float = 1.0
    # no stop before this step: a plane first learns the data with every cell alike (gap ~0)
    min_steps: int = 1000
    # CPU threads of a fit; null = the process's default (the MPI sweep: the cores per rank).
    # Fixed in the sweep preset so every route sums in the same order and gives the same bits
    threads: Optional[int] = None
    # evaluate the cells on a seeded subset of at most this many samples per split (BN
    # statistics from the train subset); null = every sample. Training always uses every sample
    eval_samples: Optional[int] = None
    # evaluation of the fitted plane over every cell; bn=recompute: running statistics
    # recomputed per cell from the training split (consistent with training on batch statistics)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(bn="recompute"))
    # output folder: plane.pt, checkpoint.pt, surface.h5, metrics.json, PNGs
    out_dir: str = "${hydra:runtime.output_dir}"
    # start again instead of resuming a checkpoint / surface made with another config
    overwrite: bool = False
    # auto, cpu, cuda, ...
    device: str = "auto"
    # write the mask, loss and accuracy PNGs
    plot: bool = True
    # the job grid of python -m landscape_hpc.sweep and of the multirun preset
    # +experiment=bn_sweep (a single run ignores it)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def register_configs() -> None:
    """Stores the schemas and one `model=<name>` / `dataset=<name>` option per registry entry."""
    from landscape_hpc.data import DATASET_NAMES
    from landscape_hpc.models import MODEL_KWARGS, MODEL_NAMES

    # ${csv:${sweep.models}} -> "mpo_cnn,mpo_cnn_bn": a list key as a Hydra sweep over its values
    if not OmegaConf.has_resolver("csv"):
        OmegaConf.register_new_resolver("csv", lambda values: ",".join(str(v) for v in values))
    cs = ConfigStore.instance()
    cs.store(name="surface_schema", node=SurfaceConfig)
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="mpo_schema", node=MPOConfig)
    for kind in ("builtin", "image", "random"):
        size = {"builtin": 20, "image": 50, "random": 30}[kind]
        cs.store(group="mask", name=kind, node=MaskConfig(kind=kind, size=size))
    for name in MODEL_NAMES:
        kwargs = dict(MODEL_KWARGS.get(name, {}))
        cs.store(group="model", name=name, node=ModelConfig(name=name, kwargs=kwargs))
    for name in DATASET_NAMES:
        cs.store(group="dataset", name=name, node=DatasetConfig(name=name))
