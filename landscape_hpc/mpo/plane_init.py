"""How an MPO plane starts (Skorokhodov & Burtsev 2019, appendix A): origin, up and φ_right
from three models of one architecture, freshly initialised or re-drawn Xavier-uniform.

The command builds the three models from its registry (mpo/command.py `build_plane`: the model,
then fresh ones from init_seed + 1 and + 2); `lh.fit_mpo` has only the caller's model, so its
fresh ones are copies re-initialised by their own layers (`fresh_copy`): each layer's
`reset_parameters()`, in module order, from a seeded CPU stream. For a net whose layers are
created in the order they are registered and whose __init__ draws nothing else (mlp, the
mpo_cnn nets and vgg9 of the registry, most Sequential-style nets; not the resnets, whose
__init__ re-draws its convolutions) that is the same stream as building it anew with that seed,
so the library and the command start from the same plane bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from landscape_hpc.errors import UserError
from landscape_hpc.mpo.plane import Plane

#: how origin, up and φ_right start: as freshly built models (loss-patterns' way) or Xavier
PLANE_INITS = ("fresh", "xavier")


def xavier_init(model: nn.Module, seed: int) -> None:
    """Glorot/Xavier-uniform weights (every parameter of 2 or more dimensions), zero biases;
    BN scales stay 1 and shifts 0. Seeded: the same seed gives the same weights."""
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                nn.init.xavier_uniform_(param, generator=generator)
            elif name.endswith("bias"):
                param.zero_()


def undrawn_parameters(model: nn.Module, plane_init: str) -> list[str]:
    """Parameters `fresh_copy` (and, with plane_init=xavier, `xavier_init` after it) would leave
    as they are: held by a module without reset_parameters(). Their up and right entries would
    copy the origin's values, so the caller is told instead."""
    left = []
    for module_name, module in model.named_modules():
        if callable(getattr(module, "reset_parameters", None)):
            continue
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            redrawn = plane_init == "xavier" and (param.dim() >= 2 or name.endswith("bias"))
            if not redrawn:
                left.append(full)
    return left


def fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A CPU float32 copy of `model` with every layer re-initialised by its reset_parameters(),
    in module order, from the CPU stream seeded `seed` (the global RNG state is left as it was,
    as models.build_model does)."""
    fresh = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.random.default_generator.manual_seed(int(seed))
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh


def initial_plane(
    models: Sequence[nn.Module],
    plane_init: str,
    init_seed: int,
    scale_init: float,
    redraw_origin: bool,
) -> Plane:
    """The plane of (origin, up, φ_right) = `models` (up and φ_right freshly initialised, seeds
    init_seed + 1 and + 2). With plane_init=xavier up and φ_right are re-drawn by xavier_init
    with those seeds, and the origin with init_seed when `redraw_origin` (a fresh origin, not
    given weights). The models are modified in place."""
    if plane_init == "xavier":
        for offset, model in enumerate(models):
            if offset > 0 or redraw_origin:
                xavier_init(model, init_seed + offset)
    return Plane.init(tuple(models), scale_init)  # type: ignore[arg-type]


def check_redrawable(model: nn.Module, plane_init: str, what: str) -> None:
    """A UserError when `fresh_copy` cannot give `model` fresh up and right vectors."""
    left = undrawn_parameters(model, plane_init)
    if left:
        raise UserError(
            f"{what}: the parameters {left[:5]} belong to modules without reset_parameters(), "
            "so no fresh up and right vectors can be drawn for them; give those modules a "
            "reset_parameters() (or, for weights and biases, use plane_init='xavier')"
        )
