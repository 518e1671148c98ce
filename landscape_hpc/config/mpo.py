"""Multi-point optimisation (`python -m landscape_hpc.mpo`) and its BN sweep.

The defaults live here and only here (conf/mpo.yaml selects the model, data set and mask; the
sweep preset conf/experiment/bn_sweep.yaml sets what the paper's BN experiment changes). They
size the default run (digits, mpo_cnn, a 20x20 ring or a 50x50 picture) to minutes on 2 CPU
cores, chosen by measurement (docs/benchmarks.md, "MPO defaults"). The paper's settings, for a
GPU: batch_size=512 cells_per_step=50 lr=3e-4 ce_threshold=2.5 steps=11800 (README).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from landscape_hpc.config.common import DatasetConfig, EngineConfig, ModelConfig


@dataclass
class FitOptions:
    """How a plane is optimised: the MPO keys the training loop reads (mpo/fit.py). MPOConfig
    is these keys plus the model, data, pattern, evaluation and files, so a config is its own
    fit options: nothing is copied between the two."""

    # the most optimisation steps (each: one data batch, cells_per_step cells of each class);
    # with early_stop the fit ends sooner once the held-out gap stops improving (the paper: 100
    # epochs of batch 512 = 11,800 steps)
    steps: int = 5000
    # training samples per step, shared by all sampled cells (the paper: 512)
    batch_size: int = 32
    # cells of each class (low-loss, high-loss) sampled per step (the paper: 50)
    cells_per_step: int = 16
    # high-loss cells count min(CE, ce_threshold) (eq. 3), in nats; the paper's text says 2.5,
    # its code's BN-sweep config (loss-patterns, neg_loss_clip_threshold) 5. Below ln(10) = 2.30
    # the high-loss term is idle while the plane still predicts uniformly, so the plane first
    # learns the data, then carves the pattern (docs/benchmarks.md, "MPO defaults")
    ce_threshold: float = 2.0
    # Adam learning rate (the paper: 3e-4)
    lr: float = 1e-3
    # clip the gradient norm of the plane to this value; null = no clipping (the paper's code
    # clips at 100, grad_clip_threshold)
    grad_clip: Optional[float] = None
    # skip cells whose neighbours are all of their own class (appendix A)
    skip_interior_cells: bool = True
    # seed of the plane's initial vectors (origin, up, right use seed, seed+1, seed+2), batches
    # and cell sampling
    seed: int = 0
    # memory for the stacked cell weights and activations of one training chunk, in MiB
    memory_mb: float = 2048.0
    # save the plane and optimiser every this many steps (0 = only at the end)
    checkpoint_every: int = 100
    # the cells of a step: vmap (one batched forward and backward per chunk of cells) or loop
    # (one per cell; the same objective and gradients). On a CPU vmap is 1.5x faster on 8x8
    # digits, the loop 2.5x faster on 28x28 images (grouped convolutions; docs/benchmarks.md)
    strategy: str = "vmap"
    # check the plane on the held-out set every this many steps (history.csv; the stop rule)
    eval_every: int = 50
    # the validation split: this many samples (at most a fifth of the training split) carved
    # from the training split by a draw seeded by `seed` and left out of every training batch;
    # the held-out checks and the stop rule read only it, never the test split (read by the
    # final evaluation alone). 256: digits' training split of 1,437 keeps 1,181 for the batches
    val_samples: int = 256
    # the held-out set: at most this many samples of the validation split (seeded, fixed for the
    # fit)
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


@dataclass
class MaskConfig:
    # builtin (shape drawn by code), image (a picture) or random; chosen with mask=<kind>
    kind: str = "builtin"
    # builtin: ring, cross, square, smiley, stripes, checkerboard (4×4 squares), corners (an
    # island near each corner), letter_a (an A drawn by hand), noise (unframed random, fill 0.5,
    # seed 0)
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
class MPOConfig(FitOptions):
    """FitOptions' keys (steps, lr, ...), then the problem, the plane, the evaluation and files."""

    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    mask: MaskConfig = MISSING
    # initial plane scale s (learned)
    scale_init: float = 0.1
    # origin (unless model.checkpoint), up and φ_right start as: fresh (three freshly built
    # models, PyTorch's default init, as the paper's code loss-patterns does) or xavier
    # (Xavier-uniform weights, zero biases, BN scale 1)
    plane_init: str = "fresh"
    # evaluate the cells on a seeded subset of at most this many samples per split (BN
    # statistics from the train subset); null = every sample. Training always uses every sample.
    # 400: on digits all 360 test samples, 400 of the training split
    eval_samples: Optional[int] = 400
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
