"""`python -m landscape_hpc.surface`: the directions, the grid and the surface file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from landscape_hpc.config.common import DatasetConfig, EngineConfig, ModelConfig


@dataclass
class DirectionsConfig:
    # random (seeded Gaussian), models (model2 - model, model3 - model), pca (training trajectory),
    # hessian (the top eigenvectors of the training loss's Hessian at the origin: x = v_1, y = v_2;
    # unit norm, so coordinates are distances; their eigenvalues in the file's attributes)
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
    # move only these tensors: fnmatch patterns on state_dict names ("blocks.*.attn.*"), a
    # leading ! excludes ("!tok.*"); empty = every tensor the kind moves
    params: list[str] = field(default_factory=list)
    # reuse the directions of a direction or surface file (ours or loss-landscape's layout)
    load: Optional[str] = None


@dataclass
class GridConfig:
    # x axis as [min, max, num]
    x: list[float] = field(default_factory=lambda: [-1.0, 1.0, 21])
    # y axis as [min, max, num]; null for a 1D surface
    y: Optional[list[float]] = field(default_factory=lambda: [-1.0, 1.0, 21])
    # true: each axis spans where the train loss along its direction first reaches auto_level
    # (auto_range.py), widened by auto_margin of its width a side; x and y give only num
    auto: bool = False
    # plus:<δ> (the origin's loss + δ) or ratio:<k> (the origin's loss × k)
    auto_level: str = "plus:1.0"
    auto_margin: float = 0.1
    # the search's farthest coordinate (a side that never reaches the level ends there)
    auto_max: float = 10.0


@dataclass
class SurfaceConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    directions: DirectionsConfig = field(default_factory=DirectionsConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    # the loss defaults to auto here: the model's own (lm for gpt_tiny and HF causal LMs, else
    # ce; engine/losses.py default_loss), written to the file as the name it resolved to
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(loss="auto"))
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
    # ranks per group evaluating one chunk over disjoint shards of the data (their sums added):
    # the workers (mpirun -n less the master) must be a multiple of it; 1 = every worker alone
    data_parallel: int = 1
    # also write a contour PNG of each computed metric next to the surface file
    plot: bool = True
