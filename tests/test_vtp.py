"""The ParaView export (files/vtp.py, through meshio): read back by real readers (meshio, and
VTK's own reader, the one ParaView uses: the vtk package of the [test] extra), binary, missing
points as holes."""

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


def _vtk_read(vtk, path):
    """(points (N, 3), {point array: values}, cells' point ids (M, 4)) as ParaView's reader,
    VTK's own vtkXMLUnstructuredGridReader, reads the file."""
    from vtk.util.numpy_support import vtk_to_numpy

    reader = vtk.vtkXMLUnstructuredGridReader()
    reader.SetFileName(str(path))
    reader.Update()
    grid = reader.GetOutput()
    data = grid.GetPointData()
    arrays = {
        data.GetArrayName(i): vtk_to_numpy(data.GetArray(i))
        for i in range(data.GetNumberOfArrays())
    }
    cells = np.array(
        [[grid.GetCell(c).GetPointId(k) for k in range(4)] for c in range(grid.GetNumberOfCells())]
    )
    assert all(grid.GetCellType(c) == vtk.VTK_QUAD for c in range(grid.GetNumberOfCells()))
    return vtk_to_numpy(grid.GetPoints().GetData()), arrays, cells


def test_vtk_reads_every_file_the_plot_command_writes_missing_points_included(tmp_path):
    vtk = pytest.importorskip("vtk", reason="vtk is in the [test] extra: pip install vtk")
    import h5py

    z = _partial()
    metrics = {"train_loss": z, "test_loss": z + 1, "train_acc": 100 - z, "test_acc": 90 - z}
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = X, Y
        for name, values in metrics.items():
            f[name] = values
        f["done"] = np.isfinite(z).astype(np.uint8)
    written = []
    for extra in ([], ["--log"], ["--zmax", "1.5"]):
        out = tmp_path / f"o{len(written)}"
        assert plot.main([str(path), "--kind", "vtp", "--out", str(out), *extra]) == 0
        written += sorted(out.glob("*.vtu"))
    assert len(written) == 3 * 2  # a file per loss, per option set
    xx, yy = np.meshgrid(X, Y)
    for vtu in written:
        points, arrays, cells = _vtk_read(vtk, vtu)
        np.testing.assert_array_equal(points[:, 0], xx.ravel())
        np.testing.assert_array_equal(points[:, 1], yy.ravel())
        mine_points, mine_data, mine_quads = read_vtp(vtu)  # meshio agrees with VTK
        np.testing.assert_array_equal(points, mine_points)
        np.testing.assert_array_equal(cells, mine_quads)
        for name, values in metrics.items():  # every metric, NaN where not computed
            np.testing.assert_array_equal(arrays[name], values.ravel())
        assert arrays["vtkGhostType"].tolist() == [HIDDEN_POINT if i == 7 else 0 for i in range(15)]
        assert len(cells) == 4 and 7 not in cells  # the quads around the missing point: holes
        assert np.isnan(points[7, 2]) and np.isfinite(np.delete(points[:, 2], 7)).all()


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
