"""engine.strategy=auto: the way of evaluating points that is fastest here, found by timing.

The candidates are the strategies (vmap; sequential; on a CPU with more than one torch thread,
threads). Then the winner, and any plan within 25% of it, at other batch sizes: a quarter of
engine.batch_size, the whole split where it is at most twice engine.batch_size (one forward
instead of a full and a ragged one: +30% for a small conv net on 300 samples), and on a CPU
twice engine.batch_size where that still splits the data. Then, for a conv
net on a CPU, the winner and its near-ties one point at a time in the other memory layout
(channels-last, the default, or NCHW: oneDNN's dense convolutions of few channels run faster
NCHW, of many channels-last). Each runs on the first points of the first call (a pass's worth,
within limits), every split cut to two batches: once to warm up (vmap's tracing, the kernels'
set-up for these shapes), then timed (the fastest of a few runs). The fewest seconds per point
wins, and the choice is logged with every figure. It is kept for the process under a
fingerprint of the model's architecture, the moving tensors, the device, the data shapes, the
engine options and the thread count: a run times once, however many chunks or calls it
evaluates.

The strategies agree to float32 rounding (about 1e-7 relative), not bit for bit: pin
engine.strategy where two runs must give the same bits.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

#: fewer points than this in the first call: not worth timing, the default rule decides
MIN_POINTS = 4
#: points each candidate is timed on: at least this many, at most MAX_PROBE_POINTS
PROBE_POINTS = 4
MAX_PROBE_POINTS = 64
#: each split is cut to this many batches for the timing
PROBE_BATCHES = 2
#: each candidate is timed repeatedly for about this long (at most MAX_REPEATS runs), fastest kept
PROBE_SECONDS = 0.1
MAX_REPEATS = 5
#: strategies within this factor of the fastest also have their other batch sizes timed
NEAR_TIE = 1.25
#: the smallest batch size the batch-size candidate tries
MIN_BATCH = 16

_chosen: dict[str, tuple[Plan, dict[Plan, float]]] = {}


@dataclass(frozen=True)
class Plan:
    """How points are evaluated: strategy, samples per forward, threads running points."""

    strategy: str  # vmap, sequential or threads
    batch_size: int
    workers: int = 1
    # sequential and threads on a CPU with 4-D weights: channels-last or NCHW; else None
    channels_last: bool | None = None

    def __str__(self) -> str:
        workers = f" on {self.workers} threads" if self.workers > 1 else ""
        layout = {None: "", True: ", channels-last", False: ", NCHW"}[self.channels_last]
        return f"{self.strategy}{workers} at batch {self.batch_size}{layout}"


def fingerprint(*parts: object) -> str:
    """A key for the choice: what decides the speed (architecture, shapes, device, options,
    threads), never the weights' values."""
    return hashlib.sha256(repr((*parts, torch.get_num_threads())).encode()).hexdigest()


def best_time(run: Callable[[], object]) -> float:
    """Seconds of `run`: warmed up once (tracing, kernels set up for these shapes), then the
    fastest of a few runs (others' load only ever slows one down), repeated until PROBE_SECONDS
    have passed and at most MAX_REPEATS times. A warm-up that took 10 PROBE_SECONDS or more is
    the figure itself: a set-up cost is small beside it, and another run would cost as much."""
    start = time.perf_counter()
    run()
    warm = time.perf_counter() - start
    if warm >= 10 * PROBE_SECONDS:
        return warm
    times: list[float] = []
    while len(times) < MAX_REPEATS and sum(times) < PROBE_SECONDS:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def probe_points(n: int, per_pass: int) -> int:
    """Points to time a candidate on, of the n of the call: `per_pass` (one vmap pass, two
    points per thread of a pointwise plan), at least PROBE_POINTS and at most
    MAX_PROBE_POINTS: each plan amortises its per-pass costs over the points of a pass."""
    return min(n, MAX_PROBE_POINTS, max(PROBE_POINTS, per_pass))


def choose(
    key: str,
    candidates: Sequence[Plan],
    seconds_per_point: Callable[[Plan], float],
    refinements: Sequence[Callable[[Plan], list[Plan]]],
) -> Plan:
    """The fastest plan: cached under `key`, else timed and logged. Every candidate is timed,
    then for each refinement in turn its variants of the fastest plan so far and of any within
    NEAR_TIE of it."""
    if key in _chosen:
        return _chosen[key][0]
    start = time.perf_counter()
    times = {plan: seconds_per_point(plan) for plan in candidates}
    for variants in refinements:
        fastest = min(times.values())
        for plan in [p for p, t in times.items() if t <= NEAR_TIE * fastest]:
            for other in variants(plan):
                if other not in times:
                    times[other] = seconds_per_point(other)
    best = min(times, key=times.__getitem__)
    figures = ", ".join(f"{plan} {1e3 * t:.3g} ms/point" for plan, t in times.items())
    log.info(
        "engine auto: %s (timed: %s; %.1f s spent timing)",
        best,
        figures,
        time.perf_counter() - start,
    )
    _chosen[key] = best, times
    return best


def timings(key: str) -> dict[Plan, float]:
    """Seconds per point of every plan timed for `key` (empty if none was)."""
    return dict(_chosen[key][1]) if key in _chosen else {}


def batch_sizes(batch_size: int, samples: int, larger: bool = False) -> list[int]:
    """Batch sizes worth timing besides `batch_size` for splits of up to `samples`: a quarter
    (not below MIN_BATCH, and only where it splits the data), all the samples at once where
    that is at most twice the batch size, and (`larger`: on a CPU, where a batch costs host
    memory only) twice the batch size where that still splits the data: the mlp's shared first
    layer (shared_input.py) ran 4,516 points/s at batch 512 against 2,325 at 256 (2 threads)."""
    sizes = []
    quarter = max(MIN_BATCH, batch_size // 4)
    if quarter < batch_size and quarter < samples:
        sizes.append(quarter)
    if batch_size < samples <= 2 * batch_size:
        sizes.append(samples)
    if larger and 2 * batch_size < samples:
        sizes.append(2 * batch_size)
    return sizes


def forget() -> None:
    """Drops every cached choice (tests)."""
    _chosen.clear()
