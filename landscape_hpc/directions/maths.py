"""Directions in weight space (Li et al. 2018, section 4): random, filter-normalised, model
differences. Pure functions of parameter dicts; files are read at the edges (directions/build.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import torch
from torch import Tensor, nn

from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.params import ParamDict

KINDS = ("random", "models", "pca", "hessian")
NORMS = ("filter", "layer", "weight", "none")
IGNORES = ("biasbn", "none")
DIR_TYPES = ("weights", "states")

_EPS = 1e-10


def direction_keys(model: nn.Module, dir_type: str) -> list[str]:
    """Keys a direction may move: the parameters (`weights`) or every floating-point entry of the
    state_dict (`states`: BN running statistics included, integer counters excluded)."""
    check_choice("directions.dir_type", dir_type, DIR_TYPES)
    if dir_type == "weights":
        return [name for name, _ in model.named_parameters()]
    return [k for k, v in model.state_dict().items() if v.is_floating_point()]


def random_direction(
    origin: Mapping[str, Tensor], keys: list[str], generator: torch.Generator
) -> ParamDict:
    """A Gaussian direction over `keys`, drawn on the CPU in key order (device independent)."""
    return {
        k: torch.randn(origin[k].shape, generator=generator, dtype=torch.float32).to(
            device=origin[k].device, dtype=origin[k].dtype
        )
        for k in keys
    }


def normalize_tensor(d: Tensor, w: Tensor, norm: str) -> Tensor:
    """Rescales one tensor of a direction to the scale of the weights w.

    filter: each output filter / row d_i <- d_i * ||w_i|| / ||d_i|| (Li et al. eq. in section 4);
    layer: the whole tensor; weight: d * w; none: unchanged.
    """
    if norm == "filter":
        if d.dim() <= 1:  # a 1-D tensor: every entry is its own filter
            return d.sign() * w.abs()
        d_flat, w_flat = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
        ratio = w_flat.norm(dim=1) / (d_flat.norm(dim=1) + _EPS)  # (n_filters,)
        return (d_flat * ratio.unsqueeze(1)).reshape(d.shape)
    if norm == "layer":
        return d * (w.norm() / (d.norm() + _EPS))
    if norm == "weight":
        return d * w
    if norm == "none":
        return d.clone()
    raise UserError(f"directions.norm={norm!r} is not known; valid values: {', '.join(NORMS)}")


def normalize_direction(
    direction: Mapping[str, Tensor], weights: Mapping[str, Tensor], norm: str, ignore: str
) -> ParamDict:
    """Normalises every tensor of a direction against the weights it moves.

    ignore=biasbn drops 1-D tensors (biases, BN affine and statistics): a missing key is zero.
    With ignore=none a 1-D tensor follows the weights themselves under filter normalisation
    (d = w, as loss-landscape's `normalize_directions_for_weights`), else the chosen norm.
    """
    check_choice("directions.norm", norm, NORMS)
    check_choice("directions.ignore", ignore, IGNORES)
    out: ParamDict = {}
    for k, d in direction.items():
        w = weights[k]
        if d.dim() <= 1:
            if ignore == "biasbn":
                continue
            out[k] = w.clone() if norm == "filter" else normalize_tensor(d, w, norm)
        else:
            out[k] = normalize_tensor(d, w, norm)
    return out


def random_basis(
    origin: Mapping[str, Tensor],
    keys: list[str],
    ndim: int,
    seed: int,
    norm: str,
    ignore: str,
    same_dir: bool = False,
) -> list[ParamDict]:
    """`ndim` normalised random directions; x is drawn first from `seed`, y next from the same
    stream, so the x direction of a 2D surface equals that of a 1D one with the same seed."""
    generator = torch.Generator().manual_seed(seed)
    basis = []
    for i in range(ndim):
        if i > 0 and same_dir:
            basis.append(dict(basis[0]))
            continue
        raw = random_direction(origin, keys, generator)
        basis.append(normalize_direction(raw, origin, norm, ignore))
    return basis


def model_difference(
    target: Mapping[str, Tensor], origin: Mapping[str, Tensor], source: str
) -> ParamDict:
    """target - origin over every floating-point tensor, BN buffers included (Li et al. A.5:
    interpolating the weights but not the running statistics gives a wrong picture)."""
    missing = sorted(set(origin) - set(target))
    unexpected = sorted(set(target) - set(origin))
    mismatched = [k for k in origin if k in target and origin[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        raise UserError(
            f"{source} does not have the architecture of the model: "
            f"missing keys {missing[:10]}, unexpected keys {unexpected[:10]}, "
            f"shape mismatches {mismatched[:10]}; use checkpoints of the same model="
        )
    # in float64, where the difference of two float32 tensors is exact: origin + 1·d == target
    return {
        k: target[k].to(v.device, torch.float64) - v.double()
        for k, v in origin.items()
        if v.is_floating_point()
    }


def select_keys(keys: Sequence[str], patterns: Sequence[str] | None, key: str) -> list[str]:
    """The `keys` (state_dict names) the `patterns` pick: shell-style fnmatch patterns, matched
    case-sensitively against the whole name ("blocks.*.attn.*", "*.weight"); one starting with
    "!" excludes ("!tok.*"). A name is kept when it matches an include (or there is none) and no
    exclude. A pattern that matches no name is a UserError naming `key`."""
    if not patterns:
        return list(keys)
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p[1:] for p in patterns if p.startswith("!")]
    for pattern in (*include, *exclude):
        if not any(fnmatchcase(k, pattern) for k in keys):
            shown = ", ".join(list(keys)[:6])
            raise UserError(
                f"{key}: the pattern {pattern!r} matches no tensor of the model; its names are "
                f"state_dict keys ({shown}, ...), matched with fnmatch (* and ?, ! excludes)"
            )
    return [
        k
        for k in keys
        if (not include or any(fnmatchcase(k, p) for p in include))
        and not any(fnmatchcase(k, p) for p in exclude)
    ]


def restrict(
    basis: list[ParamDict], keys: Sequence[str], patterns: Sequence[str] | None, key: str
) -> list[ParamDict]:
    """The directions moving only the tensors `patterns` pick from `keys` (select_keys); every
    other tensor gets no entry (zero: it stays at the origin, bit for bit)."""
    if not patterns:
        return basis
    kept = set(select_keys(keys, patterns, key))
    return [{k: v for k, v in d.items() if k in kept} for d in basis]
