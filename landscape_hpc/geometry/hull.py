"""Points of the affine hull of m optima, optimised over the MPI pool and evaluated there: what the
tunnel (m = 2) and the m-connector experiments share (Fort & Jastrzebski 2019, sec. 4.2-4.3).

`load_optima` loads the optima (one architecture, checked) and the data on every rank; `run_hull`
optimises the points given by their barycentric weights, each inside the space orthogonal to the
hull through it (`hyperplane.optimise_in_hyperplane`, one pool task per point), shares their
deviations δ_k with every rank, then evaluates named sets of coordinates of the hull subspace
(origin θ_1, basis [θ_2 − θ_1, ..., θ_m − θ_1, δ_1, ..., δ_K]) in chunks through the engine.

A point's optimisation depends only on `seed` and its index, and the chunks are fixed, so results
do not depend on the number of ranks. The optimised vector θ is the model's parameters; buffers
(BN running statistics) follow the hull linearly, as in Li et al.'s interpolations
(engine.bn=recompute recomputes them instead).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from landscape_hpc import parallel, params
from landscape_hpc.config import DatasetConfig, EngineConfig, HullConfig, ModelConfig
from landscape_hpc.devices import rank_device
from landscape_hpc.directions import model_difference
from landscape_hpc.engine.evaluate import check_engine, evaluate_points
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.hyperplane import (
    HyperplaneOptions,
    hull_normals,
    minibatch_loss,
    optimise_in_hyperplane,
    stream_seed,
)
from landscape_hpc.models import load_into, load_state_dict_file
from landscape_hpc.params import ParamDict
from landscape_hpc.problem import Problem, load_problem

_JOB_KEY = "hull_job"


def check_hull_config(cfg: HullConfig) -> HyperplaneOptions:
    """Checks the keys tunnel and connector share; returns the hyperplane options."""
    options = HyperplaneOptions.from_config(cfg.hyperplane)
    batch_size = cfg.hyperplane.batch_size
    if batch_size is not None and batch_size < 1:
        raise UserError(f"hyperplane.batch_size={batch_size} must be at least 1 (or null)")
    check_engine(cfg.engine)
    if not cfg.splits:
        raise UserError("splits is empty; use e.g. splits=[train,test]")
    if cfg.chunk_points < 1:
        raise UserError(f"chunk_points={cfg.chunk_points} must be at least 1")
    return options


# --- optima and the problem every rank holds ---------------------------------------------------


def check_same_architecture(states: list[ParamDict], paths: list[str]) -> None:
    """Refuses optima whose state_dicts differ in keys or shapes, naming both files."""
    first = states[0]
    for path, state in zip(paths[1:], states[1:]):
        only_first, only_other, mismatched = params.layout_diff(first, state)
        only_first, only_other = sorted(only_first), sorted(only_other)
        shapes = [f"{k}: {a} vs {b}" for k, a, b in mismatched]
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
class Optima:
    """The optima (full state_dicts, one architecture) on this rank's device, and the problem
    they are optima of: its model is the template they are evaluated through (eval mode), its
    splits the data."""

    problem: Problem
    states: list[ParamDict]
    names: list[str]  # what the reports call each optimum: its checkpoint, or optima[i]
    keys: list[str] = field(init=False)  # parameter names: the entries of a flat θ

    def __post_init__(self) -> None:
        self.keys = self.problem.param_keys

    def flat(self, state: ParamDict) -> torch.Tensor:
        return params.flatten(state, self.keys).detach()


def load_optima(
    model_cfg: ModelConfig,
    dataset_cfg: DatasetConfig,
    paths: list[str],
    device_spec: str,
    comm: Any,
) -> Optima:
    """Loads the optima (same architecture, fitting `model_cfg`) and the data on this rank's
    device: the CPU on the master of a multi-rank run, which only hands out work. Collective:
    every rank calls it."""
    states = [load_state_dict_file(p, bool(model_cfg.trust_checkpoint), "optima") for p in paths]
    check_same_architecture(states, paths)
    device = rank_device(comm, device_spec)
    problem = load_problem(dataclasses.replace(model_cfg, checkpoint=None), dataset_cfg, device)
    optima = []
    for path, state in zip(paths, states):
        load_into(problem.model, state, path)  # refuses a checkpoint of another model, naming keys
        optima.append({k: v.detach().clone() for k, v in problem.model.state_dict().items()})
    problem.model.eval()
    return Optima(problem, optima, list(paths))


def load_hull_optima(cfg: HullConfig, comm: Any) -> Optima:
    """The command's optima: cfg's checkpoints and data set on every rank, after cfg's shared
    keys are checked. Collective."""
    check_hull_config(cfg)
    paths = [str(p) for p in cfg.optima]
    optima = load_optima(cfg.model, cfg.dataset, paths, cfg.device, comm)
    optima.problem.require(list(cfg.splits))
    return optima


# --- points of the optima's hull, optimised over the pool, then evaluated -----------------------


@dataclass
class HullJob:
    """What every rank needs: the points to optimise (barycentric weights (K, m) over the optima)
    and, once their deviations are known, the subspace the evaluation runs in:
    origin θ_1, basis [θ_2 − θ_1, ..., θ_m − θ_1, δ_1, ..., δ_K]."""

    optima: Optima
    weights: np.ndarray  # (K, m)
    hyperplane: HyperplaneOptions
    batch_size: Optional[int]
    options: EngineConfig
    splits: list[str]
    seed: int
    differences: list[ParamDict] = field(init=False)
    normals: torch.Tensor = field(init=False)
    n_params: int = field(init=False)
    subspace: Optional[Subspace] = None

    def __post_init__(self) -> None:
        states = self.optima.states
        # float tensors, buffers included: BN statistics move with the hull (Li et al. A.5)
        self.differences = [model_difference(o, states[0], "optimum") for o in states[1:]]
        flat = torch.stack([self.optima.flat(o) for o in states])  # (m, P)
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
        return params.combine(self.optima.states[0], self.differences, coords)

    def optimise(self, k: int) -> tuple[np.ndarray, float, float]:
        """Point k optimised in its hyperplane: (δ_k (P,), first and last minibatch loss)."""
        o = self.optima
        state = self.linear_state(self.weights[k])
        start = o.flat(state)
        train = o.problem.splits["train"]
        loss_fn = minibatch_loss(
            o.problem.model,
            state,
            o.keys,
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
        o = self.optima
        origin = o.states[0]
        like = {k: origin[k] for k in o.keys}
        device = o.problem.device
        devs = [
            params.unflatten(torch.as_tensor(d, device=device), like, o.keys) for d in deviations
        ]
        self.subspace = Subspace(origin, [*self.differences, *devs])

    def evaluate(self, coords: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        problem = self.optima.problem
        splits = problem.splits
        data = {s: (splits[s].inputs, splits[s].labels) for s in self.splits}
        bn_data = splits["train"].inputs
        metrics = evaluate_points(
            problem.model, self.subspace, torch.from_numpy(coords), data, self.options, bn_data
        )
        return {s: (m.loss, m.acc) for s, m in metrics.items()}


def _optimise_task(k: int) -> tuple[np.ndarray, float, float]:
    return parallel.worker_state(_JOB_KEY).optimise(k)


def _evaluate_task(task: tuple[int, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return parallel.worker_state(_JOB_KEY).evaluate(task[1])


def optimise_and_evaluate(
    comm: Any, job: HullJob, coords: np.ndarray, chunk_points: int
) -> Optional[tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]]:
    """Optimises job.weights' points over the pool (one task each), shares their deviations with
    every rank, then evaluates `coords` (Q, m − 1 + K) of the hull subspace in chunks. Returns on
    rank 0 the deviations (K, P), the first/last optimisation losses (K, 2) and per split the
    metrics at every row of coords: {split: (loss (Q,), acc (Q,))}; None on the others."""
    rank = comm.Get_rank()
    n_points = len(job.weights)
    with parallel.worker_pool(_JOB_KEY, job):
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
    return (deviations, opt_losses, metrics) if rank == 0 else None


@dataclass
class HullResult:
    """On rank 0: the optima's names, the parameter names of a flat θ, the deviations (K, P) of
    the optimised points, their optimisation losses (K, 2) first/last, and per split and kind of
    coordinates (e.g. "linear", "tunnel") the metrics at each row: (loss (Q,), acc (Q,))."""

    optima: list[str]
    keys: list[str]
    deviations: np.ndarray
    opt_losses: np.ndarray
    metrics: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    probed: Any = None  # what `probe` returned on rank 0


def run_hull(
    optima: Optima,
    cfg: HullConfig,
    comm: Any,
    weights: np.ndarray,
    coords: dict[str, np.ndarray],
    probe: Optional[Callable[[HullJob], Any]] = None,
) -> Optional[HullResult]:
    """With cfg's shared keys (validated), optimises the points of barycentric `weights` (K, m)
    over the optima (loaded on every rank: the command's checkpoints, or the library's models)
    and evaluates each kind of `coords` {kind: (Q_kind, m − 1 + K)} of the hull subspace. Then
    `probe(job)` on every rank, the subspace known there (short directions: its own pool). The
    result on rank 0, None on the others."""
    hyperplane = check_hull_config(cfg)
    optima.problem.require(list(cfg.splits))
    job = HullJob(
        optima,
        weights,
        hyperplane,
        cfg.hyperplane.batch_size,
        cfg.engine,
        list(cfg.splits),
        cfg.seed,
    )
    done = optimise_and_evaluate(comm, job, np.concatenate(list(coords.values())), cfg.chunk_points)
    probed = probe(job) if probe is not None else None
    if done is None:
        return None
    deviations, opt_losses, flat = done
    ends = np.cumsum([len(c) for c in coords.values()])
    metrics = {
        s: {
            kind: (loss[end - len(c) : end], acc[end - len(c) : end])
            for (kind, c), end in zip(coords.items(), ends)
        }
        for s, (loss, acc) in flat.items()
    }
    return HullResult(optima.names, optima.keys, deviations, opt_losses, metrics, probed)


# --- reporting the metrics per split and kind ----------------------------------------------------

Metrics = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # {split: {kind: (loss, acc)}}


def write_metrics_csv(
    path: Path, header: list[str], columns: list[np.ndarray], metrics: Metrics
) -> Path:
    """One row per evaluated point: the given leading columns, then per split and kind its loss
    and accuracy (<split>_loss_<kind>, <split>_acc_<kind>)."""
    header, columns = list(header), list(columns)
    for s, kinds in metrics.items():
        for kind, (loss, acc) in kinds.items():
            header += [f"{s}_loss_{kind}", f"{s}_acc_{kind}"]
            columns += [loss, acc]
    np.savetxt(path, np.stack(columns, axis=1), delimiter=",", header=",".join(header), comments="")
    return path


def summarize_metrics(metrics: Metrics, where: Callable[[int], str]) -> list[str]:
    """A line per split: for each kind its max loss and where (`where(row)`), and its min
    accuracy where there is one."""
    lines = []
    for s, kinds in metrics.items():
        parts = []
        for kind, (loss, acc) in kinds.items():
            i = int(np.nanargmax(loss))
            text = f"{kind} max loss {loss[i]:.4g} at {where(i)}"
            if np.isfinite(acc).any():
                text += f", min acc {np.nanmin(acc):.2f}%"
            parts.append(text)
        lines.append(f"  {s}: " + "; ".join(parts))
    return lines
