"""Tunnels between trained nets from Python (Fort & Jastrzebski 2019, sec. 4.2-4.4): the optima
are nn.Modules (or state dicts) in memory, the data tensors.

    import landscape_hpc as lh
    t = lh.tunnel([net_a, net_b], data, n_segments=8, steps=300)    # a low-loss tunnel
    c = lh.connector([net_a, net_b, net_c], data, resolution=4)     # an m-connector
    w = lh.tunnel_width([net_a, net_b], data, n_directions=20)      # rays from each optimum

Each runs the command's core (geometry/tunnel.py `tunnel_between`, connector.py `connect`,
width.py `widths_at`) on the optima built here instead of loaded from checkpoints, and returns
its result object. Keyword arguments are named like the command's config keys without their
section (hyperplane.lr is lr, engine.strategy is strategy); where two sections share a key the
engine keeps the bare name (batch_size: samples per forward) and the other is prefixed
(hyperplane_batch_size: training samples per optimisation step).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import torch
from torch import nn

from landscape_hpc import params
from landscape_hpc.api.options import engine_options, model_device, resident_splits
from landscape_hpc.config import (
    ConnectorConfig,
    DatasetConfig,
    EngineConfig,
    HyperplaneConfig,
    ModelConfig,
    ShortDirsConfig,
    TunnelConfig,
    WidthConfig,
)
from landscape_hpc.engine.evaluate import check_engine
from landscape_hpc.errors import UserError, check_seed
from landscape_hpc.files.checkpoint import load_into
from landscape_hpc.geometry.connector import ConnectorResult, connect
from landscape_hpc.geometry.hull import Optima
from landscape_hpc.geometry.hyperplane import check_hyperplane
from landscape_hpc.geometry.tunnel import TunnelResult, tunnel_between
from landscape_hpc.geometry.width import WidthResult, widths_at
from landscape_hpc.problem import Problem

Device = Optional[Union[str, torch.device]]


def as_optima(optima: Sequence[Any], data: Any, device: Device, need: Sequence[str]) -> Optima:
    """The optima as the geometry cores take them: a copy of optima[0] (the template, in eval
    mode, on `device` or optima[0]'s device) and every optimum's full state loaded through it
    (one architecture, checked); the data's splits as tensors there (`need`: the splits the
    experiment cannot do without)."""
    if isinstance(optima, (nn.Module, Mapping)) or not isinstance(optima, Sequence) or not optima:
        raise UserError(
            "optima= must be a list of trained nets of one architecture: nn.Modules, or state "
            "dicts after the first, e.g. optima=[net_a, net_b]"
        )
    if not isinstance(optima[0], nn.Module):
        raise UserError(
            f"optima[0] is a {type(optima[0]).__name__}; it must be an nn.Module: the template "
            "every optimum's weights are evaluated through (the others may be state dicts)"
        )
    target = model_device(optima[0], device)
    template = copy.deepcopy(optima[0]).to(target)  # the caller's nets are never changed
    reference = template.state_dict()
    states = []
    for i, optimum in enumerate(optima):
        state = optimum.state_dict() if isinstance(optimum, nn.Module) else optimum
        if not isinstance(state, Mapping):
            raise UserError(
                f"optima[{i}] is a {type(optimum).__name__}; pass an nn.Module or its state_dict()"
            )
        missing, unexpected, shapes = params.layout_diff(reference, state, params.OPTIONAL_SUFFIXES)
        if missing or unexpected or shapes:
            raise UserError(
                f"optima[{i}] is not of optima[0]'s architecture (missing keys {missing[:3]}, "
                f"unexpected {unexpected[:3]}, shapes {[s[0] for s in shapes[:3]]}); pass nets "
                "of one architecture"
            )
        load_into(template, state, f"optima[{i}]")
        states.append({k: v.detach().clone() for k, v in template.state_dict().items()})
    template.eval()
    splits = resident_splits(data, target, None)
    absent = [s for s in need if s not in splits]
    if absent:
        raise UserError(
            f"data has no {absent[0]!r} split ({', '.join(splits)}); this experiment needs "
            f"{list(need)}: pass data={{{', '.join(repr(s) + ': (x, y)' for s in need)}, ...}}"
        )
    labels = next(iter(splits.values())).labels
    classes = int(labels.max()) + 1 if labels.numel() and not labels.is_floating_point() else 0
    problem = Problem(template, splits, classes, target)
    return Optima(problem, states, [f"optima[{i}]" for i in range(len(optima))])


def _engine(given: Mapping[str, Any]) -> EngineConfig:
    """engine.* from the keyword arguments named like its keys (loss, bn, batch_size, ...)."""
    options = engine_options(given["batch_size"], given["memory_mb"], given["bn"], given["loss"],
                             given["strategy"], given["fold_bn"])  # fmt: skip
    check_engine(options, key="")
    return options


def _hyperplane(given: Mapping[str, Any]) -> HyperplaneConfig:
    """hyperplane.* from the keyword arguments (its batch_size is hyperplane_batch_size)."""
    batch_size = given["hyperplane_batch_size"]
    node = HyperplaneConfig(given["optimizer"], given["lr"], given["momentum"], given["steps"],
                            batch_size)  # fmt: skip
    check_hyperplane(node, prefix="")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"hyperplane_batch_size={batch_size} must be at least 1 (or None)")
    return node


def _short_dirs(options: Optional[Mapping[str, Any]]) -> ShortDirsConfig:
    """short_dirs={...}: the short_dirs.* keys of the command (None: off)."""
    options = dict(options or {})
    known = set(ShortDirsConfig.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"short_dirs= has unknown keys {unknown}; the keys are {sorted(known)}")
    return ShortDirsConfig(**options)


def _hull_keys(optima: Optima, given: dict[str, Any]) -> dict[str, Any]:
    """The keys of a HullConfig from the keyword arguments tunnel and connector share."""
    splits = given["splits"]
    return dict(
        model=ModelConfig(name="library"),
        dataset=DatasetConfig(),
        optima=list(optima.names),
        hyperplane=_hyperplane(given),
        splits=list(optima.problem.splits) if splits is None else list(splits),
        engine=_engine(given),
        chunk_points=given["chunk_points"],
        seed=given["seed"],
        short_dirs=_short_dirs(given["short_dirs"]),
        plot=False,
    )


_HULL_ARGS = """splits: the splits evaluated at the points (default: all of `data`; the points
            are always optimised on "train").
        optimizer: adam or sgd (with momentum): how each point is optimised in its hyperplane.
        lr: its learning rate.
        momentum: SGD's momentum.
        steps: optimisation steps per point.
        hyperplane_batch_size: training samples per step (None: the whole train split).
        loss: ce or mse: the loss evaluated and optimised.
        bn: eval (the optima's running statistics, moved along linearly) or recompute (from
            the train split at every point).
        batch_size: samples per forward pass of the evaluation (memory only).
        strategy: auto, vmap, sequential or threads (the engine; results agree to rounding).
        memory_mb: memory the vmap strategy may use for a chunk of points, in MiB.
        fold_bn: sequential/threads with bn=eval fold conv → BN pairs per point.
        chunk_points: points per evaluation task (fixed: results do not depend on the ranks).
        seed: seed of every point's minibatch order (point i: an independent stream).
        short_dirs: None (off), or the command's short_dirs.* keys as a dict: n_directions,
            r_max, n_distances, threshold, short, split, seed (random directions counted short
            at the optima and at the points, Fort & Jastrzebski fig. 4).
        device: where to compute (default: optima[0]'s device); data are moved there.
        comm: an MPI communicator (default: the world; one point per task of the pool)."""


def _shared_args(function: Any) -> Any:
    """Writes the arguments tunnel and connector share into the function's Args section."""
    function.__doc__ = function.__doc__.replace("{hull_args}", _HULL_ARGS)
    return function


@_shared_args
def tunnel(
    optima: Sequence[Any],
    data: Any,
    *,
    n_segments: int = 8,
    n_dense: int = 41,
    splits: Optional[Sequence[str]] = None,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    steps: int = 300,
    hyperplane_batch_size: Optional[int] = 128,
    loss: str = "ce",
    bn: str = "eval",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    fold_bn: bool = True,
    chunk_points: int = 16,
    seed: int = 0,
    short_dirs: Optional[Mapping[str, Any]] = None,
    device: Device = None,
    comm: Any = None,
) -> Optional[TunnelResult]:
    """A low-loss tunnel between two trained nets (Fort & Jastrzebski 2019, sec. 4.2): the
    straight path θ_a → θ_b cut into `n_segments` segments, each inner point optimised inside
    the hyperplane through it normal to the path, the optimised points joined by straight
    lines. The `tunnel` command's core (geometry/tunnel.py) on nets in memory.

    Args:
        optima: two nets of one architecture: [net_a, net_b] (nn.Modules; the second may be a
            state dict). Not modified; a copy of optima[0] evaluates both.
        data: {"train": (inputs, labels), "test": ...} or one (inputs, labels) pair (the split
            "train"), as tensors.
        n_segments: segments of the linear path; its n_segments − 1 inner points are optimised.
        n_dense: positions t in [0, 1] where both paths are evaluated (plus the points).
        {hull_args}

    Returns:
        On rank 0 a TunnelResult: t (Q,) the positions evaluated, points (K + 2,) those of the
        optimised points (ends included), metrics {split: {"linear" | "tunnel": (loss (Q,),
        acc (Q,))}}, alignment (K, K) the cosine matrix of the deviations, deviations (K, P)
        (flat over `keys`, the parameter names), opt_losses (K, 2) each point's first and last
        minibatch loss, short_dirs (or None). None on the other ranks.
    """
    check_seed(seed, "seed")
    if isinstance(optima, Sequence) and not isinstance(optima, Mapping) and len(optima) != 2:
        raise UserError(
            f"optima= holds {len(optima)} nets; a tunnel joins exactly two: optima=[net_a, "
            "net_b] (for three or more use lh.connector)"
        )
    built = as_optima(optima, data, device, ["train"])
    keys = _hull_keys(built, locals())
    return tunnel_between(built, TunnelConfig(**keys, n_segments=n_segments, n_dense=n_dense), comm)


@_shared_args
def connector(
    optima: Sequence[Any],
    data: Any,
    *,
    resolution: int = 4,
    dense: int = 4,
    splits: Optional[Sequence[str]] = None,
    optimizer: str = "adam",
    lr: float = 1e-3,
    momentum: float = 0.9,
    steps: int = 300,
    hyperplane_batch_size: Optional[int] = 128,
    loss: str = "ce",
    bn: str = "eval",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    fold_bn: bool = True,
    chunk_points: int = 16,
    seed: int = 0,
    short_dirs: Optional[Mapping[str, Any]] = None,
    device: Device = None,
    comm: Any = None,
) -> Optional[ConnectorResult]:
    """An m-connector of m ≥ 2 trained nets (Fort & Jastrzebski 2019, sec. 4.3): the points of
    the optima's convex hull on the barycentric grid λ = n / resolution, each optimised inside
    the space orthogonal to the hull through it, against the linear simplex Σ λ_j θ_j. The
    `connector` command's core (geometry/connector.py) on nets in memory.

    Args:
        optima: m ≥ 2 nets of one architecture (nn.Modules; after the first, state dicts too).
            Not modified; a copy of optima[0] evaluates them.
        data: {"train": (inputs, labels), "test": ...} or one (inputs, labels) pair, as tensors.
        resolution: the simplex grid's step is 1/resolution.
        dense: the connector and the linear simplex are also evaluated on a grid `dense` times
            finer (0: the grid only).
        {hull_args}

    Returns:
        On rank 0 a ConnectorResult: grid (Q, m) the barycentric grid (the optima first),
        metrics {split: {"linear" | "connector": (loss (Q,), acc (Q,))}}, opt_losses (K, 2),
        dense_grid (N, m) and dense_metrics (the same kinds over the finer grid), short_dirs
        (or None). None on the other ranks.
    """
    check_seed(seed, "seed")
    if isinstance(optima, Sequence) and not isinstance(optima, Mapping) and len(optima) == 1:
        raise UserError(
            "optima= holds 1 net; an m-connector needs m ≥ 2, e.g. optima=[net_a, net_b, net_c]"
        )
    built = as_optima(optima, data, device, ["train"])
    keys = _hull_keys(built, locals())
    return connect(built, ConnectorConfig(**keys, resolution=resolution, dense=dense), comm)


def tunnel_width(
    optima: Sequence[Any],
    data: Any,
    *,
    labels: Optional[Sequence[str]] = None,
    n_directions: int = 20,
    r_max: float = 20.0,
    n_distances: int = 41,
    threshold: float = 1.0,
    threshold_kind: str = "above_optimum",
    directions: str = "unit",
    split: str = "train",
    loss: str = "ce",
    bn: str = "eval",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    fold_bn: bool = True,
    seed: int = 0,
    device: Device = None,
    comm: Any = None,
) -> Optional[WidthResult]:
    """The radial tunnel width around each of one or more trained nets (Fort & Jastrzebski
    2019, sec. 4.4): the loss along random rays θ* + r·d, r in [0, r_max], and the distance
    where it first exceeds the level. The `width` command's core (geometry/width.py).

    Args:
        optima: one or more nets of one architecture (nn.Modules; after the first, state dicts
            too), e.g. trained with different learning rates. Not modified.
        data: {"train": (inputs, labels), ...} or one (inputs, labels) pair, as tensors (a
            "train" split is needed: BN statistics are recomputed from it with bn=recompute).
        labels: a name per optimum (default: optima[0], optima[1], ...).
        n_directions: random rays from each optimum (the same rays from every one).
        r_max: the largest distance along a ray.
        n_distances: distances 0..r_max evaluated along each ray.
        threshold: the level the loss must exceed (see threshold_kind).
        threshold_kind: above_optimum (level = the optimum's loss + threshold) or absolute.
        directions: unit (unit-length Gaussian rays: Euclidean distance) or filter (Li et
            al.'s filter-normalised rays: r counts filter norms of the optimum).
        split: the split whose loss defines the width.
        loss: ce or mse.
        bn: eval or recompute (BN statistics from the train split at every point).
        batch_size: samples per forward pass (memory only).
        strategy: auto, vmap, sequential or threads (the engine).
        memory_mb: memory the vmap strategy may use for a chunk of points, in MiB.
        fold_bn: sequential/threads with bn=eval fold conv → BN pairs per point.
        seed: seed of the rays (ray i: an independent stream, the same from every optimum).
        device: where to compute (default: optima[0]'s device).
        comm: an MPI communicator (default: the world; one ray per task of the pool).

    Returns:
        On rank 0 a WidthResult, per optimum o and ray i: losses and accs (O, n, R) along
        distances (R,), levels (O,), widths and crossed (O, n) (a ray that never crosses has
        width r_max and crossed False), the optima's norms (O,) and the widths as relative
        lengths and angles in degrees (O, n); labels. None on the other ranks.
    """
    check_seed(seed, "seed")
    built = as_optima(optima, data, device, ["train"])  # BN statistics are recomputed from it
    cfg = WidthConfig(
        model=ModelConfig(name="library"),
        dataset=DatasetConfig(),
        optima=list(built.names),
        labels=None if labels is None else [str(x) for x in labels],
        n_directions=n_directions,
        r_max=r_max,
        n_distances=n_distances,
        threshold=threshold,
        threshold_kind=threshold_kind,
        directions=directions,
        split=split,
        engine=_engine(locals()),
        seed=seed,
        plot=False,
    )
    return widths_at(built, cfg, comm)
