"""The MPO plane (Skorokhodov & Burtsev 2019, eq. 1–2, appendices A and C).

    θ(α, β) = origin + s · (α · right + β · up)                                  eq. (1)
    right   = GS(φ_right; up) · ‖up‖ / ‖GS(φ_right; up)‖,  GS(φ; u) = φ − <φ,u>/<u,u> · u   eq. (2)

Only origin, up, φ_right and the scale s are learned. `right` is rebuilt from (φ_right, up) at
every forward, so up ⊥ right and ‖right‖ = ‖up‖ hold exactly (to float rounding) at every step
and the gradients of the loss reach φ_right through the construction.

The plane moves the model's *parameters*; buffers (BN running statistics) are not on it.
BN scales are re-parametrised as γ = 1 + w (appendix C): the plane holds w, centred at zero, so a
direction's BN component can be orthogonalised without pushing scales through zero. `state_*`
functions translate back to the model's state_dict coordinates (γ), where the plane is an
ordinary affine `Subspace` because γ is affine in w.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.params import ParamDict

#: initial plane scale s (appendix A)
DEFAULT_SCALE = 0.1


def bn_scale_keys(model: nn.Module) -> list[str]:
    """state_dict keys of the BN scales γ (re-parametrised as γ = 1 + w, appendix C)."""
    return [
        f"{name}.weight"
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.affine
    ]


def centre_bn(state: ParamDict, bn_keys: list[str]) -> ParamDict:
    """Model coordinates → plane coordinates: w = γ − 1 on BN scales, the rest unchanged."""
    return {k: (v - 1.0 if k in bn_keys else v) for k, v in state.items()}


def uncentre_bn(state: ParamDict, bn_keys: list[str]) -> ParamDict:
    """Plane coordinates → model coordinates: γ = 1 + w on BN scales."""
    return {k: (v + 1.0 if k in bn_keys else v) for k, v in state.items()}


def dot(a: ParamDict, b: ParamDict) -> Tensor:
    """<a, b> over all tensors (differentiable, in the tensors' dtype)."""
    return sum((a[k] * b[k]).sum() for k in a)  # type: ignore[return-value]


def orthogonalize(phi_right: ParamDict, up: ParamDict) -> ParamDict:
    """eq. (2): Gram–Schmidt of φ_right against up, rescaled to ‖up‖ (differentiable)."""
    up_sq = dot(up, up)
    coef = dot(phi_right, up) / up_sq
    ortho = {k: phi_right[k] - coef * up[k] for k in phi_right}
    ratio = torch.sqrt(up_sq / dot(ortho, ortho))
    return {k: v * ratio for k, v in ortho.items()}


def cell_alpha_beta(shape: tuple[int, int], rows: Tensor, cols: Tensor) -> Tensor:
    """(α, β) of pattern cells (row, col) as (K, 2) float32: α = x[col], β = y[H-1-row]."""
    h, w = shape
    alpha = cols.to(torch.float32) - (w - 1) / 2
    beta = (h - 1) / 2 - rows.to(torch.float32)
    return torch.stack([alpha, beta], dim=1)


@dataclass
class Plane:
    """The learnable plane: origin, up, φ_right (plane coordinates, BN scales centred) and s.

    Every tensor is a leaf with requires_grad; `parameters()` gives them to an optimiser.
    `buffers` holds the model's buffers (BN running statistics), carried along, never learned.
    """

    origin: ParamDict
    up: ParamDict
    phi_right: ParamDict
    scale: Tensor  # () float32
    bn_keys: list[str]
    buffers: ParamDict

    @property
    def keys(self) -> list[str]:
        return list(self.origin)

    @classmethod
    def init(
        cls, models: tuple[nn.Module, nn.Module, nn.Module], scale: float = DEFAULT_SCALE
    ) -> Plane:
        """origin, up, φ_right from three freshly initialised models (their Xavier/Kaiming init,
        appendix A) and s = `scale`. BN scales of every vector are centred (γ = 1 → w = 0)."""
        template = models[0]
        bn_keys = bn_scale_keys(template)

        def leaves(m: nn.Module) -> ParamDict:
            p = {k: v.detach().clone().float() for k, v in m.named_parameters()}
            return {k: v.requires_grad_(True) for k, v in centre_bn(p, bn_keys).items()}

        buffers = {k: v.detach().clone() for k, v in template.named_buffers()}
        return cls(
            origin=leaves(models[0]),
            up=leaves(models[1]),
            phi_right=leaves(models[2]),
            scale=torch.tensor(float(scale), requires_grad=True),
            bn_keys=bn_keys,
            buffers=buffers,
        )

    def parameters(self) -> list[Tensor]:
        return [*self.origin.values(), *self.up.values(), *self.phi_right.values(), self.scale]

    def right(self) -> ParamDict:
        return orthogonalize(self.phi_right, self.up)

    def cell_weights(self, coords: Tensor) -> ParamDict:
        """eq. (1) at K cells, coords (K, 2) = (α, β): parameters (K, ...) in model coordinates
        (γ = 1 + w), differentiable w.r.t. origin, up, φ_right and s."""
        right = self.right()
        out: ParamDict = {}
        for k, o in self.origin.items():
            view = (-1, *([1] * o.dim()))
            a = coords[:, 0].reshape(view).to(o.dtype)  # (K, 1, ...)
            b = coords[:, 1].reshape(view).to(o.dtype)
            w = o + self.scale * (a * right[k] + b * self.up[k])  # (K, *shape)
            out[k] = w + 1.0 if k in self.bn_keys else w
        return out

    # ---- model coordinates (state_dict keys, BN scales as γ) -------------------------------

    def state_origin(self) -> ParamDict:
        """The full model state at α = β = 0 (parameters with γ = 1 + w, and the buffers)."""
        params = uncentre_bn({k: v.detach().clone() for k, v in self.origin.items()}, self.bn_keys)
        return {**params, **{k: v.clone() for k, v in self.buffers.items()}}

    def to_subspace(self) -> Subspace:
        """The plane as an engine Subspace: basis = [s · right (x = α), s · up (y = β)]."""
        with torch.no_grad():
            s = self.scale.detach()
            right = {k: v.detach() * s for k, v in self.right().items()}
            up = {k: v.detach() * s for k, v in self.up.items()}
        return Subspace(self.state_origin(), [right, up])

    def to(self, device: torch.device | str) -> Plane:
        def move(p: ParamDict) -> ParamDict:
            return {k: v.detach().to(device).requires_grad_(True) for k, v in p.items()}

        return Plane(
            move(self.origin),
            move(self.up),
            move(self.phi_right),
            self.scale.detach().to(device).requires_grad_(True),
            list(self.bn_keys),
            {k: v.to(device) for k, v in self.buffers.items()},
        )

    # ---- (de)serialisation: plain tensors, loadable with weights_only=True ------------------

    def raw_state(self) -> dict:
        """The learned leaves as they are (plane coordinates), for checkpoints."""

        def cpu(p: ParamDict) -> ParamDict:
            return {k: v.detach().cpu().clone() for k, v in p.items()}

        return {
            "origin": cpu(self.origin),
            "up": cpu(self.up),
            "phi_right": cpu(self.phi_right),
            "scale": self.scale.detach().cpu().clone(),
            "bn_keys": list(self.bn_keys),
            "buffers": cpu(self.buffers),
        }

    @classmethod
    def from_raw_state(cls, raw: dict, device: torch.device | str = "cpu") -> Plane:
        return cls(
            raw["origin"],
            raw["up"],
            raw["phi_right"],
            raw["scale"],
            list(raw["bn_keys"]),
            raw["buffers"],
        ).to(device)

    def export(self) -> dict:
        """plane.pt contents in model coordinates: θ(α, β) = origin + scale·(α·right + β·up)
        holds on the state_dict (origin includes the buffers; BN scales are γ)."""
        with torch.no_grad():
            right = {k: v.detach().cpu().clone() for k, v in self.right().items()}
        return {
            "origin": {k: v.cpu() for k, v in self.state_origin().items()},
            "up": {k: v.detach().cpu().clone() for k, v in self.up.items()},
            "right": right,
            "scale": float(self.scale.detach()),
        }
