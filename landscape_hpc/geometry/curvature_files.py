"""What the `hessian` command's point mode writes (in out_dir) and prints:

hessian_point.csv          one row: max_eig, min_eig, trace, settings, Lanczos report
hessian_ritz.png           the Lanczos Ritz values
hessian_eigen.csv          k > 0: index, eigenvalue, residual ‖Hv − λv‖, relative residual
hessian_eigenvectors.h5    k > 0: the unit eigenvectors, a directions file (x, y, 2, ...;
                           attrs eigenvalues, residuals): directions.load= reads x and y
hessian_density.csv        density: eigenvalue, density (Gaussian σ in the header comment)
hessian_slq.csv            density: probe, node, weight (the raw quadrature)
hessian_density.png        density: log density over the eigenvalues, as PyHessian's
hessian_blocks.csv         blocks: block, params, max_eig, residual, trace, trace_std_error
hessian_blocks.png         blocks: λ_max and trace per block
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from landscape_hpc.config import HessianConfig
from landscape_hpc.files.directions import write_direction_file
from landscape_hpc.geometry.curvature_point import PointResult


def _write_rows(path: Path, rows: list[dict], comment: str = "") -> Path:
    with open(path, "w", newline="") as f:
        if comment:
            f.write(f"# {comment}\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_point(result: PointResult, cfg: HessianConfig, out_dir: Path) -> Path:
    """hessian_point.csv: one row, its columns in the order below."""
    out_dir.mkdir(parents=True, exist_ok=True)
    row = {
        "max_eig": result.max_eig,
        "min_eig": result.min_eig,
        "abs_min_over_max": abs(result.min_eig / result.max_eig),
        "trace": result.trace,
        "lanczos_steps": len(result.ritz),
        "trace_samples": cfg.trace_samples,
        "num_params": result.num_params,
        "num_samples": result.num_samples,
        "seconds": round(result.seconds, 3),
        "lanczos_max_steps": cfg.lanczos_steps,
        "lanczos_tol": cfg.lanczos_tol,
        "precision": cfg.precision,
        **{f"lanczos_{k}": v for k, v in result.lanczos.items() if k != "iterations"},
    }
    return _write_rows(out_dir / "hessian_point.csv", [row])


def write_point_files(result: PointResult, cfg: HessianConfig, out: Path) -> list[Path]:
    """Every file of the point mode that cfg asks for (the module's docstring)."""
    files = [write_point(result, cfg, out)]
    if result.eigen is not None:
        e = result.eigen
        scale = max(abs(float(e.values[0])), 1e-30)
        rows = [
            {"index": i, "eigenvalue": float(v), "residual": float(r),
             "relative_residual": float(r) / scale}
            for i, (v, r) in enumerate(zip(e.values, e.residuals))
        ]  # fmt: skip
        files.append(_write_rows(out / "hessian_eigen.csv", rows))
        attrs = {"eigenvalues": [float(v) for v in e.values],
                 "residuals": [float(r) for r in e.residuals], "kind": "hessian",
                 "lanczos_steps": e.steps, "converged": int(e.converged)}  # fmt: skip
        files.append(write_direction_file(out / "hessian_eigenvectors.h5", e.vectors, attrs))
    d = result.density
    if d is not None:
        rows = [{"eigenvalue": float(t), "density": float(p)} for t, p in zip(d.grid, d.values)]
        note = (f"ESD by SLQ: {len(d.nodes)} probes x {d.nodes.shape[1]} steps, Gaussian sigma "
                f"{d.sigma:.6g}, halves_change {d.halves_change:.4g}")  # fmt: skip
        files.append(_write_rows(out / "hessian_density.csv", rows, note))
        raw = [
            {"probe": i, "node": float(n), "weight": float(w)}
            for i in range(len(d.nodes)) for n, w in zip(d.nodes[i], d.weights[i])
        ]  # fmt: skip
        files.append(_write_rows(out / "hessian_slq.csv", raw))
    if result.blocks:
        rows = [
            {"block": b.name, "params": len(b.index), "max_eig": b.max_eig,
             "residual": b.residual, "trace": b.trace, "trace_std_error": b.trace_std_error}
            for b in result.blocks
        ]  # fmt: skip
        files.append(_write_rows(out / "hessian_blocks.csv", rows))
    if cfg.plot:
        from landscape_hpc.geometry import figures, spectrum_figures

        name = cfg.model.name
        files.append(figures.plot_ritz(result.ritz, out / "hessian_ritz.png", name))
        if d is not None:
            files.append(spectrum_figures.plot_density(d, out / "hessian_density.png", name))
        if result.blocks:
            files.append(
                spectrum_figures.plot_blocks(result.blocks, out / "hessian_blocks.png", name)
            )
    return files


def summarize_point(result: PointResult, cfg: HessianConfig) -> str:
    ratio = abs(result.min_eig / result.max_eig)
    lines = [
        f"Hessian of the mean {cfg.split} loss of {cfg.model.name} "
        f"({result.num_params} parameters, {result.num_samples} samples):",
        f"  max eigenvalue {result.max_eig:.6g}, min eigenvalue {result.min_eig:.6g}, "
        f"|min/max| {ratio:.4g}  ({len(result.ritz)} Lanczos steps)",
    ]
    if np.isfinite(result.trace):
        lines.append(
            f"  trace ≈ {result.trace:.6g} ± {result.trace_std_error:.2g} (Hutchinson, "
            f"{cfg.trace_samples} probes)"
        )
    if result.eigen is not None:
        values = ", ".join(f"{v:.6g}" for v in result.eigen.values)
        lines.append(
            f"  top-{len(result.eigen.values)} eigenvalues {values} (worst residual "
            f"{result.eigen.worst_relative_residual():.2g}·|λ_1|, {result.eigen.steps} steps)"
        )
    if result.density is not None:
        d = result.density
        lines.append(
            f"  spectral density: {len(d.nodes)} probes × {d.nodes.shape[1]} steps, σ "
            f"{d.sigma:.3g}, halves differ by {d.halves_change:.3g} (total variation), SLQ "
            f"trace {d.trace:.6g}"
        )
    for b in result.blocks:
        lines.append(
            f"  block {b.name}: {len(b.index)} params, λ_max {b.max_eig:.6g}, trace {b.trace:.6g}"
        )
    lines.append(f"  {result.seconds:.1f} s")
    return "\n".join(lines)
