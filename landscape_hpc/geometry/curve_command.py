"""The `curve` command: a trained curve between two optima (Garipov et al. 2018; the maths in
geometry/curve.py, the core in curve_job.py, also under lh.curve).

    python -m landscape_hpc.geometry curve optima=[runs/a/model.pt,runs/b/model.pt] kind=bezier
    python -m landscape_hpc.geometry curve optima=[a.pt,b.pt] kind=polychain steps=3000 \\
        lr=0.03 model=resnet20 dataset=cifar10 dataset.root=~/data device=cuda out_dir=runs/c

Resumable: every `checkpoint_every` steps the training is saved to out_dir/curve_checkpoint.pt
(tensors only: the bend, the step, the optimiser's state tensors, the generator of t, the t
and loss of every step, and a digest of the job; read back with weights_only=True); rerun with
the same out_dir to continue it (raise steps= to train further). A checkpoint of another job
(other optima, kind, optimiser or seed) is refused. The result: curve.csv (both paths per
split and t), curve.h5 and line.h5 (1D surface files along t, x = t, with barrier_<split>
attributes: lh.load and the plot command read them), curve_bend.pt (the bend, a state dict)
and, with plot=true, curve.png. With plane=true also plane.h5 (a 2D surface file over the
plane through θ_a, the bend and θ_b, its attrs the coordinates of the curve, the line and the
three points) and, with plot=true, curve_plane.png (Garipov et al.'s Figure 1).
One process: the bend's training is one sequential optimisation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from landscape_hpc import parallel
from landscape_hpc.config import CurveConfig
from landscape_hpc.engine.evaluate import check_engine
from landscape_hpc.engine.losses import default_loss
from landscape_hpc.errors import UserError
from landscape_hpc.files import surface as surface_file
from landscape_hpc.geometry.app import Report, experiment_main
from landscape_hpc.geometry.curve import BendTraining, CurveOptions, make_optimizer
from landscape_hpc.geometry.curve_job import (
    CurveResult,
    PlaneResult,
    check_positions,
    evaluate_plane,
    finish_curve,
    plane_attrs,
    summarize_curve,
    train_curve,
)
from landscape_hpc.geometry.hull import Optima, load_optima, write_metrics_csv
from landscape_hpc.grid import Grid

CHECKPOINT = "curve_checkpoint.pt"


def options_of(cfg: CurveConfig) -> CurveOptions:
    return CurveOptions(cfg.kind, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.steps)


def positions(cfg: CurveConfig) -> np.ndarray:
    return check_positions(Grid.from_spec(list(cfg.t), None, keys=("t", "y")).x)


def check_config(cfg: CurveConfig) -> None:
    if len(cfg.optima) != 2:
        raise UserError(
            f"optima lists {len(cfg.optima)} checkpoint(s); a curve joins exactly two: "
            "optima=[a.pt,b.pt]"
        )
    options_of(cfg)
    positions(cfg)
    check_engine(cfg.engine)
    if cfg.train_batch_size is not None and cfg.train_batch_size < 1:
        raise UserError(f"train_batch_size={cfg.train_batch_size} must be at least 1 (or null)")
    if cfg.plane and cfg.plane_num < 2:
        raise UserError(f"plane_num={cfg.plane_num} must be at least 2 (points per axis)")
    if cfg.plane and not cfg.plane_margin >= 0:
        raise UserError(f"plane_margin={cfg.plane_margin} must be ≥ 0 (a fraction of the span)")
    if cfg.checkpoint_every < 0:
        raise UserError(f"checkpoint_every={cfg.checkpoint_every} must be ≥ 0 (0: none)")


def job_digest(cfg: CurveConfig, optima: Optima) -> torch.Tensor:
    """SHA-256 (uint8 (32,)) of what makes a training the same: the optima's weights, the kind,
    the optimiser, the minibatches and the seed (not steps: a rerun may train further)."""
    h = hashlib.sha256()
    keys = ("kind", "optimizer", "lr", "momentum", "weight_decay", "train_batch_size", "seed")
    h.update(json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True).encode())
    h.update(cfg.engine.loss.encode())
    for state in optima.states:
        h.update(optima.flat(state).detach().double().cpu().numpy().tobytes())
    return torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)


def training_tensors(training: BendTraining, digest: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training as a flat dict of tensors (what torch.save writes and weights_only reads)."""
    out = {
        "bend": training.bend.detach().cpu(),
        "step": torch.tensor(training.step),
        "ts": torch.tensor(training.ts, dtype=torch.float64),
        "losses": torch.tensor(training.losses, dtype=torch.float64),
        "job": digest,
    }
    if training.generator_state is not None:
        out["generator"] = training.generator_state
    for state in (training.optimizer_state or {}).get("state", {}).values():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"optimizer.{name}"] = value.detach().cpu()
    return out


def training_from(saved: dict[str, Any], options: CurveOptions, device: torch.device):
    """The BendTraining of a checkpoint's tensors, its optimiser state rebuilt for `options`."""
    bend = saved["bend"].to(device)
    param_groups = make_optimizer(bend.clone().requires_grad_(True), options).state_dict()
    state = {k[len("optimizer.") :]: v.to(device) for k, v in saved.items()
             if k.startswith("optimizer.")}  # fmt: skip
    if "step" in state:  # Adam's step count stays on the CPU
        state["step"] = state["step"].cpu()
    optimizer_state = {
        "state": {0: state} if state else {},
        "param_groups": param_groups["param_groups"],
    }
    return BendTraining(
        bend, int(saved["step"]), optimizer_state, saved.get("generator"),
        saved["ts"].tolist(), saved["losses"].tolist(),
    )  # fmt: skip


def load_checkpoint(
    path: Path, digest: torch.Tensor, options: CurveOptions, device: torch.device
) -> Optional[BendTraining]:
    """The saved training to continue (None when there is none); another job's is refused."""
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not torch.equal(saved.get("job", torch.zeros(0, dtype=torch.uint8)), digest):
        raise UserError(
            f"{path} is the checkpoint of another curve (other optima, kind, optimiser, "
            "minibatches or seed); delete it or choose another out_dir="
        )
    return training_from(saved, options, device)


def run_curve(cfg: CurveConfig, comm: Any = None) -> CurveResult:
    """The command's core: load the optima, train (resuming out_dir's checkpoint) with a
    checkpoint every cfg.checkpoint_every steps, evaluate."""
    return _run(cfg, comm)[0]


def _run(cfg: CurveConfig, comm: Any = None) -> tuple[CurveResult, Optional[PlaneResult]]:
    comm = parallel.world_if_none(comm)
    if comm.Get_size() > 1:
        raise UserError(
            "the curve command runs on one process (the bend's training is one sequential "
            "optimisation): run it without mpirun"
        )
    check_config(cfg)
    optima = load_optima(cfg.model, cfg.dataset, [str(p) for p in cfg.optima], cfg.device, comm)
    optima.problem.require(list(cfg.splits))
    if cfg.engine.loss == "auto":
        cfg = dataclasses.replace(
            cfg, engine=dataclasses.replace(cfg.engine, loss=default_loss(optima.problem.model))
        )
    options = options_of(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digest = job_digest(cfg, optima)
    checkpoint = out / CHECKPOINT
    training = load_checkpoint(checkpoint, digest, options, optima.problem.device)
    every = cfg.checkpoint_every or cfg.steps
    while training is None or training.step < cfg.steps:
        done = 0 if training is None else training.step
        until = min(cfg.steps, (done // every + 1) * every) if every else cfg.steps
        training = train_curve(optima, options, cfg.train_batch_size, cfg.seed,
                               cfg.engine.loss, training, until)  # fmt: skip
        if cfg.checkpoint_every:  # written beside, then moved: a kill never leaves half a file
            partial = checkpoint.with_name(checkpoint.name + ".partial")
            torch.save(training_tensors(training, digest), partial)
            os.replace(partial, checkpoint)
        if cfg.steps == 0:
            break
    result = finish_curve(optima, training, cfg.kind, positions(cfg), list(cfg.splits),
                          cfg.engine)  # fmt: skip
    if not cfg.plane:
        return result, None
    plane = evaluate_plane(optima, result.bend, cfg.kind, result.t, list(cfg.splits), cfg.engine,
                           num=cfg.plane_num, margin=cfg.plane_margin)  # fmt: skip
    return result, plane


def write_plane(path: Path, plane: PlaneResult, attrs: dict[str, Any]) -> Path:
    """The plane as a 2D surface file (origin θ_a, directions u, v), with the coordinates of the
    curve, the line and the three points as attributes (plane_attrs)."""
    splits = list(plane.metrics)
    fingerprint = {"curve_plane": True, "x": plane.grid.x.tolist(), "y": plane.grid.y.tolist(),
                   **attrs}  # fmt: skip
    basis = [{k: v.detach().cpu() for k, v in d.items()} for d in plane.basis]
    f = surface_file.SurfaceFile.open(path, plane.grid, basis, splits, fingerprint, attrs, True)
    try:
        values = {}
        for s, (loss, acc) in plane.metrics.items():
            values[f"{s}_loss"], values[f"{s}_acc"] = loss.reshape(-1), acc.reshape(-1)
        f.write(np.arange(plane.grid.size), values)
    finally:
        f.close()
    surface_file.write_summary(path, {}, {**plane_attrs(plane.coords), "directions": "curve_plane"})
    return path


def write_surface(path: Path, result: CurveResult, kind: str, basis: list, attrs: dict) -> Path:
    """One path's metrics along t as a 1D surface file (x = t), its barriers as attributes."""
    splits = list(result.metrics)
    grid = Grid(result.t, None)
    fingerprint = {"curve": kind, "t": result.t.tolist(), **attrs}
    f = surface_file.SurfaceFile.open(path, grid, basis, splits, fingerprint, attrs, True)
    try:
        values = {}
        for s, kinds in result.metrics.items():
            values[f"{s}_loss"], values[f"{s}_acc"] = kinds[kind]
        f.write(np.arange(len(result.t)), values)
    finally:
        f.close()
    barriers = {}
    for s, kinds in result.barriers.items():
        barriers[f"barrier_{s}"], barriers[f"barrier_t_{s}"] = kinds[kind]
    surface_file.write_summary(path, {}, barriers)
    return path


def write_curve(result: CurveResult, out: Path, attrs: dict[str, Any]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv = write_metrics_csv(out / "curve.csv", ["t"], [result.t], result.metrics)
    curve = write_surface(out / "curve.h5", result, "curve", [], {**attrs, "path": "curve"})
    line = write_surface(out / "line.h5", result, "line", [], {**attrs, "path": "line"})
    bend = out / "curve_bend.pt"
    torch.save({k: v.detach().cpu() for k, v in result.bend.items()}, bend)
    return [csv, curve, line, bend]


def _command(cfg: CurveConfig, comm: Any) -> Optional[Report]:
    result, plane = _run(cfg, comm)
    attrs = {"made_by": "landscape_hpc.geometry curve", "curve_kind": cfg.kind,
             "optima": json.dumps([str(p) for p in cfg.optima]), "steps": cfg.steps,
             "bn": cfg.engine.bn, "loss": cfg.engine.loss}  # fmt: skip
    out = Path(cfg.out_dir)
    files = write_curve(result, out, attrs)
    if cfg.plot:
        from landscape_hpc.geometry.curve_figures import plot_curve

        losses = result.training.losses
        png = out / "curve.png"
        files.append(plot_curve(result.t, result.metrics, result.barriers, losses, cfg.kind, png))
    summary = summarize_curve(result)
    if plane is not None:
        files.append(write_plane(out / "plane.h5", plane, {**attrs, "path": "plane"}))
        summary += "\n" + summarize_plane(plane)
        if cfg.plot:
            from landscape_hpc.geometry.curve_figures import plot_plane

            c = plane.coords
            png = out / "curve_plane.png"
            files.append(plot_plane(plane.grid.x, plane.grid.y, plane.metrics, c.points,
                                    c.curve, c.line, cfg.kind, png))  # fmt: skip
    return Report(summary, files)


def summarize_plane(plane: PlaneResult) -> str:
    """The three points' coordinates and, per split, the loss range over the plane."""
    p = plane.coords.points
    lines = [
        f"  plane (θ_a, bend, θ_b at ({p[0, 0]:.3g}, {p[0, 1]:.3g}), ({p[1, 0]:.3g}, "
        f"{p[1, 1]:.3g}), ({p[2, 0]:.3g}, {p[2, 1]:.3g})): {plane.grid.size} points"
    ]
    for s, (loss, _) in plane.metrics.items():
        lines.append(f"  plane {s} loss: min {np.nanmin(loss):.4g}, max {np.nanmax(loss):.4g}")
    return "\n".join(lines)


main = experiment_main("curve", _command)
