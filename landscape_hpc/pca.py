"""PCA directions of a training trajectory (Li et al. 2018, section 7 and appendix B).

The checkpoints θ_0 … θ_{n-1} of a run and its final weights θ_n give the matrix
M = [θ_0 − θ_n; …; θ_{n-1} − θ_n] over the chosen tensors. Its top two principal components
(rows centred, as scikit-learn's PCA that loss-landscape uses) are the directions; each
checkpoint is then projected onto them to draw the optimisation path over the surface.

Memory: M (n × P float32) is the only large object. The components come from the n × n Gram
matrix M Mᵀ, so no P × P covariance and no second n × P factor is ever formed.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from landscape_hpc import params
from landscape_hpc.errors import UserError
from landscape_hpc.params import ParamDict

PROJECTIONS = ("cos", "lstsq")


@dataclass
class Trajectory:
    """Checkpoints in training order: their files, states, epochs and learning rates."""

    paths: list[Path]
    states: list[ParamDict]
    epochs: list[int]
    lrs: list[float]  # NaN where the checkpoint does not say

    def lr_drops(self) -> list[int]:
        """Indices of checkpoints whose learning rate is lower than the previous one's."""
        return [i for i in range(1, len(self.lrs)) if self.lrs[i] < self.lrs[i - 1]]


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def find_checkpoints(spec: str) -> list[Path]:
    """A folder (its checkpoints/*.pt or *.pt) or a glob, in natural name order."""
    path = Path(spec).expanduser()
    if path.is_dir():
        inner = path / "checkpoints"
        found = sorted((inner if inner.is_dir() else path).glob("*.pt"), key=_natural_key)
    else:
        found = sorted((Path(p) for p in glob.glob(str(path))), key=_natural_key)
    if not found:
        raise UserError(
            f"directions.trajectory={spec} holds no checkpoints (*.pt); point it at the folder "
            "`python -m landscape_hpc.train` wrote (save_every > 0) or a glob of checkpoints"
        )
    return found


def load_trajectory(spec: str, trust: bool = False) -> Trajectory:
    """Reads every checkpoint of a trajectory (weights_only unless trusted)."""
    from landscape_hpc.models.checkpoint import load_state_dict_file

    paths = find_checkpoints(spec)
    states, epochs, lrs = [], [], []
    for i, p in enumerate(paths):
        raw = torch.load(p, map_location="cpu", weights_only=not trust)
        meta = raw if isinstance(raw, dict) else {}
        states.append(load_state_dict_file(str(p), trust))
        epochs.append(int(meta.get("epoch", i)))
        lr = meta.get("lr")
        lrs.append(float(lr) if isinstance(lr, (int, float)) else float("nan"))
    return Trajectory(paths, states, epochs, lrs)


def difference_matrix(
    states: list[Mapping[str, Tensor]], final: Mapping[str, Tensor], keys: list[str]
) -> Tensor:
    """M (n, P): one row θ_i − θ_final per checkpoint, over `keys`, float32."""
    return torch.stack(
        [params.flatten(params.sub(params.select(s, keys), final), keys) for s in states]
    )


def principal_directions(m: Tensor, k: int = 2) -> tuple[Tensor, np.ndarray]:
    """Top-k principal axes (k, P), unit norm, and their explained variance ratios (k,).

    The rows are centred first; the axes come from the eigenvectors of the Gram matrix
    G = M_c M_cᵀ (n × n, float64): axis_j = M_cᵀ u_j / ‖M_cᵀ u_j‖.
    """
    n = m.shape[0]
    if n < 3:
        raise UserError(
            f"PCA directions need at least 3 checkpoints, the trajectory has {n}; "
            "train with a smaller save_every"
        )
    centred = m - m.mean(dim=0, keepdim=True)
    gram = (centred.double() @ centred.double().T).cpu()  # (n, n)
    eigvals, eigvecs = torch.linalg.eigh(gram)  # ascending
    order = torch.argsort(eigvals, descending=True)
    eigvals, eigvecs = eigvals[order].clamp_min(0), eigvecs[:, order]
    total = float(eigvals.sum())
    if total == 0:
        raise UserError("the checkpoints of the trajectory are all identical: nothing to analyse")
    axes = []
    for j in range(k):
        axis = centred.T @ eigvecs[:, j].to(centred.dtype)  # (P,)
        axes.append(axis / axis.norm())
    return torch.stack(axes), (eigvals[:k] / total).numpy()


def project(m: Tensor, axes: Tensor, method: str = "cos") -> np.ndarray:
    """Coordinates (n, k) of the rows of m on the axes (k, P).

    cos: the scalar projection on each axis separately, ⟨d, a⟩/‖a‖ (loss-landscape's default);
    lstsq: least squares in the span of the axes (they differ when the axes are not orthogonal).
    """
    if method == "cos":
        return (m.double() @ axes.double().T / axes.double().norm(dim=1)).numpy()
    if method == "lstsq":
        return torch.linalg.lstsq(axes.double().T, m.double().T).solution.T.numpy()
    raise UserError(f"directions.projection={method!r} is not known; valid values: cos, lstsq")


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
