"""ParaView export: a 2D surface as VTK PolyData (.vtp, XML, ASCII).

The grid becomes a sheet of quads whose height is the metric (optionally log10, optionally
clipped), and every metric is attached as point data, so ParaView can colour by any of them.
Written by hand (the format is small and documented) rather than through the 100 MB vtk wheel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np


def surface_heights(z: np.ndarray, log: bool = False, zmax: Optional[float] = None) -> np.ndarray:
    """The height of every grid point: z clipped at zmax, then log10 when asked."""
    h = np.asarray(z, dtype=np.float64)
    if zmax is not None:
        h = np.minimum(h, zmax)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.log10(h)
    return h


def _floats(a: np.ndarray) -> str:
    return " ".join("nan" if not np.isfinite(v) else repr(float(v)) for v in a.ravel())


def write_vtp(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray,
    height: np.ndarray,
    point_data: Mapping[str, np.ndarray],
) -> Path:
    """Writes the sheet over x (nx,), y (ny,) with heights (ny, nx) and point data arrays (ny, nx).

    Point (iy, ix) has index iy·nx + ix; a quad is kept only where its four heights are finite.
    """
    path = Path(path)
    ny, nx = len(y), len(x)
    X, Y = np.meshgrid(x, y)  # (ny, nx)
    points = np.stack([X.ravel(), Y.ravel(), height.ravel()], axis=1)  # (ny·nx, 3)
    finite = np.isfinite(height)
    quads = [
        (iy * nx + ix, iy * nx + ix + 1, (iy + 1) * nx + ix + 1, (iy + 1) * nx + ix)
        for iy in range(ny - 1)
        for ix in range(nx - 1)
        if finite[iy, ix] and finite[iy, ix + 1] and finite[iy + 1, ix] and finite[iy + 1, ix + 1]
    ]
    connectivity = " ".join(str(i) for q in quads for i in q)
    offsets = " ".join(str(4 * (k + 1)) for k in range(len(quads)))
    first = next(iter(point_data), "")
    arrays = "\n".join(
        f'    <DataArray type="Float64" Name="{name}" format="ascii">{_floats(values)}</DataArray>'
        for name, values in point_data.items()
    )
    path.write_text(
        f"""<?xml version="1.0"?>
<VTKFile type="PolyData" version="0.1" byte_order="LittleEndian">
 <PolyData>
  <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" \
NumberOfPolys="{len(quads)}">
   <PointData Scalars="{first}">
{arrays}
   </PointData>
   <Points>
    <DataArray type="Float64" NumberOfComponents="3" format="ascii">{_floats(points)}</DataArray>
   </Points>
   <Polys>
    <DataArray type="Int64" Name="connectivity" format="ascii">{connectivity}</DataArray>
    <DataArray type="Int64" Name="offsets" format="ascii">{offsets}</DataArray>
   </Polys>
  </Piece>
 </PolyData>
</VTKFile>
"""
    )
    return path


def read_vtp(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Reads back what write_vtp writes: points (N, 3), point data {name: (N,)}, quads (M, 4)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    piece = root.find("PolyData/Piece")

    def values(el, dtype):
        text = (el.text or "").split()
        return np.array([float(t) for t in text], dtype=np.float64).astype(dtype)

    points = values(piece.find("Points/DataArray"), np.float64).reshape(-1, 3)
    data = {el.get("Name"): values(el, np.float64) for el in piece.findall("PointData/DataArray")}
    conn = values(piece.find("Polys/DataArray[@Name='connectivity']"), np.int64).reshape(-1, 4)
    return points, data, conn
