"""A low-loss tunnel between two optima (Fort & Jastrzebski 2019, sec. 4.2).

The linear path θ_a → θ_b is cut into `n_segments` segments; each inner point θ_i^linear is
optimised inside the hyperplane through it normal to the path (θ_b − θ_a), and consecutive
optimised points are joined by straight lines: the tunnel. Reported: loss and accuracy along the
linear path and along the tunnel (densely, between the points), and the alignment (cosine
similarity matrix) of the deviations δ_i = θ_i^tunnel − θ_i^linear.

    python -m landscape_hpc.geometry tunnel optima=[runs/a/model.pt,runs/b/model.pt] model=mlp
    python -m landscape_hpc.geometry tunnel optima=[a.pt,b.pt] model=resnet20 dataset=cifar10 \\
        dataset.root=~/data n_segments=10 hyperplane.steps=2000 device=cuda
    mpirun -n 3 python -m landscape_hpc.geometry tunnel optima=[a.pt,b.pt] model=mlp

Each inner point is one task of the MPI pool (its optimisation depends only on seed and its
index, so results do not depend on the number of ranks); the dense evaluation follows in chunks
of positions through the evaluation engine. Writes tunnel.csv, tunnel_alignment.csv,
tunnel_points.pt (the deviations, loadable with weights_only=True) and tunnel.png to out_dir.

The optimised vector θ is the model's parameters; buffers (BN running statistics) follow the
linear path, as in Li et al.'s interpolations (engine.bn=recompute recomputes them instead).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import hydra
import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from torch import nn

from landscape_hpc import parallel, params
from landscape_hpc.cli import share_hydra_run_dir
from landscape_hpc.config import DatasetConfig, EngineConfig, ModelConfig, register_configs
from landscape_hpc.data import Split, load_dataset, num_classes
from landscape_hpc.devices import resolve_device
from landscape_hpc.directions import model_difference
from landscape_hpc.errors import UserError, check_choice, exit_on_user_error
from landscape_hpc.evaluate import BN_MODES, LOSSES, STRATEGIES, EvalOptions, evaluate_points
from landscape_hpc.geometry.hyperplane import (
    HyperplaneOptions,
    cosine_matrix,
    hat_weights,
    hull_normals,
    minibatch_loss,
    optimise_in_hyperplane,
    segment_positions,
    stream_seed,
)
from landscape_hpc.models import build_model, load_into, load_state_dict_file
from landscape_hpc.params import ParamDict
from landscape_hpc.subspace import Subspace

log = logging.getLogger(__name__)

_JOB_KEY = "hull_job"

#: conf/geometry as an absolute path: the dispatcher imports this module by name, and Hydra would
#: then look for a Python package conf.geometry (with an __init__.py) instead of the folder
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf" / "geometry")


@dataclass
class HyperplaneConfig:
    # optimiser of each point inside its hyperplane: adam or sgd (with momentum)
    optimizer: str = "adam"
    # learning rate
    lr: float = 1e-3
    # SGD momentum
    momentum: float = 0.9
    # optimisation steps per point
    steps: int = 300
    # training samples per step; null = the whole training split at every step
    batch_size: Optional[int] = 128


@dataclass
class TunnelConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    # the two optima: checkpoints of one architecture (the one model=... builds)
    optima: list[str] = MISSING
    # segments of the linear path; its n_segments − 1 inner points are optimised
    n_segments: int = 8
    # positions t in [0, 1] where the linear path and the tunnel are evaluated (plus the points)
    n_dense: int = 41
    hyperplane: HyperplaneConfig = field(default_factory=HyperplaneConfig)
    # splits evaluated along the paths (the optimisation always uses train)
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    # evaluation; engine.loss is also the loss the points are optimised on
    engine: EngineConfig = field(default_factory=EngineConfig)
    # positions per evaluation task handed to a worker (fixed, so results do not depend on ranks)
    chunk_points: int = 16
    # seed of the minibatch order of every point (point i uses an independent stream of it)
    seed: int = 0
    # auto (cuda when present, else cpu), cpu, cuda, cuda:1, ...
    device: str = "auto"
    # output folder of the CSV, .pt and PNG files
    out_dir: str = "${hydra:runtime.output_dir}"
    # write tunnel.png
    plot: bool = True


# --- optima and the problem every rank holds ---------------------------------------------------


def check_same_architecture(states: list[ParamDict], paths: list[str]) -> None:
    """Refuses optima whose state_dicts differ in keys or shapes, naming both files."""
    first = states[0]
    for path, state in zip(paths[1:], states[1:]):
        only_first = sorted(set(first) - set(state))
        only_other = sorted(set(state) - set(first))
        shapes = [
            f"{k}: {tuple(first[k].shape)} vs {tuple(state[k].shape)}"
            for k in first
            if k in state and first[k].shape != state[k].shape
        ]
        if only_first or only_other or shapes:
            details = [
                f"  only in {paths[0]}: {only_first[:10]}" if only_first else "",
                f"  only in {path}: {only_other[:10]}" if only_other else "",
                f"  shape mismatches: {shapes[:10]}" if shapes else "",
            ]
            raise UserError(
                f"optima {paths[0]!r} and {path!r} are of different architectures; every "
                "optimum must be a checkpoint of the same model (model=..., model.kwargs)\n"
                + "\n".join(d for d in details if d)
            )


@dataclass
class Problem:
    """A model template and its optima on this rank's device, with the data."""

    model: nn.Module
    optima: list[ParamDict]  # full state_dicts
    keys: list[str]  # parameter names: the entries of a flat θ
    splits: dict[str, Split]
    device: torch.device

    def flat(self, state: ParamDict) -> torch.Tensor:
        return params.flatten(state, self.keys).detach()


def load_problem(
    model_cfg: ModelConfig,
    dataset_cfg: DatasetConfig,
    paths: list[str],
    device_spec: str,
    comm: Any,
    needed_splits: list[str],
) -> Problem:
    """Loads the optima (same architecture, fitting `model_cfg`) and the data on this rank's
    device: the CPU on the master of a multi-rank run, which only hands out work."""
    states = [load_state_dict_file(p, trust=bool(model_cfg.trust_checkpoint)) for p in paths]
    check_same_architecture(states, paths)
    rank, size = comm.Get_rank(), comm.Get_size()
    place = parallel.placement(comm)  # collective: every rank
    if rank == 0 and size > 1:
        device = torch.device("cpu")
    else:
        device = resolve_device(device_spec, place.local_rank)
    if device.type == "cpu":
        torch.set_num_threads(place.cpu_threads)
    splits = load_dataset(dataset_cfg, device)
    unknown = [s for s in needed_splits if s not in splits]
    if unknown:
        raise UserError(f"splits {unknown} are not in the data set ({', '.join(splits)})")
    first = splits["train"]
    template = dataclasses.replace(model_cfg, checkpoint=None)
    model = build_model(template, tuple(first.inputs.shape[1:]), num_classes(dataset_cfg, splits))
    optima = []
    for path, state in zip(paths, states):
        load_into(model, state, path)  # refuses a checkpoint of another model, naming the keys
        optima.append({k: v.detach().clone().to(device) for k, v in model.state_dict().items()})
    model = model.to(device).eval()
    keys = [name for name, _ in model.named_parameters()]
    return Problem(model, optima, keys, splits, device)


# --- points of the optima's hull, optimised over the pool, then evaluated -----------------------


@dataclass
class HullJob:
    """What every rank needs: the points to optimise (barycentric weights (K, m) over the optima)
    and, once their deviations are known, the subspace the evaluation runs in:
    origin θ_1, basis [θ_2 − θ_1, ..., θ_m − θ_1, δ_1, ..., δ_K]."""

    problem: Problem
    weights: np.ndarray  # (K, m)
    hyperplane: HyperplaneOptions
    batch_size: Optional[int]
    options: EvalOptions
    splits: list[str]
    seed: int
    differences: list[ParamDict] = field(init=False)
    normals: torch.Tensor = field(init=False)
    n_params: int = field(init=False)
    subspace: Optional[Subspace] = None

    def __post_init__(self) -> None:
        origin = self.problem.optima[0]
        # float tensors, buffers included: BN statistics move with the hull (Li et al. A.5)
        self.differences = [model_difference(o, origin, "optimum") for o in self.problem.optima[1:]]
        flat = torch.stack([self.problem.flat(o) for o in self.problem.optima])  # (m, P)
        self.normals = hull_normals(flat)
        if self.normals.shape[0] < len(flat) - 1:
            raise UserError(
                f"the {len(flat)} optima do not span a {len(flat) - 1}-dimensional hull (two of "
                "them are the same point, or one lies on the hull of the others): give distinct "
                "optima"
            )
        self.n_params = flat.shape[1]

    def linear_state(self, weights: np.ndarray) -> ParamDict:
        """Σ_j λ_j θ_j as a full state (weights λ: (m,))."""
        coords = torch.as_tensor(weights[1:], dtype=torch.float64)
        return params.combine(self.problem.optima[0], self.differences, coords)

    def optimise(self, k: int) -> tuple[np.ndarray, float, float]:
        """Point k optimised in its hyperplane: (δ_k (P,), first and last minibatch loss)."""
        p = self.problem
        state = self.linear_state(self.weights[k])
        start = p.flat(state)
        train = p.splits["train"]
        loss_fn = minibatch_loss(
            p.model,
            state,
            p.keys,
            train.inputs,
            train.labels,
            self.batch_size,
            stream_seed(self.seed, k),
            self.options.loss,
        )
        result = optimise_in_hyperplane(loss_fn, start, self.normals, self.hyperplane)
        delta = (result.theta - start).cpu().numpy()
        return delta, result.losses[0], result.losses[-1]

    def set_deviations(self, deviations: np.ndarray) -> None:
        p = self.problem
        like = {k: p.optima[0][k] for k in p.keys}
        devs = [
            params.unflatten(torch.as_tensor(d, device=p.device), like, p.keys) for d in deviations
        ]
        self.subspace = Subspace(p.optima[0], [*self.differences, *devs])

    def evaluate(self, coords: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        splits = self.problem.splits
        data = {s: (splits[s].inputs, splits[s].labels) for s in self.splits}
        bn_data = splits["train"].inputs
        metrics = evaluate_points(
            self.problem.model, self.subspace, torch.from_numpy(coords), data, self.options, bn_data
        )
        return {s: (m.loss, m.acc) for s, m in metrics.items()}


def _optimise_task(k: int) -> tuple[np.ndarray, float, float]:
    return parallel.worker_state(_JOB_KEY).optimise(k)


def _evaluate_task(task: tuple[int, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return parallel.worker_state(_JOB_KEY).evaluate(task[1])


@dataclass
class HullResult:
    """On rank 0: deviations (K, P), optimisation losses (K, 2) first/last, and per split the
    metrics at every row of the evaluated coordinates: {split: (loss (Q,), acc (Q,))}."""

    deviations: np.ndarray
    opt_losses: np.ndarray
    metrics: dict[str, tuple[np.ndarray, np.ndarray]]


def run_hull(
    comm: Any, job: HullJob, coords: np.ndarray, chunk_points: int
) -> Optional[HullResult]:
    """Optimises job.weights' points over the pool (one task each), shares their deviations with
    every rank, then evaluates `coords` (Q, m − 1 + K) of the hull subspace in chunks. Returns
    the result on rank 0, None on the others."""
    rank = comm.Get_rank()
    n_points = len(job.weights)
    parallel.set_worker_state(_JOB_KEY, job)
    try:
        deviations = opt_losses = None
        if rank == 0:
            deviations = np.zeros((n_points, job.n_params), dtype=np.float32)
            opt_losses = np.zeros((n_points, 2))
        tasks = range(n_points)
        describe = lambda k: f"hull point {k} (weights {np.round(job.weights[k], 4).tolist()})"  # noqa: E731
        for result in parallel.run_tasks(comm, _optimise_task, tasks, describe=describe):
            deviations[result.task] = result.value[0]
            opt_losses[result.task] = result.value[1:]
        deviations = comm.bcast(deviations, root=0)
        job.set_deviations(deviations)

        chunks = [(i, coords[i : i + chunk_points]) for i in range(0, len(coords), chunk_points)]
        metrics = {s: (np.zeros(len(coords)), np.zeros(len(coords))) for s in job.splits}
        describe = lambda t: f"evaluation of positions {t[0]}..{t[0] + len(t[1]) - 1}"  # noqa: E731
        for result in parallel.run_tasks(comm, _evaluate_task, chunks, describe=describe):
            start = result.task[0]
            for s, (loss, acc) in result.value.items():
                metrics[s][0][start : start + len(loss)] = loss
                metrics[s][1][start : start + len(acc)] = acc
    finally:
        parallel.clear_worker_state(_JOB_KEY)
    return HullResult(deviations, opt_losses, metrics) if rank == 0 else None


def validate_common(cfg: Any) -> HyperplaneOptions:
    """Checks the keys tunnel and connector share; returns the hyperplane options."""
    h = cfg.hyperplane
    options = HyperplaneOptions(h.optimizer, h.lr, h.momentum, h.steps)
    options.validate("hyperplane")
    if h.batch_size is not None and h.batch_size < 1:
        raise UserError(f"hyperplane.batch_size={h.batch_size} must be at least 1 (or null)")
    check_choice("engine.bn", cfg.engine.bn, BN_MODES)
    check_choice("engine.loss", cfg.engine.loss, LOSSES)
    check_choice("engine.strategy", cfg.engine.strategy, STRATEGIES)
    if not cfg.splits:
        raise UserError("splits is empty; use e.g. splits=[train,test]")
    if cfg.chunk_points < 1:
        raise UserError(f"chunk_points={cfg.chunk_points} must be at least 1")
    return options


# --- the tunnel command ------------------------------------------------------------------------


@dataclass
class TunnelResult:
    """Along t in [0, 1]: {split: {"linear"|"tunnel": (loss (Q,), acc (Q,))}}; `points` the
    positions t_i of the optimised points (ends included), `alignment` the cosine matrix of
    their deviations, `deviations` (K, P)."""

    optima: list[str]
    t: np.ndarray
    points: np.ndarray
    metrics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    alignment: np.ndarray
    deviations: np.ndarray
    opt_losses: np.ndarray
    keys: list[str]


def tunnel_coords(t: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subspace coordinates (Q, 1 + K) of the linear path and of the tunnel at positions t:
    θ(t) = θ_a + t(θ_b − θ_a) [+ Σ_i w_i(t) δ_i, w the piecewise-linear hat of point i]."""
    hats = hat_weights(t, points)[:, 1:-1]  # (Q, K): the ends have no deviation
    linear = np.concatenate([t[:, None], np.zeros_like(hats)], axis=1)
    return linear, np.concatenate([t[:, None], hats], axis=1)


def validate_tunnel(cfg: TunnelConfig) -> HyperplaneOptions:
    if len(cfg.optima) != 2:
        raise UserError(
            f"optima lists {len(cfg.optima)} checkpoint(s); a tunnel joins exactly two: "
            "optima=[a.pt,b.pt] (for m ≥ 3 optima use the connector experiment)"
        )
    if cfg.n_segments < 2:
        raise UserError(f"n_segments={cfg.n_segments} must be at least 2 (one inner point)")
    if cfg.n_dense < 2:
        raise UserError(f"n_dense={cfg.n_dense} must be at least 2")
    return validate_common(cfg)


def run_tunnel(cfg: TunnelConfig, comm: Any = None) -> Optional[TunnelResult]:
    """The whole experiment; the result on rank 0 (None on the others)."""
    comm = comm if comm is not None else parallel.world()
    hyperplane = validate_tunnel(cfg)
    paths = [str(p) for p in cfg.optima]
    problem = load_problem(cfg.model, cfg.dataset, paths, cfg.device, comm, list(cfg.splits))
    points = segment_positions(cfg.n_segments)
    inner = points[1:-1]
    weights = np.stack([1.0 - inner, inner], axis=1)  # (K, 2)
    options = EvalOptions(**dataclasses.asdict(cfg.engine))
    job = HullJob(
        problem, weights, hyperplane, cfg.hyperplane.batch_size, options, list(cfg.splits), cfg.seed
    )
    t = np.union1d(np.linspace(0.0, 1.0, cfg.n_dense), points)
    linear, tunnel = tunnel_coords(t, points)
    hull = run_hull(comm, job, np.concatenate([linear, tunnel]), cfg.chunk_points)
    if hull is None:
        return None
    q = len(t)
    metrics = {
        s: {"linear": (loss[:q], acc[:q]), "tunnel": (loss[q:], acc[q:])}
        for s, (loss, acc) in hull.metrics.items()
    }
    alignment = cosine_matrix(torch.from_numpy(hull.deviations))
    return TunnelResult(
        paths, t, points, metrics, alignment, hull.deviations, hull.opt_losses, problem.keys
    )


def write_tunnel(result: TunnelResult, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    header, columns = ["t", "is_point"], [result.t, np.isin(result.t, result.points).astype(float)]
    for s, paths in result.metrics.items():
        for path, (loss, acc) in paths.items():
            header += [f"{s}_loss_{path}", f"{s}_acc_{path}"]
            columns += [loss, acc]
    csv = out_dir / "tunnel.csv"
    np.savetxt(csv, np.stack(columns, axis=1), delimiter=",", header=",".join(header), comments="")
    inner = result.points[1:-1]
    align = out_dir / "tunnel_alignment.csv"
    table = np.concatenate([inner[:, None], result.alignment], axis=1)
    names = ",".join(f"t={x:.4g}" for x in inner)
    np.savetxt(align, table, delimiter=",", header=f"t,{names}", comments="")
    pt = out_dir / "tunnel_points.pt"
    torch.save(
        {
            "optima": result.optima,
            "t": torch.from_numpy(result.points),
            "deviations": torch.from_numpy(result.deviations),  # (K, P), rows = inner points
            "keys": result.keys,
        },
        pt,
    )
    return [csv, align, pt]


def plot_tunnel(result: TunnelResult, path: Path) -> Path:
    """Loss and accuracy vs position: linear path dashed, tunnel solid; deviation alignment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_acc = any(np.isfinite(m["linear"][1]).any() for m in result.metrics.values())
    panels = 3 if has_acc else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (s, m) in enumerate(result.metrics.items()):
        on_point = np.isin(result.t, result.points)
        for ax, which in zip(axes[: panels - 1], (0, 1)):
            ax.plot(result.t, m["linear"][which], "--", color=colors[i], label=f"{s} linear")
            ax.plot(result.t, m["tunnel"][which], "-", color=colors[i], label=f"{s} tunnel")
            ax.plot(result.t[on_point], m["tunnel"][which][on_point], "o", color=colors[i], ms=3)
    axes[0].set_ylabel("loss")
    axes[0].set_title("loss along the path")
    if has_acc:
        axes[1].set_ylabel("accuracy (%)")
        axes[1].set_title("accuracy along the path")
    for ax in axes[: panels - 1]:
        ax.set_xlabel("position t (θ_a → θ_b)")
        ax.legend(fontsize=7)
    inner = result.points[1:-1]
    half = (inner[1] - inner[0]) / 2 if len(inner) > 1 else 0.5  # pixel centres on the t_i
    lo, hi = inner[0] - half, inner[-1] + half
    image = axes[-1].imshow(
        result.alignment, vmin=-1, vmax=1, cmap="coolwarm", extent=(lo, hi, hi, lo)
    )
    fig.colorbar(image, ax=axes[-1], fraction=0.046)
    axes[-1].set_title("cos(δ_i, δ_j) of the deviations")
    axes[-1].set_xlabel("t_j")
    axes[-1].set_ylabel("t_i")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def summarize_tunnel(result: TunnelResult) -> str:
    k = len(result.points) - 2
    lines = [f"tunnel between {result.optima[0]} and {result.optima[1]}: {k} points optimised"]
    for s, m in result.metrics.items():
        parts = []
        for path in ("linear", "tunnel"):
            loss, acc = m[path]
            i = int(np.nanargmax(loss))
            text = f"{path} max loss {loss[i]:.4g} at t={result.t[i]:.3f}"
            if np.isfinite(acc).any():
                text += f", min acc {np.nanmin(acc):.2f}%"
            parts.append(text)
        lines.append(f"  {s}: " + "; ".join(parts))
    if k > 1:
        off = result.alignment[~np.eye(k, dtype=bool)]
        neighbours = np.diagonal(result.alignment, 1)
        lines.append(
            f"  deviation alignment: mean cosine {np.nanmean(off):.3f} over all pairs, "
            f"{np.nanmean(neighbours):.3f} between neighbours"
        )
    first, last = result.opt_losses.mean(axis=0)
    lines.append(
        f"  point optimisation: minibatch loss {first:.4g} -> {last:.4g} (mean over points)"
    )
    norms = np.linalg.norm(result.deviations, axis=1)
    lines.append(f"  deviation norms |δ_i|: {', '.join(f'{x:.3g}' for x in norms)}")
    return "\n".join(lines)


def register() -> None:
    register_configs()
    ConfigStore.instance().store(name="tunnel_schema", node=TunnelConfig)


register()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="tunnel")
@exit_on_user_error
def _app(cfg) -> None:
    tunnel_cfg: TunnelConfig = OmegaConf.to_object(cfg)
    comm = parallel.world()
    with parallel.abort_on_error(comm):
        result = run_tunnel(tunnel_cfg, comm)
        if result is None:
            return
        out = Path(tunnel_cfg.out_dir)
        files = write_tunnel(result, out)
        if tunnel_cfg.plot:
            files.append(plot_tunnel(result, out / "tunnel.png"))
        print(summarize_tunnel(result))
        for f in files:
            log.info("wrote %s", f)


def main() -> None:
    """`python -m landscape_hpc.geometry tunnel [overrides]` (the dispatcher calls this)."""
    share_hydra_run_dir()
    _app()
