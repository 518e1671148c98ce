"""The surface file speaks to the field's tools: HDF5 dimension scales on x and y (netCDF readers
such as xarray see them as coordinates, two dimensions even on a square grid), units and
long_name on every metric, the software versions in the root attributes; loss-landscape's names
and orientation unchanged. Also through parallel HDF5 under mpirun (io=mpio)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi_helpers import h5py_has_mpi, mpirun_available, surface_argv, surface_env

from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface

FAST = ["model=mlp", "dataset.max_samples=40", "plot=false"]
NAMES = ("train_loss", "train_acc", "test_loss", "test_acc", "done")


def _surface(out: Path, *overrides: str) -> Path:
    return compute_surface(compose_config("surface", [f"out={out}", *FAST, *overrides]))


def check_scales(path: Path, two_d: bool) -> None:
    """What any HDF5 dimension-scale reader sees, checked with h5py alone."""
    with h5py.File(path, "r") as f:
        x = f["xcoordinates"]
        assert x.is_scale and x.attrs["units"] == "1"
        for name in NAMES:
            ds = f[name]
            assert ds.dims[ds.ndim - 1][0] == x, name
            if two_d:
                y = f["ycoordinates"]
                assert y.is_scale and ds.dims[0][0] == y and ds.dims[0][0] != x
        assert f["train_loss"].attrs["units"] == "1"
        assert f["train_acc"].attrs["units"] == "percent"
        assert "accuracy" in f["test_acc"].attrs["long_name"]
        attrs = dict(f.attrs)
    for key in ("landscape_hpc", "torch", "numpy", "h5py", "python"):
        assert attrs[f"{key}_version"], key


@pytest.mark.parametrize("grid", [["grid.x=[-1,1,3]", "grid.y=[-1,1,3]"], ["grid.x=[-1,1,4]"]])
def test_dimension_scales_units_and_versions(tmp_path, grid):
    two_d = len(grid) == 2
    out = _surface(tmp_path / "s.h5", *grid, *([] if two_d else ["grid.y=null"]))
    check_scales(out, two_d)
    with h5py.File(out, "r") as f:  # loss-landscape's names and orientation: (ny, nx)
        assert f["train_loss"].shape == ((3, 3) if two_d else (4,))


def test_xarray_sees_x_and_y_as_coordinates_on_a_square_grid(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    out = _surface(tmp_path / "s.h5", "grid.x=[-1,1,3]", "grid.y=[-0.5,0.5,3]")
    with xr.open_dataset(out, engine="h5netcdf", phony_dims="access") as ds:
        loss = ds["train_loss"]
        assert loss.dims == ("ycoordinates", "xcoordinates")
        np.testing.assert_allclose(ds["xcoordinates"].values, [-1, 0, 1])
        np.testing.assert_allclose(ds["ycoordinates"].values, [-0.5, 0, 0.5])
        assert loss.attrs["units"] == "1" and "loss" in loss.attrs["long_name"]
        # a point by its coordinates: x = 1 (column 2), y = -0.5 (row 0)
        with h5py.File(out, "r") as f:
            want = f["train_loss"][0, 2]
        assert float(loss.sel(xcoordinates=1.0, ycoordinates=-0.5)) == want


@pytest.mark.skipif(not (mpirun_available() and h5py_has_mpi()), reason="needs mpirun, MPI h5py")
def test_dimension_scales_created_collectively_under_mpio(tmp_path):
    out = tmp_path / "m.h5"
    argv = surface_argv(
        2, tmp_path / "run", [*FAST, "io=mpio", "grid.x=[-1,1,3]", "grid.y=[-1,1,3]", f"out={out}"]
    )
    r = subprocess.run(argv, env=surface_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    check_scales(out, two_d=True)
    with h5py.File(out, "r") as f:
        assert f.attrs["io_driver"] == "mpio" and f["done"][()].all()
