"""The directions a surface config asks for: random (filter-normalised), model differences, PCA
of a training trajectory, or loaded from a direction or surface file; on every MPI rank the same
bits. The config is checked once, by `check_directions`, before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Optional

import numpy as np
from torch import nn

from landscape_hpc import parallel
from landscape_hpc.config import DirectionsConfig, SurfaceConfig
from landscape_hpc.directions import pca
from landscape_hpc.directions.maths import (
    DIR_TYPES,
    IGNORES,
    KINDS,
    NORMS,
    direction_keys,
    model_difference,
    random_basis,
    restrict,
    select_keys,
)
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.files import surface as surface_file
from landscape_hpc.files.checkpoint import load_state_dict_file
from landscape_hpc.files.directions import linked_direction_file, read_directions
from landscape_hpc.files.surface import Trajectory
from landscape_hpc.params import ParamDict

log = logging.getLogger(__name__)

_NEEDS_TRAJECTORY = (
    "directions.kind=pca needs directions.trajectory=<folder or glob of checkpoints>, e.g. the "
    "folder `python -m landscape_hpc.train save_every=1` wrote"
)


def check_directions(cfg: DirectionsConfig, ndim: int) -> None:
    """Every directions key of a surface with `ndim` axes, before any file is read."""
    check_choice("directions.kind", cfg.kind, KINDS)
    check_choice("directions.norm", cfg.norm, NORMS)
    check_choice("directions.ignore", cfg.ignore, IGNORES)
    check_choice("directions.dir_type", cfg.dir_type, DIR_TYPES)
    check_choice("directions.projection", cfg.projection, pca.PROJECTIONS)
    if cfg.load:
        return
    if cfg.kind == "pca":
        if not cfg.trajectory:
            raise UserError(_NEEDS_TRAJECTORY)
        if cfg.same_dir:
            raise UserError(
                "directions.same_dir=true does not apply to directions.kind=pca (y is PC2); "
                "drop it, or use grid.y=null for PC1 only"
            )
    if cfg.kind == "hessian" and cfg.same_dir:
        raise UserError(
            "directions.same_dir=true does not apply to directions.kind=hessian (y is the second "
            "eigenvector); drop it, or use grid.y=null for the top eigenvector only"
        )
    if cfg.kind == "hessian" and cfg.params:
        raise UserError(
            "directions.params does not apply to directions.kind=hessian (its eigenvectors span "
            "every parameter); drop it"
        )
    if cfg.kind == "models":
        for axis, key in enumerate(("directions.model2", "directions.model3")[:ndim]):
            if not getattr(cfg, key.split(".")[1]):
                raise UserError(
                    f"directions.kind=models needs {key}=<checkpoint> for the "
                    f"{'xy'[axis]} axis" + ("; or set grid.y=null for 1D" if axis else "")
                )


def stored(projected: pca.ProjectedTrajectory) -> Trajectory:
    """What the surface file keeps of a projected trajectory."""
    return Trajectory(projected.datasets(), projected.explained_variance_ratio)


def from_stored(trajectory: Trajectory) -> pca.ProjectedTrajectory:
    """The projected trajectory a surface file holds."""
    d = trajectory.datasets
    coords = np.stack([d[a] for a in ("x", "y") if a in d], axis=1)
    return pca.ProjectedTrajectory(
        coords.astype(np.float64),
        d["epoch"].astype(np.int64),
        d["lr"].astype(np.float64),
        np.asarray(trajectory.explained_variance_ratio, np.float64),
    )


def build_basis(
    cfg: DirectionsConfig,
    model: nn.Module,
    origin: ParamDict,
    ndim: int,
    trust_checkpoint: bool = False,
) -> list[ParamDict]:
    """The directions of a surface, as the (checked) directions config asks."""
    if cfg.kind == "pca" and not cfg.load:
        return pca_directions(cfg, model, origin, ndim, trust_checkpoint)[0]
    if cfg.load:
        param_keys = [name for name, _ in model.named_parameters()]
        linked = linked_direction_file(cfg.load)
        if linked is not None:
            note = "directions.load=%s: a loss-landscape surface file; its directions are read "
            log.info(note + "from its dir_file %s", cfg.load, linked)
        basis = read_directions(linked or cfg.load, origin, param_keys)
        if len(basis) < ndim:
            raise UserError(
                f"directions.load={cfg.load} holds {len(basis)} direction(s) but the grid is "
                f"{ndim}D; set grid.y=null or load a file with a y direction"
            )
        return basis[:ndim]
    if cfg.kind == "random":
        keys = direction_keys(model, cfg.dir_type)
        return random_basis(origin, keys, ndim, cfg.seed, cfg.norm, cfg.ignore, cfg.same_dir)
    if cfg.kind == "models":
        targets = [("directions.model2", cfg.model2), ("directions.model3", cfg.model3)][:ndim]
        return [
            model_difference(load_state_dict_file(path, trust_checkpoint, key), origin, path)
            for key, path in targets
        ]
    raise AssertionError(f"directions.kind={cfg.kind} passed check_choice but is not handled")


def pca_directions(
    cfg: DirectionsConfig,
    model: nn.Module,
    origin: ParamDict,
    ndim: int,
    trust_checkpoint: bool = False,
) -> tuple[list[ParamDict], pca.ProjectedTrajectory]:
    """The top `ndim` PCA directions of the checkpoints `cfg.trajectory` around `origin` (the end
    of the run), on the devices of the origin, and the trajectory projected onto them (Li et al.
    2018, sec. 7). The tensors are chosen as for random directions: `dir_type` (parameters or
    the whole state) and `ignore=biasbn` (1-D tensors stay zero)."""
    trajectory = pca.load_trajectory(cfg.trajectory, trust_checkpoint)
    candidates = select_keys(direction_keys(model, cfg.dir_type), cfg.params, "directions.params")
    return pca.trajectory_pca(trajectory, origin, candidates, cfg.ignore, ndim, cfg.projection)


def build_directions(
    comm: Any,
    cfg: DirectionsConfig,
    model: nn.Module,
    origin: ParamDict,
    ndim: int,
    trust_checkpoint: bool = False,
) -> tuple[list[ParamDict], Optional[pca.ProjectedTrajectory]]:
    """The basis on every rank, and the projected trajectory of PCA directions (None otherwise).

    PCA reads the whole trajectory: rank 0 computes it and broadcasts the result, so every rank
    holds the same bits. Directions loaded from a PCA surface file bring its trajectory along."""
    if cfg.kind == "pca" and not cfg.load:
        basis, projected = parallel.on_master(
            comm, lambda: pca_directions(cfg, model, _cpu(origin), ndim, trust_checkpoint)
        )
        return [{k: v.to(origin[k].device) for k, v in d.items()} for d in basis], projected
    basis = build_basis(cfg, model, origin, ndim, trust_checkpoint)
    basis = restrict(basis, list(origin), cfg.params, "directions.params")
    stored = surface_file.read_trajectory(cfg.load) if cfg.load else None
    return basis, None if stored is None else from_stored(stored).first(ndim)


def _cpu(state: ParamDict) -> ParamDict:
    return {k: v.cpu() for k, v in state.items()}


def resolve_origin(cfg: SurfaceConfig) -> SurfaceConfig:
    """kind=pca without model.checkpoint: the origin is the last checkpoint of the trajectory
    (the end of the run; pass model.checkpoint=<run>/model.pt when the run's last epoch is not a
    multiple of save_every). Other configs come back unchanged."""
    d = cfg.directions
    if d.kind != "pca" or d.load or cfg.model.checkpoint or not d.trajectory:
        return cfg
    last = str(pca.find_checkpoints(d.trajectory)[-1])
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint=last))
