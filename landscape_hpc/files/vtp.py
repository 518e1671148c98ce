"""ParaView export: a 2D surface as a VTK XML unstructured grid (.vtu), written by meshio
(binary, zlib-compressed), read by ParaView, VisIt, the vtk package and meshio.

The grid becomes a sheet of quads whose height is the metric (optionally log10, optionally
clipped), and every metric is attached as point data, so ParaView can colour by any of them.
Missing points (not computed yet, NaN) are holes: a quad is kept only where its four heights are
finite; the points themselves stay (z and their values NaN) and are marked hidden in
`vtkGhostType` (VTK's HIDDENPOINT flag), so point (iy, ix) keeps index iy·nx + ix.
(`python -m landscape_hpc.plot s.h5 --kind vtp` names the kind after the PolyData files it wrote
before; the file is now `.vtu`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np

#: VTK's vtkDataSetAttributes::HIDDENPOINT bit of the vtkGhostType point array
HIDDEN_POINT = 2
SUFFIX = ".vtu"


def surface_heights(z: np.ndarray, log: bool = False, zmax: Optional[float] = None) -> np.ndarray:
    """The height of every grid point: z clipped at zmax, then log10 when asked."""
    h = np.asarray(z, dtype=np.float64)
    if zmax is not None:
        h = np.minimum(h, zmax)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.log10(h)
    return h


def write_vtp(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    height: np.ndarray,
    point_data: Mapping[str, np.ndarray],
) -> Path:
    """Writes the sheet over x (nx,), y (ny,) with heights (ny, nx) and point data arrays
    (ny, nx) to `path` with the suffix .vtu; returns the path written."""
    import meshio

    path = Path(path).with_suffix(SUFFIX)
    nx = len(x)
    X, Y = np.meshgrid(np.asarray(x, np.float64), np.asarray(y, np.float64))  # (ny, nx)
    height = np.asarray(height, dtype=np.float64)
    points = np.stack([X.ravel(), Y.ravel(), height.ravel()], axis=1)  # (ny·nx, 3)
    finite = np.isfinite(height)
    iy, ix = np.nonzero(finite[:-1, :-1] & finite[1:, :-1] & finite[:-1, 1:] & finite[1:, 1:])
    first = iy * nx + ix
    quads = np.stack([first, first + 1, first + nx + 1, first + nx], axis=1).astype(np.int64)
    data = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in point_data.items()}
    data["vtkGhostType"] = np.where(finite.ravel(), 0, HIDDEN_POINT).astype(np.uint8)
    cells = [("quad", quads)] if len(quads) else []
    mesh = meshio.Mesh(points, cells, point_data=data)
    meshio.write(path, mesh, file_format="vtu", binary=True, compression="zlib")
    return path


def read_vtp(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Reads a written sheet back with meshio: points (N, 3), point data {name: (N,)} (without
    vtkGhostType), quads (M, 4)."""
    import meshio

    mesh = meshio.read(path)
    quads = [block.data for block in mesh.cells if block.type == "quad"]
    data = {k: np.asarray(v) for k, v in mesh.point_data.items() if k != "vtkGhostType"}
    conn = np.concatenate(quads) if quads else np.zeros((0, 4), np.int64)
    return np.asarray(mesh.points, np.float64), data, conn
