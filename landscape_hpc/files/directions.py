"""Directions in files: the `directions/` group of a surface file (ours) and loss-landscape's
direction files (`--dir_file`: xdirection/0..N-1, ydirection/..., positional), read back onto a
model's state; loss-landscape's surface files lead to theirs through `dir_file`; and the digest
that says two runs used the same directions (docs/file-format.md).

    directions/x/<state key>, directions/y/<state key>   float32, a missing key is zero
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np
import torch

from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5
from landscape_hpc.files.finite import check_finite
from landscape_hpc.params import ParamDict

AXES = ("x", "y")


def _names(n: int) -> list[str]:
    """x, y, then 2, 3, ...: the axes of a surface, more for an MPO plane's three vectors."""
    return [*AXES, *map(str, range(2, n))][:n]


def write_directions(f: h5py.File, basis: list[ParamDict]) -> None:
    """directions/x, directions/y of a new file (float32, keys sorted)."""
    for axis, direction in zip(AXES, basis):
        group = f.create_group(f"directions/{axis}")
        for key in sorted(direction):
            group.create_dataset(key, data=direction[key].detach().float().cpu().numpy())


def write_direction_file(
    path: str | Path, basis: list[ParamDict], attrs: Mapping[str, object] | None = None
) -> Path:
    """A standalone directions file (`directions.load=` reads its x and y as a surface's axes;
    `read_direction_file` all of them): directions/x, directions/y, directions/2, ... float32,
    and `attrs` (numbers, strings or lists of numbers, e.g. the Hessian eigenvalues they belong
    to) on the file. Written to a temporary name, then moved into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for axis, direction in zip(_names(len(basis)), basis):
            group = f.create_group(f"directions/{axis}")
            for key in sorted(direction):
                group.create_dataset(key, data=direction[key].detach().float().cpu().numpy())
        for key, value in (attrs or {}).items():
            f.attrs[key] = np.asarray(value) if isinstance(value, (list, tuple)) else value
    tmp.replace(path)
    return path


def read_direction_file(
    path: str | Path, origin: Mapping[str, torch.Tensor]
) -> tuple[list[ParamDict], dict[str, object]]:
    """Every direction of a file `write_direction_file` wrote (x, y, 2, 3, ... in order) on
    `origin`'s dtype and device, and its attributes (plain numbers, strings, lists)."""
    path = Path(path)
    with _reading(path) as f:
        if "directions" not in f:
            raise UserError(f"{path} holds no directions/ group; pass a directions file")
        group = f["directions"]
        basis = [_read_keyed(group[a], origin, path) for a in _names(len(group)) if a in group]
        attrs = {k: v.tolist() if isinstance(v, (np.ndarray, np.generic)) else v
                 for k, v in f.attrs.items()}  # fmt: skip
    return basis, attrs


def directions_sha256(basis: list[ParamDict]) -> str:
    """A digest of the directions' exact float32 contents, in a fixed key order (an MPO plane
    hashes its origin, right and up vectors as three directions)."""
    h = hashlib.sha256()
    for axis, direction in zip(_names(len(basis)), basis):
        for key in sorted(direction):
            h.update(f"{axis}/{key}".encode())
            h.update(direction[key].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def read_directions(
    path: str | Path, origin: Mapping[str, torch.Tensor], param_keys: list[str]
) -> list[ParamDict]:
    """Directions saved in a file: ours (`directions/x/<key>`) or loss-landscape's positional
    layout (`xdirection/0..N-1`, in the order of the parameters or of the whole state_dict)."""
    path = Path(path)
    with _reading(path) as f:
        basis = _read_any(f, origin, param_keys, path)
    for axis, direction in zip(_names(len(basis)), basis):
        fix = "remake the directions (directions.load= a file written by a finished run)"
        check_finite(direction, f"directions.load={path} (direction {axis})", fix)
    return basis


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[h5py.File]:
    """`directions.load=path` open for reading: damaged bytes or odd nodes met while reading it
    are refused as a damaged file."""
    with hdf5.open_read(path, "directions.load") as f:
        try:
            yield f
        except (*hdf5.DAMAGED, TypeError, AttributeError) as err:
            raise hdf5.damaged(f"directions.load={path}", "its directions", err) from None


def _read_any(
    f: h5py.File, origin: Mapping[str, torch.Tensor], param_keys: list[str], path: Path
) -> list[ParamDict]:
    if "directions" in f:
        return [
            _read_keyed(f[f"directions/{a}"], origin, path) for a in AXES if a in f["directions"]
        ]
    if "xdirection" in f:
        groups = [g for g in ("xdirection", "ydirection") if g in f]
        return [_read_positional(f[g], origin, param_keys, path) for g in groups]
    raise UserError(
        f"directions.load={path} holds no directions (expected directions/x/... or xdirection/0...)"
    )


def linked_direction_file(path: str | Path) -> Path | None:
    """Where a loss-landscape surface file keeps its directions: its `dir_file` (a string
    dataset, as loss-landscape's plot_surface.py writes it, or an attribute), for a file that
    holds no directions itself; None otherwise. A relative `dir_file` is looked up next to the
    surface file first, then from the current folder (where loss-landscape ran); a UserError
    when it is in neither place."""
    path = Path(path)
    with _reading(path) as f:
        if "directions" in f or "xdirection" in f:
            return None
        if "dir_file" in f:
            raw = f["dir_file"][()]
        elif "dir_file" in f.attrs:
            raw = f.attrs["dir_file"]
        else:
            return None
    name = raw.decode() if isinstance(raw, bytes) else str(raw)
    target = Path(name)
    tried = [target] if target.is_absolute() else [path.parent / target, target]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"directions.load={path} is a loss-landscape surface file whose directions are in its "
        f"dir_file {name!r}, not found at {' or '.join(map(str, tried))}; pass "
        "directions.load=<that direction file>"
    )


def _as_tensor(data: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.asarray(data)).to(device=like.device, dtype=like.dtype)


def _read_keyed(group: h5py.Group, origin: Mapping[str, torch.Tensor], path: Path) -> ParamDict:
    unknown = sorted(set(group) - set(origin))
    bad_shape = [
        k for k in group if k in origin and tuple(group[k].shape) != tuple(origin[k].shape)
    ]
    if unknown or bad_shape:
        raise UserError(
            f"directions in {path} do not fit the model: unknown keys {unknown[:10]}, "
            f"shape mismatches {bad_shape[:10]}; check model="
        )
    return {k: _as_tensor(group[k][()], origin[k]) for k in group}


def _read_positional(
    group: h5py.Group, origin: Mapping[str, torch.Tensor], param_keys: list[str], path: Path
) -> ParamDict:
    n = len(group)
    for keys in (param_keys, list(origin)):
        if len(keys) == n and all(
            tuple(group[str(i)].shape) == tuple(origin[k].shape) for i, k in enumerate(keys)
        ):
            return {
                k: _as_tensor(group[str(i)][()], origin[k])
                for i, k in enumerate(keys)
                if origin[k].is_floating_point()
            }
    raise UserError(
        f"{path}/{group.name} holds {n} tensors that match neither the {len(param_keys)} "
        f"parameters nor the {len(origin)} state entries of the model; check model="
    )
