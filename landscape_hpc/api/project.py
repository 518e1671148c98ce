"""`lh.project`: other training runs' checkpoints placed on the plane of an existing surface
(issue 31: several optimisers' or seeds' paths on one landscape).

    paths = lh.project("pca.h5", runs=["runs/adam", "runs/sgd_seed1"])   # {label: path}
    paths["adam"].coords                        # (n, 2): checkpoint i at origin + Σ c_k·d_k
    lh.plot("pca.h5", kind="html", paths=paths)     # drawn with a legend (PNG: plot --trajectory)

Each checkpoint θ_i is placed as the surface's own PCA path is (directions/pca.py):
(θ_i − origin) projected on the surface's directions (`cos`: the scalar projection on each;
`lstsq`: least squares in their span), so the paths of several runs share one picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from landscape_hpc.directions import pca
from landscape_hpc.errors import UserError, UserTypeError, check_choice
from landscape_hpc.files.checkpoint import file_sha256, load_state_dict_file
from landscape_hpc.files.surface_read import read_attrs, read_basis_arrays

#: the fewest checkpoints a projected path may have
MIN_CHECKPOINTS = 2
Run = Union[str, Path, Sequence[Union[Mapping[str, Tensor], nn.Module]]]


def project(
    source: Any,
    runs: Union[Sequence[Run], Mapping[str, Run]],
    *,
    origin: Any = None,
    projection: str = "cos",
    trust: bool = False,
    key: str = "runs",
) -> dict[str, pca.ProjectedTrajectory]:
    """The checkpoints of other training runs projected on the plane of a surface.

    Args:
        source: a surface Dataset (`lh.surface`, `lh.load`: its directions in attrs["basis"])
            or a surface file's path.
        runs: run folders of `python -m landscape_hpc.train` (their checkpoints/), folders of
            *.pt files or globs, in natural name order, or lists of state dicts / models in
            training order; a dict {label: run} names them (else a folder's name, run<i>).
            Each needs at least 2 checkpoints, of the surface's architecture.
        origin: the surface's centre (an nn.Module or a state dict); None: the checkpoint the
            surface file names (attrs "checkpoint"), refused if it changed since.
        projection: cos or lstsq (as directions.projection).
        trust: load checkpoints with weights_only=False (only files you trust).
        key: the name of `runs` in refusals (the plot command passes --trajectory).

    Returns:
        {label: ProjectedTrajectory}: `.coords` (n, d), `.epochs`, `.lrs` (from the
        checkpoints; NaN where unknown), `.datasets()` the x, y, epoch, lr arrays.
    """
    check_choice("projection", projection, pca.PROJECTIONS)
    basis, attrs = _basis(source)
    state = _origin(origin, attrs, trust)
    named = runs.items() if isinstance(runs, Mapping) else [(None, r) for r in _listed(runs)]
    out: dict[str, pca.ProjectedTrajectory] = {}
    for i, (label, run) in enumerate(named):
        trajectory = _trajectory(run, i, trust, key)
        label = label or (Path(run).name if isinstance(run, (str, Path)) else f"run{i}")
        while label in out:
            label = f"{label}'"
        out[str(label)] = pca.project_trajectory(trajectory, state, basis, projection)
    return out


def _listed(runs: Any) -> list:
    if isinstance(runs, (str, Path)) or not hasattr(runs, "__iter__"):
        raise UserTypeError(
            f"runs= is a {type(runs).__name__}; pass a list of run folders (or of lists of "
            "state dicts), e.g. runs=['runs/adam']"
        )
    return list(runs)


def _basis(source: Any) -> tuple[list[dict[str, Tensor]], dict]:
    if isinstance(source, (str, Path)):
        arrays, attrs = read_basis_arrays(source), read_attrs(source)
    elif isinstance(source, xr.Dataset):
        arrays, attrs = source.attrs.get("basis", []), dict(source.attrs)
    else:
        raise UserTypeError(
            f"project(source=...) got a {type(source).__name__}; pass a surface Dataset or the "
            "path of a surface file"
        )
    basis = [{k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in d.items()} for d in arrays]
    if not basis or not any(basis[0]):
        raise UserError(
            "the surface holds no directions to project on (a loss-landscape file, or a "
            "Dataset whose attrs['basis'] was dropped); use a surface file this program wrote"
        )
    return basis, attrs


def _origin(origin: Any, attrs: Mapping[str, Any], trust: bool) -> dict[str, Tensor]:
    if isinstance(origin, nn.Module):
        return {k: v.detach().cpu() for k, v in origin.state_dict().items()}
    if isinstance(origin, Mapping):
        return {k: torch.as_tensor(v).detach().cpu() for k, v in origin.items()}
    if origin is not None:
        raise UserTypeError(f"origin= is a {type(origin).__name__}; pass a model or state dict")
    path = str(attrs.get("checkpoint") or "")
    if not path:
        raise UserError(
            "the surface names no origin checkpoint (it was made from a model in memory): pass "
            "origin=the model at its centre"
        )
    state = load_state_dict_file(path, trust, "origin")
    if attrs.get("checkpoint_sha256") and file_sha256(path) != attrs["checkpoint_sha256"]:
        raise UserError(
            f"the surface's origin {path} changed since the surface was made (its SHA-256 "
            "differs); pass the original as origin="
        )
    return state


def _trajectory(run: Run, i: int, trust: bool, key: str) -> pca.Trajectory:
    if isinstance(run, (str, Path)):
        return pca.load_trajectory(str(run), trust, key, MIN_CHECKPOINTS)
    if isinstance(run, (Mapping, nn.Module)) or not hasattr(run, "__iter__"):
        raise UserTypeError(
            f"{key}[{i}] is a {type(run).__name__}: pass a run folder or a list of checkpoints"
        )
    states = [
        {
            k: v.detach().cpu()
            for k, v in (s.state_dict() if isinstance(s, nn.Module) else s).items()
        }
        for s in run
    ]
    if len(states) < MIN_CHECKPOINTS:
        raise UserError(
            f"{key}[{i}] holds {len(states)} checkpoint(s); a path needs at least {MIN_CHECKPOINTS}"
        )
    n = len(states)
    return pca.Trajectory(
        [Path(f"{key}[{i}][{j}]") for j in range(n)], states, list(range(n)), [float("nan")] * n
    )
