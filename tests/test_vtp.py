"""The ParaView export (files/vtp.py, through meshio): read back by a real reader (meshio; also
the vtk package where it is installed), binary, missing points as holes."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from landscape_hpc.files.vtp import HIDDEN_POINT, read_vtp, write_vtp

plot = importlib.import_module("landscape_hpc.plot")  # the command (lh.plot: the function)

X = np.linspace(-1, 1, 5)
Y = np.linspace(-0.5, 0.5, 3)


def _partial() -> np.ndarray:
    xx, yy = np.meshgrid(X, Y)
    z = 1 + xx**2 + yy**2
    z[1, 2] = np.nan  # the middle point not computed: the four quads around it are holes
    return z


def test_partial_surface_has_holes_and_hidden_points(tmp_path):
    z = _partial()
    path = write_vtp(tmp_path / "s.vtp", X, Y, z, {"train_loss": z})
    head = path.read_bytes()[:4000]
    assert path.suffix == ".vtu" and b'format="binary"' in head and b"vtkZLibDataCompressor" in head
    points, data, quads = read_vtp(path)
    assert points.shape == (15, 3) and np.isnan(points[7, 2])
    assert quads.shape == (4 * 2 - 4, 4) and 7 not in quads
    np.testing.assert_array_equal(data["train_loss"], z.ravel())
    import meshio

    ghost = meshio.read(path).point_data["vtkGhostType"]
    assert ghost.tolist() == [HIDDEN_POINT if i == 7 else 0 for i in range(15)]


def test_every_quad_has_its_four_corners_in_grid_order(tmp_path):
    z = np.arange(15, dtype=float).reshape(3, 5)
    points, _, quads = read_vtp(write_vtp(tmp_path / "s.vtu", X, Y, z, {"z": z}))
    assert quads.shape == (8, 4)
    corners = points[quads]  # (8, 4, 3): counter-clockwise from the lower left
    assert (corners[:, 1, 0] > corners[:, 0, 0]).all() and (
        corners[:, 3, 1] > corners[:, 0, 1]
    ).all()


def test_vtk_reads_it_where_installed(tmp_path):
    vtk = pytest.importorskip("vtk")
    z = _partial()
    path = write_vtp(tmp_path / "s.vtu", X, Y, z, {"train_loss": z})
    reader = vtk.vtkXMLUnstructuredGridReader()
    reader.SetFileName(str(path))
    reader.Update()
    grid = reader.GetOutput()
    assert grid.GetNumberOfPoints() == 15 and grid.GetNumberOfCells() == 4


def test_plot_command_keeps_its_options(tmp_path):
    import h5py

    path = tmp_path / "s.h5"
    z = _partial()
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = X, Y
        f["train_loss"] = z
        f["done"] = np.isfinite(z).astype(np.uint8)
    args = [str(path), "--kind", "vtp", "--log", "--zmax", "1.5", "--out", str(tmp_path / "o")]
    assert plot.main(args) == 0
    points, data, quads = read_vtp(tmp_path / "o" / "s_train_loss_log.vtu")
    np.testing.assert_allclose(points[:, 2], np.log10(np.minimum(z, 1.5)).ravel())
    assert len(quads) == 4
