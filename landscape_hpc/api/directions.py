"""Directions in weight space from Python (Li et al. 2018): random filter-normalised ones
(sec. 4) and the PCA directions of a training trajectory (sec. 7, appendix B)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from torch import Tensor, nn

from landscape_hpc import params
from landscape_hpc.directions import pca
from landscape_hpc.directions.maths import DIR_TYPES, IGNORES, direction_keys, random_basis
from landscape_hpc.errors import UserError, check_choice, check_seed
from landscape_hpc.files.directions import read_direction_file, write_direction_file
from landscape_hpc.params import ParamDict

#: at most this many keys of each kind in a mismatch message
_LISTED = 5


def random_directions(
    model: nn.Module,
    n: int = 2,
    *,
    seed: int = 0,
    norm: str = "filter",
    ignore: str = "biasbn",
    dir_type: str = "weights",
    same_dir: bool = False,
) -> list[ParamDict]:
    """`n` Gaussian directions around the model's weights, each normalised against them, as
    dicts keyed like model.state_dict() (a missing key is zero along that tensor): what
    `lh.surface(directions="random")` draws with the same arguments, to reuse or inspect.

    Args:
        model: the model whose weights are the origin (not modified).
        n: how many directions (x first, then y, ... from one seeded stream).
        seed: the stream's seed.
        norm: filter (each filter scaled to its weights' norm, Li et al.), layer, weight, none.
        ignore: biasbn (1-D tensors — biases, BN — stay zero) or none.
        dir_type: weights (parameters) or states (BN running statistics too).
        same_dir: every direction equal to the first.
    """
    check_seed(seed, "seed")
    origin = {k: v.detach() for k, v in model.state_dict().items()}
    keys = direction_keys(model, dir_type)
    return random_basis(origin, keys, n, seed, norm, ignore, same_dir)


def pca_directions(
    trajectory: Sequence[Union[Mapping[str, Tensor], nn.Module]],
    model: Optional[nn.Module] = None,
    *,
    n: int = 2,
    ignore: str = "biasbn",
    dir_type: str = "weights",
    projection: str = "cos",
) -> tuple[list[ParamDict], pca.ProjectedTrajectory]:
    """The top principal directions of a training trajectory around its end, and the path
    projected onto them (Li et al. 2018, sec. 7): the rows θ_i − θ_last of every state, centred,
    their first `n` principal axes (unit norm, signs as scikit-learn's PCA) — the same maths,
    bits and signs as the surface command's directions.kind=pca.

    To draw the path over the surface, load the last state into the model and pass the
    directions (the path's coordinates are then the surface's):

        dirs, path = lh.pca_directions(states, model)
        model.load_state_dict(states[-1])
        ds = lh.surface(model, data, x=(-2, 8, 41), y=(-3, 3, 31), directions=dirs)
        ds.train_loss.plot.contour(levels=30)
        plt.plot(path.coords[:, 0], path.coords[:, 1], "o-")   # ends at (0, 0), the origin
        plt.xlabel(f"PC1: {100 * path.explained_variance_ratio[0]:.1f}%")

    Args:
        trajectory: the states in training order, at least 3: state dicts or nn.Modules (read,
            not modified); the last one is the origin (the end of the run).
        model: the architecture, to tell its parameters from its buffers (dir_type="weights")
            and where the directions live (its device); its own weights are not used. Default:
            the last entry when that is a module; for state dicts without a model, the
            directions move their floating-point tensors of 2 or more dimensions
            (ignore="biasbn": the parameters of usual nets).
        n: how many directions: 1 (PC1) or 2 (PC1, PC2).
        ignore: biasbn (1-D tensors — biases, BN — stay zero) or none.
        dir_type: weights (parameters) or states (BN running statistics too).
        projection: cos (the scalar projection on each axis, loss-landscape's) or lstsq (least
            squares in their span).

    Returns:
        (directions, path): `n` dicts keyed like model.state_dict(), usable as
        lh.surface(..., directions=directions); path.coords (len(trajectory), n) float64 (state
        i at origin + Σ_k coords[i, k]·directions[k]), path.explained_variance_ratio (n,),
        path.epochs (the index of each state).
    """
    check_choice("ignore", ignore, IGNORES)
    check_choice("dir_type", dir_type, DIR_TYPES)
    check_choice("projection", projection, pca.PROJECTIONS)
    if n not in (1, 2):
        raise UserError(f"n={n!r}: PCA directions are 1 (PC1) or 2 (PC1 and PC2)")
    items = _items(trajectory)
    states = [_state(item, i) for i, item in enumerate(items)]
    origin = states[-1]
    for i, state in enumerate(states[:-1]):
        _same_layout(origin, state, f"trajectory[{i}]")
    if model is None and isinstance(items[-1], nn.Module):
        model = items[-1]
    if model is not None:
        _same_layout(origin, _state(model, -1), "model=")
        on_model = {k: t.device for k, t in model.state_dict().items()}
        origin = {k: v.to(on_model[k]) for k, v in origin.items()}
        candidates = direction_keys(model, dir_type)
    elif dir_type == "weights" and ignore == "none":
        raise UserError(
            'dir_type="weights" with ignore="none" needs model= to tell the parameters from '
            'the buffers of the states; pass the model (or use ignore="biasbn")'
        )
    else:
        candidates = [k for k, v in origin.items() if v.is_floating_point()]
    count = len(states)
    cpu = [{k: v.cpu() for k, v in s.items()} for s in states]
    path = pca.Trajectory(
        [Path(f"trajectory[{i}]") for i in range(count)], cpu, list(range(count)),
        [float("nan")] * count,
    )  # fmt: skip
    return pca.trajectory_pca(path, origin, candidates, ignore, n, projection)


def _items(trajectory: Any) -> list[Any]:
    if isinstance(trajectory, (Mapping, nn.Module, Tensor, str)) or not hasattr(
        trajectory, "__iter__"
    ):
        raise UserError(
            f"trajectory= is a {type(trajectory).__name__}; give a list of state dicts or "
            "nn.Modules in training order, the last one the origin"
        )
    items = list(trajectory)
    if len(items) < pca.MIN_CHECKPOINTS:
        raise UserError(
            f"trajectory= holds {len(items)} state(s); the PCA of a path needs at least "
            f"{pca.MIN_CHECKPOINTS} (in training order, the last one the origin)"
        )
    return items


def _state(item: Any, i: int) -> ParamDict:
    """A state of the trajectory as detached tensors."""
    if isinstance(item, nn.Module):
        item = item.state_dict()
    if not isinstance(item, Mapping) or not all(isinstance(v, Tensor) for v in item.values()):
        raise UserError(
            f"trajectory[{i}] is a {type(item).__name__}, not a state dict of tensors or an "
            "nn.Module; give model.state_dict() copies (or the models) in training order"
        )
    return {str(k): v.detach() for k, v in item.items()}


def _same_layout(origin: Mapping[str, Tensor], state: Mapping[str, Tensor], what: str) -> None:
    missing, unexpected, shapes = params.layout_diff(origin, state, params.OPTIONAL_SUFFIXES)
    if missing or unexpected or shapes:
        shown = [f"{k}: {got} vs {want}" for k, want, got in shapes[:_LISTED]]
        raise UserError(
            f"{what} does not match trajectory[-1] (the origin): missing keys "
            f"{missing[:_LISTED]}, unexpected keys {unexpected[:_LISTED]}, shapes {shown}; "
            "give the states of one architecture"
        )


def save_directions(
    directions: Sequence[Mapping[str, Tensor]],
    path: Union[str, Path],
    *,
    eigenvalues: Optional[Sequence[float]] = None,
) -> Path:
    """Writes directions (dicts keyed like a state_dict: lh.random_directions, lh.pca_directions,
    lh.hessian(k=...).eigenvectors) as a directions file: the surface command reads its first
    two as axes with directions.load=<path>, lh.load_directions all of them.

    Args:
        directions: the directions in order (x, y, then more).
        path: the HDF5 file to write (replaced if present).
        eigenvalues: the Hessian eigenvalues the directions belong to, stored with them.

    Returns:
        The path written.
    """
    basis = [{k: v.detach() for k, v in d.items()} for d in directions]
    attrs = {} if eigenvalues is None else {"eigenvalues": [float(v) for v in eigenvalues]}
    return write_direction_file(path, basis, attrs)


def load_directions(
    path: Union[str, Path], model: nn.Module
) -> tuple[list[ParamDict], dict[str, Any]]:
    """The directions of a directions file (lh.save_directions', the hessian command's
    hessian_eigenvectors.h5) on the model's tensors (dtype, device), and the file's attributes
    (e.g. "eigenvalues").

    Args:
        path: the directions file.
        model: the model the directions move (its state_dict's keys and shapes are checked).

    Returns:
        (directions, attrs): a list of dicts usable as lh.surface(..., directions=...[:2]).
    """
    origin = {k: v.detach() for k, v in model.state_dict().items()}
    return read_direction_file(path, origin)
