"""landscape_hpc: loss landscapes of neural networks, on a laptop or across a GPU cluster.

From Python, with a model and data that exist only in memory:

    import landscape_hpc as lh
    ds = lh.surface(model, {"train": (x, y)}, x=(-1, 1, 51), y=(-1, 1, 51))  # xarray.Dataset
    ds.train_loss.plot()
    fig = lh.plot(ds, kind="html")                 # plotly: turn, hover; fig.show() inline
    lh.save(ds, "s.h5"); ds = lh.load("s.h5")      # the surface command's HDF5 file
    line = lh.interpolate(model_a, model_b, data, t=(-0.5, 1.5, 41))
    line = lh.interpolate(model_a, lh.align(model_a, model_b), data)  # units matched first
    s = lh.sharpness(model, data, rise=0.1)        # how far the loss stays within 0.1 nats
    eig = lh.hessian(model, data)                  # λ_max, λ_min (Lanczos), tr H (Hutchinson)
    dirs, path = lh.pca_directions(states)         # PCA of a trajectory; its path projected
    res = lh.fit_mpo(model, data, lh.mpo_mask("builtin", name="ring", size=20))  # MPO plane

On a cluster, the same functions under the commands: `mpirun -n 8 python -m
landscape_hpc.surface ...` (README). `help(lh.surface)` explains every argument.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: name at the package's face -> the module that defines it (imported on first use, so that
#: `import landscape_hpc` stays cheap and the commands do not load the library's imports)
_FACE = {
    "surface": "landscape_hpc.api.surface",
    "interpolate": "landscape_hpc.api.surface",
    "auto_range": "landscape_hpc.api.auto_range",
    "lines": "landscape_hpc.api.sharpness",
    "sharpness": "landscape_hpc.api.sharpness",
    "save": "landscape_hpc.api.results",
    "load": "landscape_hpc.api.results",
    "plot": "landscape_hpc.api.plot",
    "project": "landscape_hpc.api.project",
    "random_directions": "landscape_hpc.api.directions",
    "pca_directions": "landscape_hpc.api.directions",
    "save_directions": "landscape_hpc.api.directions",
    "load_directions": "landscape_hpc.api.directions",
    "fit_mpo": "landscape_hpc.api.mpo",
    "mpo_mask": "landscape_hpc.api.mpo",
    "hessian": "landscape_hpc.api.curvature",
    "hessian_map": "landscape_hpc.api.curvature",
    "align": "landscape_hpc.api.align",
    "tunnel": "landscape_hpc.api.geometry",
    "connector": "landscape_hpc.api.geometry",
    "tunnel_width": "landscape_hpc.api.geometry",
    "short_directions": "landscape_hpc.api.short_dirs",
    "swa_average": "landscape_hpc.api.swa",
    "curve": "landscape_hpc.api.connectivity",
    "curve_plane": "landscape_hpc.api.connectivity",
    "subspace_training": "landscape_hpc.api.intrinsic_dim",
    "wedge": "landscape_hpc.api.intrinsic_dim",
    "Subspace": "landscape_hpc.engine.subspace",
    "UserError": "landscape_hpc.errors",
}

__all__ = [*_FACE, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _FACE:
        value = getattr(importlib.import_module(_FACE[name]), name)
        globals()[name] = value  # found once
        return value
    raise AttributeError(f"module 'landscape_hpc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package's module object: a face name is always the library function. Importing a
    submodule of the same name (landscape_hpc.hessian: Lanczos and Hutchinson; .surface: the
    command's `python -m` entry) would otherwise bind the module over it, so that `lh.hessian`
    meant the function or the module depending on what ran first. The submodules stay in
    sys.modules: `from landscape_hpc.hessian import lanczos_run` is unchanged."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FACE and isinstance(value, types.ModuleType):
            return  # the import system binding a submodule: the face keeps the name
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
