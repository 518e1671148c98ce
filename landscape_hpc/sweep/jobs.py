"""The sweep's jobs: the grid (sweep.models × sweep.fill_probs × sweep.seeds), checked before any
job starts, and the MPO config of each job. A job's config is exactly what
`python -m landscape_hpc.mpo model=<m> mask.fill_prob=<p> seed=<s>` under +experiment=bn_sweep
resolves to, so the MPI sweep and the Hydra multirun compute the same fits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from landscape_hpc.config import MPOConfig, SweepConfig
from landscape_hpc.errors import UserError

#: registry nets a sweep may compare (custom nets need their own target, not one shared one)
SWEEP_MODELS_EXCLUDED = ("custom",)


@dataclass(frozen=True)
class SweepJob:
    """One fit of the grid."""

    model: str
    fill_prob: float
    seed: int

    @property
    def key(self) -> str:
        """Its name in the sweep file and the run folder: <model>/fill_<p>/seed_<s>."""
        return f"{self.model}/fill_{self.fill_prob:g}/seed_{self.seed}"


def expand(grid: SweepConfig) -> list[SweepJob]:
    """Every (model, fill_prob, seed) of the grid, models outermost; a UserError naming the key
    for an empty list, an unknown net, a fill probability outside (0, 1) or a repeated value."""
    from landscape_hpc.models import MODEL_NAMES

    known = [m for m in MODEL_NAMES if m not in SWEEP_MODELS_EXCLUDED]
    for key in ("models", "fill_probs", "seeds"):
        values = list(getattr(grid, key))
        if not values:
            raise UserError(f"sweep.{key} is empty: the sweep has no jobs; give at least one value")
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise UserError(f"sweep.{key} repeats {', '.join(repeated)}; list each value once")
    unknown = [m for m in grid.models if m not in known]
    if unknown:
        raise UserError(
            f"sweep.models: unknown net(s) {', '.join(map(str, unknown))}; "
            f"valid: {', '.join(known)}"
        )
    outside = [p for p in grid.fill_probs if not 0 < p < 1]
    if outside:
        raise UserError(
            f"sweep.fill_probs: {', '.join(map(str, outside))} not in (0, 1); a fill probability "
            "is the chance that a cell is low-loss, e.g. sweep.fill_probs=[0.1,0.5,0.9]"
        )
    jobs = [
        SweepJob(str(m), float(p), int(s))
        for m in grid.models
        for p in grid.fill_probs
        for s in grid.seeds
    ]
    check_keys_distinct(jobs)
    return jobs


def check_keys_distinct(jobs: list[SweepJob]) -> None:
    """A UserError naming the values whose jobs share one key (one group of the sweep file, one
    run folder): fill probabilities are written with 6 significant digits, so 0.5 and 0.5000001
    are both fill_0.5 and one job would silently replace the other."""
    by_key: dict[str, list[SweepJob]] = {}
    for job in jobs:
        by_key.setdefault(job.key, []).append(job)
    for key, same in by_key.items():
        if len(same) > 1:
            fills = sorted({repr(j.fill_prob) for j in same})
            raise UserError(
                f"sweep.fill_probs: {' and '.join(fills)} collide: each is written as "
                f"{key.split('/')[1]} (6 significant digits), so their jobs would share the "
                f"group and folder {key}; give fill probabilities that differ within 6 digits"
            )


def job_config(base: MPOConfig, job: SweepJob) -> MPOConfig:
    """The MPO config of one job: the base with the job's net, fill probability and seed (the
    seed also seeds the mask and the net's initial weights, as in the multirun preset)."""
    if base.mask.kind != "random":
        raise UserError(
            f"mask={base.mask.kind}: the sweep fits random masks of each fill probability; "
            "use mask=random"
        )
    model = dataclasses.replace(base.model, name=job.model, init_seed=job.seed)
    mask = dataclasses.replace(base.mask, fill_prob=job.fill_prob, seed=job.seed)
    return dataclasses.replace(base, model=model, mask=mask, seed=job.seed)
