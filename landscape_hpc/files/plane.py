"""plane.pt: a fitted MPO plane, written by `python -m landscape_hpc.mpo` and by every job of the
sweep (jobs/<job>/plane.pt), read with `torch.load(path, weights_only=True)`:

    origin, up, right   {state_dict key: tensor} on the CPU: θ(α, β) = origin + scale·(α·right +
                        β·up) holds on the model's state_dict (origin includes the buffers; BN
                        scales are γ)
    scale               float
    mask                (H, W) bool tensor, True = low-loss cell (row 0 = top of the picture)
    config              the run's resolved config (YAML text)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape_hpc.errors import UserError
from landscape_hpc.paths import require_regular

PLANE_FILE = "plane.pt"
_KEYS = ("origin", "up", "right", "scale", "mask", "config")


def write_plane(path: Path, exported: Mapping[str, Any], mask: np.ndarray, config: str) -> Path:
    """`exported`: Plane.export() (origin, up, right, scale)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**exported, "mask": torch.from_numpy(np.asarray(mask)), "config": config}, path)
    return path


def read_plane(path: str | Path) -> dict[str, Any]:
    """The plane a plane.pt holds (tensors only: never unpickles code)."""
    require_regular(path)  # a FIFO would block torch.load forever
    try:
        plane = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise UserError(f"{path} is not a plane.pt file ({type(err).__name__})") from None
    missing = [k for k in _KEYS if not isinstance(plane, dict) or k not in plane]
    if missing:
        raise UserError(f"{path} is not a plane.pt file: it lacks {', '.join(missing)}")
    return plane
