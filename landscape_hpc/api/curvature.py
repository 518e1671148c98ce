"""Curvature from Python: at a model's weights, the extreme Hessian eigenvalues by Lanczos and
the trace by Hutchinson's estimator (`hessian`); over a surface's grid, its λ_max / λ_min maps
(`hessian_map`). The `hessian` command's kernels (geometry/curvature.py: point_curvature,
map_curvature), the same code under both."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import xarray as xr
from torch import nn

from landscape_hpc import parallel
from landscape_hpc.api import results
from landscape_hpc.api.options import model_device, on_device, resident_splits
from landscape_hpc.api.surface import state_sha256
from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import Split, subset
from landscape_hpc.errors import UserError, check_seed
from landscape_hpc.files import stored_yaml
from landscape_hpc.files.directions import read_directions
from landscape_hpc.files.hessian_maps import HessianMaps, add_to_report, read_maps
from landscape_hpc.geometry.curvature import (
    PointResult,
    check_config,
    map_curvature,
    map_fingerprint,
    point_curvature,
)
from landscape_hpc.geometry.curvature_job import map_job
from landscape_hpc.grid import Grid


def _config(**keys: Any) -> HessianConfig:
    """The command's HessianConfig of a library call's settings (no model or data set: the
    caller holds them), checked as the command checks it."""
    cfg = HessianConfig(model=ModelConfig(name="library"), dataset=DatasetConfig(), **keys)
    check_config(cfg)
    return cfg


def hessian(
    model: nn.Module,
    data: Any,
    *,
    k: int = 0,
    trace: bool = True,
    density: bool = False,
    blocks: Optional[Sequence[str]] = None,
    split: str = "train",
    loss: str = "auto",
    lanczos_steps: int = 20,
    lanczos_tol: float = 1e-3,
    eigen_steps: int = 100,
    trace_samples: int = 100,
    n_probes: int = 8,
    density_steps: int = 60,
    density_sigma: float = 0.01,
    density_bins: int = 1000,
    seed: int = 0,
    double: bool = False,
    precision: str = "fp32",
    batch_size: int = 1024,
    max_samples: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    comm: Any = None,
) -> Optional[PointResult]:
    """The curvature of the mean loss over one split at the model's weights, as PyHessian
    reports it: λ_max and λ_min (Lanczos), tr H (Hutchinson), and on request the top-k
    eigenpairs, the eigenvalue spectral density (stochastic Lanczos quadrature) and the
    curvature of parameter blocks. The parameters are differentiated, buffers stay fixed, the
    model runs in eval mode on a copy. H is never formed: each product is one backward through
    the gradient's graph, kept once per point. The `hessian` command's point mode, same kernel.

        res = lh.hessian(model, data, k=5, trace=True, density=True)
        res.eigenvalues, res.eigenvectors     # (5,) descending; 5 dicts over the parameters
        res.trace, res.density.grid, res.density.values

    Args:
        model: any nn.Module (not modified).
        data: as lh.surface takes it; `split` names the split differentiated.
        k: the k largest eigenpairs (0: none): result.eigenvalues (k,) descending,
            result.eigen.residuals ‖Hv − λv‖, result.eigenvectors (unit norm parameter dicts:
            lh.surface(model, data, directions=res.eigenvectors[:2]) for a Hessian plane).
        trace: estimate tr H by Hutchinson with `trace_samples` probes (False: NaN).
        density: the spectral density: result.density.grid, .values (integrates to 1), .sigma,
            .nodes and .weights (the raw quadrature, (n_probes, density_steps)), .halves_change
            (the convergence signal: total variation between the halves' densities).
        blocks: per-block λ_max and trace: fnmatch patterns of parameter names, one block
            each, or ["layers"] (one per module); result.blocks. None: no blocks.
        split: the split whose mean loss is differentiated.
        loss: auto (the model's own: lm for gpt_tiny and HF causal LMs, else ce), ce, mse, lm
            (per token, -100 skipped) or lm_aligned.
        lanczos_steps: the most steps of the λ_max/λ_min run. Ritz values lie inside the
            spectrum: max_eig is a lower bound of λ_max, min_eig an upper bound of λ_min.
        lanczos_tol: the λ_max/λ_min run stops once both extreme Ritz values move less than
            this (relative); the top-k and block runs once every residual is ≤ this·|λ_1|.
        eigen_steps: the most steps of the top-k run and of each block's run (at least k).
        trace_samples: Hutchinson probes for tr H (and the blocks' traces).
        n_probes: SLQ probes of the density.
        density_steps: Lanczos steps per SLQ probe (exact moments up to 2·density_steps − 1).
        density_sigma: the density's Gaussian σ as a fraction of the spectrum's width.
        density_bins: points of the density's grid.
        seed: seed of the Lanczos start vectors and the probes.
        double: compute in float64 (small eigenvalues exact, a few times slower).
        precision: fp32, tf32 or bf16 products (engine.precision; float32 only).
        batch_size: samples per forward inside a Hessian-vector product (memory only).
        max_samples: a seeded random subset of at most this many samples of the split.
        device: where to compute (default: the model's device).
        comm: an MPI communicator (default: the world); each quantity (and each chunk of the
            density's probes, each block) is a task of the pool.

    Returns:
        PointResult (max_eig, min_eig, trace, trace_std_error, ritz, lanczos report, eigen,
        eigenvalues, eigenvectors, density, blocks, num_params, num_samples, seconds) on rank
        0; None on the other ranks of an MPI run.
    """
    check_seed(seed, "seed")
    if isinstance(blocks, str):
        raise UserError(f"blocks={blocks!r} is a string; pass a list, e.g. [{blocks!r}]")
    cfg = _config(
        split=split,
        max_samples=max_samples,
        lanczos_steps=lanczos_steps,
        lanczos_tol=lanczos_tol,
        trace_samples=trace_samples if trace else 0,
        k=k,
        eigen_steps=eigen_steps,
        density=density,
        n_probes=n_probes,
        density_steps=density_steps,
        density_sigma=density_sigma,
        density_bins=density_bins,
        blocks=list(blocks or []),
        seed=seed,
        loss=loss,
        double=double,
        precision=precision,
        batch_size=batch_size,
    )
    template = on_device(model, device)
    return point_curvature(template, _split(template, data, split, max_samples, seed), cfg, comm)


def hessian_map(
    model: nn.Module,
    data: Any,
    surface: Union[xr.Dataset, str, Path],
    *,
    split: str = "train",
    loss: Optional[str] = None,
    lanczos_steps: int = 20,
    lanczos_tol: float = 1e-3,
    seed: int = 0,
    double: bool = False,
    batch_size: int = 1024,
    max_samples: Optional[int] = None,
    overwrite: bool = False,
    device: Optional[Union[str, torch.device]] = None,
    comm: Any = None,
    progress: bool = True,
) -> Optional[xr.Dataset]:
    """λ_max and λ_min of the Hessian at every grid point of a surface (Li et al. 2018, "are we
    really seeing convexity?"): the surface with `max_eig`, `min_eig` and `hessian_done` added.
    |min_eig / max_eig| is near 0 where the landscape is convex, large where negative curvature
    dominates. The `hessian` command's surface mode (`surface=s.h5`), on the same kernel.

    Args:
        model: the net the surface was computed around: its weights are the grid's origin (a
            library surface's origin SHA-256 is checked); not modified.
        data: as lh.surface takes it; `split` names the split differentiated.
        surface: a surface Dataset (lh.surface, lh.interpolate, lh.load; its directions in
            ds.attrs["basis"]): the maps are computed in memory; or a surface file's path (the
            surface command's or lh.save's): the maps are written into it as the command does
            (resumed: only points not done; other settings refused unless `overwrite`).
        split: the split whose mean loss is differentiated.
        loss: ce, mse, lm or lm_aligned; None: the surface's own loss (its `loss` or
            `engine.loss`, else ce).
        lanczos_steps: the most Lanczos iterations per point (Ritz values lie inside the
            spectrum: max_eig a lower bound of λ_max, min_eig an upper bound of λ_min).
        lanczos_tol: stop a point once both extreme Ritz values move less than this (relative);
            0: always lanczos_steps steps.
        seed: seed of the Lanczos start vector (and of the max_samples subset).
        double: compute in float64 (small eigenvalues exact, a few times slower).
        batch_size: samples per forward inside a Hessian-vector product (memory only).
        max_samples: a seeded random subset of at most this many samples of the split.
        overwrite: a surface file only: recompute every point, replacing maps made with other
            settings.
        device: where to compute (default: the model's device).
        comm: an MPI communicator (default: the world); one grid point per task of the pool.
        progress: show a progress bar.

    Returns:
        On rank 0 an xarray.Dataset: the surface's variables and attrs, plus max_eig and
        min_eig (float64, NaN = not computed or diverged) and hessian_done (uint8) on its dims;
        max_eig.attrs["hessian"] the settings (JSON), ["lanczos"] the Lanczos report (JSON:
        iterations, not_converged, ...). None on the other ranks of an MPI run.
    """
    check_seed(seed, "seed")
    comm = parallel.world_if_none(comm)
    path, ds = _surface(surface)
    if loss is None:
        loss = _surface_loss(ds)
    cfg = _config(
        surface=None if path is None else str(path),
        split=split,
        max_samples=max_samples,
        lanczos_steps=lanczos_steps,
        lanczos_tol=lanczos_tol,
        seed=seed,
        loss=loss,
        double=double,
        batch_size=batch_size,
        overwrite=overwrite,
    )
    grid = results.grid_of(ds)
    template = on_device(model, device)
    origin = {k: v.detach() for k, v in template.state_dict().items()}
    _check_origin(ds, origin)
    param_keys = [name for name, _ in template.named_parameters()]
    if path is not None:  # as the command reads them (our layout or loss-landscape's)
        basis = read_directions(path, origin, param_keys)
    else:
        basis = _basis_of(ds, origin)
    if len(basis) < grid.ndim:
        raise UserError(
            f"surface= holds {len(basis)} direction(s) for its {grid.ndim}-D grid; pass a surface "
            'from lh.surface or lh.load (its directions in ds.attrs["basis"])'
        )
    chosen = _split(template, data, split, max_samples, seed)
    job = map_job(template, chosen, basis[: grid.ndim], grid, cfg, loss)
    if path is None:
        maps: Any = MemoryMaps(grid) if comm.Get_rank() == 0 else None
    else:
        comm.Barrier()  # every rank has read the file before rank 0 opens it for writing
        fingerprint = map_fingerprint(cfg, loss, job.num_samples)
        maps = HessianMaps.open(path, grid, fingerprint, overwrite, comm)
    settings = json.dumps(map_fingerprint(cfg, loss, job.num_samples), sort_keys=True)
    if map_curvature(job, maps, cfg, comm, progress) is None:
        return None
    if path is not None:
        read = read_maps(path)
        done = read.done.astype(np.uint8)
        ds = results.load(path)
        return _with_maps(ds, read.max_eig, read.min_eig, done, read.settings, read.report)
    return _with_maps(ds, maps.max_eig, maps.min_eig, maps.done, settings, maps.report)


def _split(model: nn.Module, data: Any, split: str, max_samples: Optional[int], seed: int) -> Split:
    """The differentiated split on the model's device (a seeded subset with max_samples)."""
    chosen = resident_splits(data, model_device(model, None), [split], "split")[split]
    return chosen if max_samples is None else subset(chosen, max_samples, seed)


def _surface(surface: Any) -> tuple[Optional[Path], xr.Dataset]:
    if isinstance(surface, xr.Dataset):
        return None, surface
    if isinstance(surface, (str, Path)):
        if not Path(surface).is_file():
            raise UserError(
                f"surface={surface} is not a file; pass a surface file's path or a Dataset"
            )
        return Path(surface), results.load(surface)
    raise UserError(
        f"surface= is a {type(surface).__name__}; pass a surface Dataset (lh.surface, lh.load) "
        "or the path of a surface file"
    )


def _surface_loss(ds: xr.Dataset) -> str:
    """The loss the surface was computed with: the library's `loss` attribute, or the command's
    engine.loss in its `config` (plain YAML); ce when neither says."""
    if isinstance(ds.attrs.get("loss"), str):
        return ds.attrs["loss"]
    try:
        stored = stored_yaml.load_limited(
            str(ds.attrs.get("config", "")), "the surface's `config` attribute"
        )
    except stored_yaml.InvalidYAML:
        return "ce"
    engine = stored.get("engine") if isinstance(stored, dict) else None
    return str(engine.get("loss", "ce")) if isinstance(engine, dict) else "ce"


def _check_origin(ds: xr.Dataset, origin: dict[str, torch.Tensor]) -> None:
    """A library surface records its origin's SHA-256: refuse a model with other weights."""
    try:
        recorded = json.loads(ds.attrs.get("fingerprint", "{}")).get("origin_sha256")
    except (TypeError, ValueError, AttributeError):
        return
    if recorded and recorded != state_sha256(origin):
        raise UserError(
            "model= is not the net surface= was computed around (its weights' SHA-256 differs "
            "from the surface's origin_sha256); pass that model with its weights unchanged"
        )


def _basis_of(ds: xr.Dataset, origin: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """ds.attrs["basis"] as tensors like the model's (dtype, device), checked against it."""
    basis = []
    for i, direction in enumerate(ds.attrs.get("basis", [])):
        unknown = sorted(set(direction) - set(origin))
        wrong = [k for k in direction if k in origin and np.shape(direction[k]) != origin[k].shape]
        if unknown or wrong:
            raise UserError(
                f'surface.attrs["basis"][{i}] does not fit model=: keys not in its state_dict '
                f"{unknown[:5]}, shapes unlike its {wrong[:5]}; pass the surface's own model"
            )
        like = {k: origin[k] for k in direction}
        basis.append({k: torch.as_tensor(np.asarray(v)).to(like[k]) for k, v in direction.items()})
    return basis


class MemoryMaps:
    """The maps of a surface Dataset in memory: what map_curvature writes to on rank 0, as it
    writes a surface file's (files/hessian_maps.py: HessianMaps), every point pending."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.max_eig = np.full(grid.shape, np.nan)
        self.min_eig = np.full(grid.shape, np.nan)
        self.done = np.zeros(grid.shape, np.uint8)
        self.report: dict[str, Any] = {}

    def pending(self) -> np.ndarray:
        return np.flatnonzero(self.done.reshape(-1) == 0)

    def write(self, flat: int, max_eig: float, min_eig: float, lanczos: Any = None) -> None:
        index = np.unravel_index(flat, self.grid.shape)
        self.max_eig[index], self.min_eig[index], self.done[index] = max_eig, min_eig, 1
        if lanczos is not None:
            self.report = add_to_report(self.report, flat, lanczos)

    def close(self) -> None:
        pass


def _with_maps(
    ds: xr.Dataset,
    max_eig: np.ndarray,
    min_eig: np.ndarray,
    done: np.ndarray,
    settings: str,
    report: dict[str, Any],
) -> xr.Dataset:
    dims = ("y", "x") if "y" in ds.dims else ("x",)
    out = ds.copy()
    meta = {"units": "1", "long_name": "largest Hessian eigenvalue", "hessian": settings}
    out["max_eig"] = (dims, max_eig, {**meta, "lanczos": json.dumps(report, sort_keys=True)})
    out["min_eig"] = (dims, min_eig, {"units": "1", "long_name": "smallest Hessian eigenvalue"})
    out["hessian_done"] = (dims, done, {"long_name": "1 = the point's eigenvalues are final"})
    return out
