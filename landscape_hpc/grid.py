"""Grid coordinates of a surface and the chunks of pending points handed to workers.

Points are numbered row-major over (y, x): flat index i is row i // nx (the y index) and column
i % nx (the x index), matching the (ny, nx) layout of the surface file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from landscape_hpc.errors import UserError


def parse_axis(key: str, spec: Sequence[Any]) -> np.ndarray:
    """[min, max, num] -> num evenly spaced float64 coordinates, validated with a clear message."""
    if spec is None or len(spec) != 3:
        raise UserError(f"{key}={_show(spec)} must be [min,max,num], e.g. {key}=[-1,1,51]")
    try:
        lo, hi, num_f = (float(v) for v in spec)
    except (TypeError, ValueError):
        raise UserError(f"{key}={_show(spec)}: min, max and num must be numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UserError(f"{key}={_show(spec)}: min and max must be finite")
    if num_f != int(num_f) or num_f < 1:
        raise UserError(f"{key}={_show(spec)}: num must be a whole number >= 1")
    if lo > hi:
        raise UserError(f"{key}={_show(spec)}: min {lo} is larger than max {hi}")
    num = int(num_f)
    if num > 1 and lo == hi:
        raise UserError(f"{key}={_show(spec)}: min equals max, so use num=1 or widen the range")
    with np.errstate(over="ignore", invalid="ignore"):  # refused just below, in one line
        coords = np.linspace(lo, hi, num, dtype=np.float64)
    if not np.all(np.isfinite(coords)):
        # max - min overflows float64 (e.g. [-1e308,1e308,3]): the spacing is inf, points NaN
        raise UserError(
            f"{key}={_show(spec)}: its coordinates are not all finite "
            f"({_show(coords[:3].tolist())}...: max - min overflows); narrow the range"
        )
    if num > 1 and not np.all(np.diff(coords) > 0):
        raise UserError(
            f"{key}={_show(spec)}: its {num} coordinates are not distinct in float64 (the range "
            "is too narrow for num); widen the range or lower num"
        )
    return coords


def _show(spec: Any) -> str:
    return "[" + ",".join(str(v) for v in spec) + "]" if isinstance(spec, Sequence) else str(spec)


@dataclass(frozen=True)
class Grid:
    """x coordinates (nx,) and, for a 2D surface, y coordinates (ny,)."""

    x: np.ndarray
    y: Optional[np.ndarray] = None

    @classmethod
    def from_spec(
        cls,
        x: Sequence[Any],
        y: Optional[Sequence[Any]],
        keys: tuple[str, str] = ("grid.x", "grid.y"),
    ) -> Grid:
        """The grid of two [min, max, num] specs (y None: 1D); `keys` name them in messages (the
        command's grid.x / grid.y, the library's x / y)."""
        kx, ky = keys
        grid = cls(parse_axis(kx, x), None if y is None else parse_axis(ky, y))
        if grid.y is not None:
            for key, spec, axis in ((kx, x, grid.x), (ky, y, grid.y)):
                if len(axis) == 1:
                    raise UserError(
                        f"{key}={_show(spec)} has one point: a 2D surface needs at least 2 along "
                        f"each axis; pass num >= 2, or {ky}=null for a 1D surface along {kx}"
                    )
        return grid

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the metric arrays: (nx,) or (ny, nx)."""
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def coords(self, flat: np.ndarray) -> np.ndarray:
        """Coordinates (K, ndim) of flat point indices (K,), x first."""
        flat = np.asarray(flat, dtype=np.int64)
        if self.y is None:
            return self.x[flat][:, None]
        iy, ix = np.divmod(flat, len(self.x))
        return np.stack([self.x[ix], self.y[iy]], axis=1)


def chunk_indices(pending: np.ndarray, chunk_points: int) -> list[np.ndarray]:
    """Splits pending flat indices into consecutive chunks of at most chunk_points."""
    if chunk_points < 1:
        raise UserError(f"chunk_points={chunk_points} must be >= 1")
    return [pending[i : i + chunk_points] for i in range(0, len(pending), chunk_points)]


def default_chunk_points(n_pending: int, n_workers: int, per_pass: int) -> int:
    """Points per chunk: at least 4 chunks per worker (so a slow rank never holds the rest, and a
    killed run loses little), and no more than one batched engine pass (or 8 points when the
    engine runs one point at a time), so progress and resume stay fine-grained."""
    balanced = math.ceil(max(n_pending, 1) / (4 * max(n_workers, 1)))
    return max(1, min(balanced, max(per_pass, 8)))


# --- the cells of an H×W pattern (MPO) as a surface grid ---------------------------------------


def cell_coords(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Plane axes of an H×W pattern: x = α (columns), y = β (rows), centred on the middle,
    one unit per cell. Pattern row 0 is the top of the picture, so row i sits at β = y[H-1-i]:
    the surface file (row = y index, y ascending) shows the picture upright."""
    h, w = shape
    x = np.arange(w, dtype=np.float64) - (w - 1) / 2
    y = np.arange(h, dtype=np.float64) - (h - 1) / 2
    return x, y


def pattern_to_surface(pattern: np.ndarray) -> np.ndarray:
    """An (H, W) pattern array (row 0 = top) in surface-file orientation (row = y index)."""
    return np.ascontiguousarray(np.asarray(pattern)[::-1])
