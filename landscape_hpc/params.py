"""Pure maths on parameter dicts (`dict[str, Tensor]` keyed like a state_dict).

Every function returns new tensors and leaves its inputs untouched. A key missing from one
operand of a binary operation is treated as zero there, which is how a direction says "no
movement along this tensor".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

ParamDict = dict[str, Tensor]


def is_float(t: Tensor) -> bool:
    """True for tensors a direction can move (not integer buffers such as num_batches_tracked)."""
    return t.is_floating_point()


def zeros_like(p: Mapping[str, Tensor]) -> ParamDict:
    return {k: torch.zeros_like(v) for k, v in p.items()}


def clone(p: Mapping[str, Tensor]) -> ParamDict:
    return {k: v.detach().clone() for k, v in p.items()}


def select(p: Mapping[str, Tensor], keys: Iterable[str]) -> ParamDict:
    return {k: p[k] for k in keys}


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> ParamDict:
    """a + b over the union of keys (a missing key is zero)."""
    out = {k: v.clone() for k, v in a.items()}
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v.clone()
    return out


def sub(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> ParamDict:
    """a - b over the keys of a (b must hold each of them)."""
    return {k: v - b[k] for k, v in a.items()}


def scale(p: Mapping[str, Tensor], s: float | Tensor) -> ParamDict:
    return {k: v * s for k, v in p.items()}


def vdot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """<a, b> summed over the keys both hold, in float64."""
    total = torch.zeros((), dtype=torch.float64)
    for k, v in a.items():
        if k in b:
            total = total + (v.double() * b[k].double()).sum()
    return total


def norm(p: Mapping[str, Tensor]) -> Tensor:
    return vdot(p, p).sqrt()


def flatten(p: Mapping[str, Tensor], keys: list[str]) -> Tensor:
    """Concatenates the tensors of `keys` into one vector (in their common dtype)."""
    return torch.cat([p[k].reshape(-1) for k in keys])


def unflatten(vec: Tensor, like: Mapping[str, Tensor], keys: list[str]) -> ParamDict:
    """Inverse of `flatten`: splits `vec` into tensors shaped like `like[k]` for k in keys."""
    out: ParamDict = {}
    offset = 0
    for k in keys:
        n = like[k].numel()
        out[k] = vec[offset : offset + n].reshape(like[k].shape).to(like[k].dtype)
        offset += n
    if offset != vec.numel():
        raise ValueError(f"vector has {vec.numel()} entries, the keys hold {offset}")
    return out


def combine(origin: Mapping[str, Tensor], basis: list[ParamDict], coords: Tensor) -> ParamDict:
    """θ(c) = origin + Σ_k c_k · basis_k for one coordinate vector c of shape (d,).

    The sum is formed in float64 and rounded once to the origin's dtype, so a model-difference
    direction (kept in float64) lands exactly on the other model at c = 1.
    """
    coords = coords.to(torch.float64)
    out = dict(origin)
    for key in {k for direction in basis for k in direction}:
        acc = origin[key].double()
        for c_k, direction in zip(coords, basis):
            if key in direction:
                acc = acc + c_k * direction[key].double()
        out[key] = acc.to(origin[key].dtype)
    return out


def combine_batch(
    origin: Mapping[str, Tensor], basis: list[ParamDict], coords: Tensor
) -> tuple[ParamDict, ParamDict]:
    """θ(c) for K coordinate vectors at once (coords: (K, d)).

    Returns (moving, fixed): `moving[k]` is (K, *shape) for every key some basis vector moves,
    `fixed` holds the origin tensors no direction touches, shared by all K points.
    """
    coords = coords.to(torch.float64)
    moving_keys = sorted({k for direction in basis for k in direction})
    moving: ParamDict = {}
    for key in moving_keys:
        o = origin[key]
        stacked = o.double().unsqueeze(0)  # (1, *shape), broadcast to (K, *shape) below
        for k, direction in enumerate(basis):
            if key in direction:
                c = coords[:, k].reshape(-1, *([1] * o.dim()))  # (K, 1, ...)
                stacked = stacked + c * direction[key].double()
        moving[key] = stacked.expand(coords.shape[0], *o.shape).to(o.dtype)
    fixed = {k: v for k, v in origin.items() if k not in moving}
    return moving, fixed


#: state_dict entries a checkpoint may lack: BN's batch counter, absent before PyTorch 0.4
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def layout_diff(
    expected: Mapping[str, Tensor], got: Mapping[str, Tensor], optional: tuple[str, ...] = ()
) -> tuple[list[str], list[str], list[tuple[str, tuple, tuple]]]:
    """How `got` differs from `expected` in keys and shapes: the keys of `expected` it lacks
    (except those ending in one of `optional`), its keys `expected` does not have, and
    (key, expected shape, its shape) for the shared keys whose shapes differ."""
    missing = [k for k in expected if k not in got and not k.endswith(optional)]
    unexpected = [k for k in got if k not in expected]
    mismatched = [
        (k, tuple(expected[k].shape), tuple(got[k].shape))
        for k in expected
        if k in got and got[k].shape != expected[k].shape
    ]
    return missing, unexpected, mismatched
