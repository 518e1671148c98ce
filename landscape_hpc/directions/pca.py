"""PCA directions of a training trajectory (Li et al. 2018, section 7 and appendix B).

The checkpoints θ_0 … θ_{n-1} of a run and its final weights θ_n give the matrix
M = [θ_0 − θ_n; …; θ_{n-1} − θ_n] over the chosen tensors. Its top two principal components
(rows centred, as scikit-learn's PCA that loss-landscape uses) are the directions; each
checkpoint is then projected onto them to draw the optimisation path over the surface.

Memory: M (n × P float32) is the only large object. The components come from the n × n Gram
matrix of the centred rows, accumulated over blocks of columns in float64, so no P × P
covariance and no second n × P array is ever formed. The maths runs on one CPU thread, so the
directions come out bit for bit the same whatever the number of threads or ranks (a resumed
surface file is recognised by the digest of its directions).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from landscape_hpc import params
from landscape_hpc.errors import UserError
from landscape_hpc.params import ParamDict

PROJECTIONS = ("cos", "lstsq")
MIN_CHECKPOINTS = 3
#: entries of M per float64 block (128 MiB) in the Gram matrix and the projections
_BLOCK_ENTRIES = 1 << 24
#: at most this many keys of each kind in an architecture-mismatch message
_MAX_LISTED = 10


@dataclass
class Trajectory:
    """Checkpoints in training order: their files, states, epochs and learning rates."""

    paths: list[Path]
    states: list[ParamDict]
    epochs: list[int]
    lrs: list[float]  # NaN where the checkpoint does not say


@dataclass
class ProjectedTrajectory:
    """A trajectory drawn in the plane of the surface: what the surface file stores about it."""

    coords: np.ndarray  # (n, d) float64: checkpoint i at origin + Σ_k coords[i, k] · basis_k
    epochs: np.ndarray  # (n,) int64
    lrs: np.ndarray  # (n,) float64, NaN where unknown
    explained_variance_ratio: np.ndarray  # (d,) float64, of the directions used

    def datasets(self) -> dict[str, np.ndarray]:
        """The arrays under `trajectory/` in the surface file: x, y (2D only), epoch, lr."""
        out = {"x": self.coords[:, 0]}
        if self.coords.shape[1] > 1:
            out["y"] = self.coords[:, 1]
        return {**out, "epoch": self.epochs, "lr": self.lrs}

    def first(self, ndim: int) -> ProjectedTrajectory:
        """The same trajectory in the first `ndim` directions only (PC1 for a 1D surface)."""
        return ProjectedTrajectory(
            self.coords[:, :ndim], self.epochs, self.lrs, self.explained_variance_ratio[:ndim]
        )

    def sha256(self) -> str:
        """A digest of every stored number: a resumed file must hold the same trajectory."""
        h = hashlib.sha256()
        for name, values in (*self.datasets().items(), ("ratio", self.explained_variance_ratio)):
            h.update(name.encode())
            h.update(np.ascontiguousarray(values).tobytes())
        return h.hexdigest()


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def find_checkpoints(spec: str, key: str = "directions.trajectory") -> list[Path]:
    """A folder (its checkpoints/*.pt or *.pt) or a glob, in natural name order; `key`: the
    option that named it, for the refusal."""
    path = Path(spec).expanduser()
    if path.is_dir():
        inner = path / "checkpoints"
        found = sorted((inner if inner.is_dir() else path).glob("*.pt"), key=_natural_key)
    else:
        found = sorted((Path(p) for p in glob.glob(str(path))), key=_natural_key)
    if not found:
        raise UserError(
            f"{key}={spec} holds no checkpoints (*.pt); point it at the folder "
            "`python -m landscape_hpc.train` wrote (save_every > 0) or a glob of checkpoints"
        )
    return found


def load_trajectory(
    spec: str, trust: bool = False, key: str = "directions.trajectory", least: int = 0
) -> Trajectory:
    """Reads every checkpoint of a trajectory (weights_only unless trusted); a UserError naming
    `key` when it holds fewer than `least` checkpoints (before any is read)."""
    from landscape_hpc.files.checkpoint import load_state_dict_file

    paths = find_checkpoints(spec, key)
    if len(paths) < least:
        raise UserError(
            f"{key}={spec} holds {len(paths)} checkpoint(s); a path needs at least {least} "
            "(train with save_every=1, or a smaller save_every)"
        )
    states, epochs, lrs = [], [], []
    for i, p in enumerate(paths):
        try:
            states.append(load_state_dict_file(str(p), trust, "checkpoint"))
        except UserError as err:
            raise UserError(f"{key}={spec}: {err}") from None
        meta = _metadata(p, trust)
        epoch = meta.get("epoch")
        epochs.append(int(epoch) if isinstance(epoch, (int, float)) else i)
        lr = meta.get("lr")
        lrs.append(float(lr) if isinstance(lr, (int, float)) else float("nan"))
    return Trajectory(paths, states, epochs, lrs)


def _metadata(path: Path, trust: bool) -> dict:
    """The checkpoint's dict (epoch, lr, ...); tensors memory-mapped, not read, where possible."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be mapped
        raw = torch.load(path, map_location="cpu", weights_only=not trust)
    return raw if isinstance(raw, dict) else {}


def check_architecture(trajectory: Trajectory, like: Mapping[str, Tensor]) -> None:
    """Every checkpoint must hold the tensors of `like` (the model's state) with their shapes."""
    for path, state in zip(trajectory.paths, trajectory.states):
        missing, unexpected, shapes = params.layout_diff(like, state, params.OPTIONAL_SUFFIXES)
        mismatched = [f"{k}: {got} vs {want}" for k, want, got in shapes]
        if missing or unexpected or mismatched:
            raise UserError(
                f"trajectory checkpoint {path} does not have the architecture of the model: "
                f"missing keys {missing[:_MAX_LISTED]}, unexpected keys "
                f"{unexpected[:_MAX_LISTED]}, shape mismatches {mismatched[:_MAX_LISTED]}; "
                "directions.trajectory must come from the run of the same model= (and "
                "model.kwargs) as model.checkpoint"
            )


def difference_matrix(
    states: list[Mapping[str, Tensor]], final: Mapping[str, Tensor], keys: list[str]
) -> Tensor:
    """M (n, P): one row θ_i − θ_final per checkpoint, over `keys`, float32."""
    return torch.stack(
        [params.flatten(params.sub(params.select(s, keys), final), keys).float() for s in states]
    )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """BLAS splits long reductions by thread count, which changes the last bits: use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _blocks(n: int, p: int) -> Iterator[slice]:
    """Column ranges of an (n, P) matrix, each about _BLOCK_ENTRIES entries."""
    step = max(1024, _BLOCK_ENTRIES // max(n, 1))
    for start in range(0, p, step):
        yield slice(start, min(start + step, p))


def principal_directions(m: Tensor, k: int = 2) -> tuple[Tensor, np.ndarray]:
    """Top-k principal axes (k, P), unit norm, float32, and their explained variance ratios (k,).

    The rows are centred first; the axes come from the eigenvectors of the Gram matrix
    G = M_c M_cᵀ (n × n, float64): axis_j = M_cᵀ u_j / ‖M_cᵀ u_j‖. Signs follow scikit-learn
    (≥ 1.5): the largest entry of each axis in absolute value is positive.
    """
    n, p = m.shape
    if n < MIN_CHECKPOINTS:
        raise UserError(
            f"PCA directions need at least {MIN_CHECKPOINTS} checkpoints, the trajectory has "
            f"{n}; train with a smaller save_every"
        )
    with _one_thread():
        gram = torch.zeros(n, n, dtype=torch.float64)
        for cols in _blocks(n, p):
            block = m[:, cols].double()  # (n, b); centring is per column, so per block
            block -= block.mean(dim=0, keepdim=True)
            gram += block @ block.T
        eigvals, eigvecs = torch.linalg.eigh(gram)  # ascending
        order = torch.argsort(eigvals, descending=True)
        eigvals, eigvecs = eigvals[order].clamp_min(0), eigvecs[:, order]
        total = float(eigvals.sum())
        if total == 0:
            raise UserError(
                "the checkpoints of the trajectory are all identical: nothing to analyse"
            )
        u = eigvecs[:, :k]  # (n, k)
        axes = torch.empty(k, p, dtype=torch.float64)
        for cols in _blocks(n, p):
            block = m[:, cols].double()
            axes[:, cols] = u.T @ (block - block.mean(dim=0, keepdim=True))  # (k, b)
        axes /= axes.norm(dim=1, keepdim=True)
        peak = axes.abs().argmax(dim=1)
        axes *= torch.sign(axes[torch.arange(k), peak]).unsqueeze(1)
    return axes.float(), (eigvals[:k] / total).numpy()


def project(m: Tensor, axes: Tensor, method: str = "cos") -> np.ndarray:
    """Coordinates (n, k) float64 of the rows of m (n, P) on the axes (k, P).

    cos: the scalar projection on each axis separately, ⟨d, a⟩/‖a‖ (loss-landscape's default);
    lstsq: least squares in the span of the axes (they differ when the axes are not orthogonal).
    """
    if method not in PROJECTIONS:
        raise UserError(
            f"directions.projection={method!r} is not known; valid values: {', '.join(PROJECTIONS)}"
        )
    with _one_thread():
        dots = torch.zeros(m.shape[0], axes.shape[0], dtype=torch.float64)  # (n, k)
        gram = torch.zeros(axes.shape[0], axes.shape[0], dtype=torch.float64)  # (k, k)
        for cols in _blocks(*m.shape):
            a = axes[:, cols].double()
            dots += m[:, cols].double() @ a.T
            gram += a @ a.T
        if method == "cos":
            return (dots / gram.diagonal().sqrt()).numpy()
        # normal equations of min ‖c A − d‖: c (A Aᵀ) = d Aᵀ
        return torch.linalg.solve(gram, dots.T).T.numpy()


def pca_basis(
    trajectory: Trajectory, final: Mapping[str, Tensor], keys: list[str]
) -> tuple[list[ParamDict], np.ndarray, Tensor]:
    """The two PCA directions as parameter dicts, their variance ratios, and M (for projection).

    final: the weights at the surface's origin (the end of the run)."""
    m = difference_matrix(trajectory.states, final, keys)
    axes, ratios = principal_directions(m, 2)
    like = {k: final[k] for k in keys}
    basis = [params.unflatten(a, like, keys) for a in axes]
    return basis, ratios, m


def trajectory_directions(
    trajectory: Trajectory,
    origin: Mapping[str, Tensor],
    keys: list[str],
    ndim: int,
    projection: str = "cos",
) -> tuple[list[ParamDict], ProjectedTrajectory]:
    """The first `ndim` PCA directions (on the CPU) and the trajectory projected onto them.

    origin: the model's whole state at the surface's origin (the end of the run); keys: the
    tensors the directions move (the others stay zero, as ignore=biasbn does for random
    directions)."""
    check_architecture(trajectory, origin)
    final = {k: origin[k].detach().cpu() for k in keys}
    basis, ratios, m = pca_basis(trajectory, final, keys)
    axes = torch.stack([params.flatten(d, keys).float() for d in basis])
    coords = project(m, axes, projection)
    full = ProjectedTrajectory(
        coords,
        np.asarray(trajectory.epochs, dtype=np.int64),
        np.asarray(trajectory.lrs, dtype=np.float64),
        np.asarray(ratios, dtype=np.float64),
    )
    return basis[:ndim], full.first(ndim)


def trajectory_pca(
    trajectory: Trajectory,
    origin: Mapping[str, Tensor],
    candidates: list[str],
    ignore: str,
    ndim: int,
    projection: str = "cos",
) -> tuple[list[ParamDict], ProjectedTrajectory]:
    """The one code path of PCA directions, under the surface command (directions.kind=pca,
    directions/build.py) and `lh.pca_directions`: the tensors of `candidates` (the parameters
    or the whole floating-point state) that `ignore` keeps (biasbn: 1-D tensors stay zero, as
    for random directions), their top `ndim` directions on the devices of `origin`, and the
    trajectory projected onto them."""
    keys = [k for k in candidates if ignore == "none" or origin[k].dim() > 1]
    basis, projected = trajectory_directions(trajectory, origin, keys, ndim, projection)
    return [{k: v.to(origin[k].device) for k, v in d.items()} for d in basis], projected


def project_trajectory(
    trajectory: Trajectory,
    origin: Mapping[str, Tensor],
    basis: list[Mapping[str, Tensor]],
    projection: str = "cos",
) -> ProjectedTrajectory:
    """Another run's checkpoints placed on an existing plane: θ_i − origin projected on the
    directions `basis` (dicts keyed like the state; a key one direction lacks is zero along it),
    as `trajectory_directions` places the run the directions came from. Its
    explained_variance_ratio is empty: the directions are not this run's components."""
    keys = sorted({k for d in basis for k in d})
    check_architecture(trajectory, origin)
    final = {k: origin[k].detach().cpu() for k in keys}
    axes = torch.stack(
        [
            params.flatten({k: d[k] if k in d else torch.zeros_like(final[k]) for k in keys}, keys)
            .detach()
            .cpu()
            .float()
            for d in basis
        ]
    )
    m = difference_matrix(trajectory.states, final, keys)
    return ProjectedTrajectory(
        project(m, axes, projection),
        np.asarray(trajectory.epochs, dtype=np.int64),
        np.asarray(trajectory.lrs, dtype=np.float64),
        np.zeros(0, dtype=np.float64),
    )
