"""One point at a time: the sequential and threads strategies of the engine.

Each point's network runs on whole batches of samples. With the BN statistics as stored
(bn=eval), a point's weights go into a private copy of the model whose moving tensors are views
of one flat float32 buffer, so loading a point is a few whole-buffer operations: origin + Σ c_k ·
basis_k formed in float64 and rounded once, the arithmetic (and the bits) of Subspace.point, with
no per-tensor work and no functional_call; conv → BN pairs may be folded into one conv
(bnfold.py). The data and the conv weights may be channels-last, which oneDNN's dense
convolutions of many channels run fastest, or NCHW, faster for few channels; NCHW runs max pools
as tiled maxima (maxpool.py). With bn=recompute each point's statistics come from the training
inputs, through functional_call.

The threads strategy runs `workers` points side by side on as many Python threads, each with one
intra-op thread (torch releases the GIL inside its kernels): for small nets on few samples, whose
kernels are too short to split across cores, this uses the cores better than splitting each
kernel. A point's values do not depend on which thread computed it.

A streamed split (engine/data.py) is read once per call: each batch runs through every point of
the call in turn (on the workers side by side), a point's weights loaded again for each batch (a
flat buffer's copy, cheap next to a forward). Where there is no flat buffer (bn=recompute, mixed
dtypes) the points' states are built first, as many at once as engine.memory_mb holds, their BN
statistics recomputed in one read of the training split: a streamed split is then read once per
group of points.
"""

from __future__ import annotations

import copy
import functools
import itertools
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch
from torch import Tensor, nn

from landscape_hpc.engine.batchnorm import recompute_bn_states
from landscape_hpc.engine.bnfold import FoldedConv, Pair, fold_graph
from landscape_hpc.engine.data import Batch, Split, batches
from landscape_hpc.engine.graph import relus_in_place, trace
from landscape_hpc.engine.losses import Sums, run_model
from landscape_hpc.engine.maxpool import tile_max_pools, tiling_pays
from landscape_hpc.engine.metrics import Forward, Points, batch_sums, concat, join, split_sums
from landscape_hpc.engine.precision import autocast_like
from landscape_hpc.engine.subspace import NONNEGATIVE_SUFFIX, Subspace, clamp_variances
from landscape_hpc.params import ParamDict


def to_channels_last(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


class FlatLayout:
    """The moving tensors of a subspace end to end, origin and basis in float64 (read-only,
    shared by every worker); 4-D tensors stored (O, H, W, I) when `channels_last`. `fixed`: the
    others, as Subspace.point gives them (the origin's, variances clamped)."""

    def __init__(self, subspace: Subspace, channels_last: bool):
        self.keys = sorted({k for d in subspace.basis for k in d})
        self.shapes = {k: tuple(subspace.origin[k].shape) for k in self.keys}
        sizes = [int(torch.Size(self.shapes[k]).numel()) for k in self.keys]
        self.offsets = dict(zip(self.keys, [0, *itertools.accumulate(sizes)]))
        self.channels_last = channels_last

        def flat(tensors: Mapping[str, Tensor]) -> Tensor:
            parts = []
            for key in self.keys:
                t = tensors.get(key, torch.zeros_like(subspace.origin[key])).double()
                parts.append(self._stored(t).reshape(-1))
            return torch.cat(parts)

        self.origin = flat(subspace.origin)
        self.basis = [flat(d) for d in subspace.basis]
        self.dtype = subspace.origin[self.keys[0]].dtype
        self.fixed = clamp_variances(
            {k: v for k, v in subspace.origin.items() if k not in self.offsets}
        )

    @staticmethod
    def fits(subspace: Subspace) -> bool:
        """Whether one flat buffer holds the moving tensors: some move, all one float dtype."""
        dtypes = {subspace.origin[k].dtype for d in subspace.basis for k in d}
        return len(dtypes) == 1 and next(iter(dtypes)).is_floating_point

    def _stored(self, t: Tensor) -> Tensor:
        return t.permute(0, 2, 3, 1) if self.channels_last and t.dim() == 4 else t

    def view(self, buffer: Tensor, key: str) -> Tensor:
        """One moving tensor as a view of `buffer` (a flat tensor of this layout), in its own
        shape (channels-last strides for 4-D tensors when the layout is channels-last)."""
        offset, shape = self.offsets[key], self.shapes[key]
        view = buffer[offset : offset + int(torch.Size(shape).numel())]
        if self.channels_last and len(shape) == 4:
            o, i, h, w = shape
            return view.view(o, h, w, i).permute(0, 3, 1, 2)
        return view.view(shape)

    def weights(self, c: Tensor, out: Tensor) -> Tensor:
        """θ(c) of the moving tensors into `out`: origin + Σ c_k · basis_k in float64, rounded
        once (Subspace.point's arithmetic); returns the float64 sum (not to be modified)."""
        acc = self.origin
        for c_k, b_k in zip(c.tolist(), self.basis):
            acc = acc + c_k * b_k
        out.copy_(acc)
        return acc


def private_copy(model: nn.Module, fold_bn: bool, tile_pools: bool) -> tuple[nn.Module, list[Pair]]:
    """A copy of the model in eval mode for one worker, rewritten to run faster: traced by fx
    where it can be, its conv → BN pairs taken out of the forward with `fold_bn` (the caller
    folds their weights: FoldedConv), ReLUs in place where that is safe (graph.py), max pools
    tiled with `tile_pools` (maxpool.py: for NCHW on a CPU); and the pairs."""
    net, pairs = copy.deepcopy(model).eval(), []
    graph_module = trace(net)
    if graph_module is not None:
        pairs = fold_graph(graph_module) if fold_bn else []
        relus_in_place(graph_module)
        graph_module.recompile()
        net = graph_module.eval()
    if tile_pools:
        tile_max_pools(net)
    return net, pairs


class FlatNet:
    """A private copy of the model (private_copy) whose moving tensors are views of one buffer;
    with `fold_bn`, its conv → BN pairs folded into the convs (bnfold.py)."""

    def __init__(self, model: nn.Module, layout: FlatLayout, fold_bn: bool = False):
        self.layout = layout
        tile_pools = tiling_pays(layout.channels_last, layout.origin.device)
        self.net, pairs = private_copy(model, fold_bn, tile_pools)
        # what does not move is the subspace's, not the template's (a fx trace keeps only the
        # modules the forward calls: the others' tensors change nothing)
        self.net.load_state_dict(layout.fixed, strict=False)
        if layout.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.buffer = torch.empty(
            layout.origin.numel(), dtype=layout.dtype, device=layout.origin.device
        )
        self.clamped = []
        for key in layout.keys:
            view = layout.view(self.buffer, key)
            if key.endswith(NONNEGATIVE_SUFFIX):
                self.clamped.append(view)
            owner, _, attr = key.rpartition(".")
            try:
                module = self.net.get_submodule(owner)
            except AttributeError:  # a module the forward does not call (dropped by fx)
                continue
            if attr in module._parameters:
                module._parameters[attr] = nn.Parameter(view, requires_grad=False)
            else:
                module._buffers[attr] = view
        self.folds = [FoldedConv(self.net, pair, layout.fixed) for pair in pairs]

    def at(self, c: Tensor) -> Forward:
        """The network at coordinates c (d,): x (B, ...) -> (1, B, ...)."""
        acc = self.layout.weights(c, self.buffer)
        for v in self.clamped:
            v.clamp_min_(0)
        for fold in self.folds:
            fold.load(functools.partial(self.layout.view, acc))
        return lambda x: run_model(self.net, x).unsqueeze(0)


def _functional(model: nn.Module, state: ParamDict) -> Forward:
    """The network of a full state through functional_call: for what a flat buffer cannot hold
    (recomputed statistics, mixed dtypes)."""
    return lambda x: run_model(model, x, state).unsqueeze(0)


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n for the block (it is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: per-point results of one call: {split: its Sums (1,)} for each point
Rows = list[dict[str, Sums]]


class Pointwise:
    """Points of one subspace on fixed data, one network at a time, on `workers` threads; built
    once and called chunk after chunk (the model copies are made once). `fold_bn`: conv → BN
    pairs folded (bn=eval only; bnfold.py). `channels_last`: data and 4-D weights channels-last,
    else NCHW (on a CPU with tiled max pools: maxpool.py). `memory_mb`: the states held at once
    where there is no flat buffer and a split is streamed."""

    def __init__(
        self,
        points: Points,
        batch_size: int,
        workers: int = 1,
        fold_bn: bool = False,
        channels_last: bool = False,
        memory_mb: float = 2048.0,
    ):
        self.batch_size, self.workers, self.channels_last = batch_size, workers, channels_last
        device = next(iter(points.subspace.origin.values())).device
        if channels_last:
            data = {n: s.map_inputs(to_channels_last) for n, s in points.data.items()}
            points = replace(points, data=data)
        self.points = points
        # one model per worker (functional_call swaps a module's tensors while it runs)
        self.flat = points.bn_data is None and FlatLayout.fits(points.subspace)
        layout = FlatLayout(points.subspace, channels_last) if self.flat else None
        self.models: queue.SimpleQueue[FlatNet | nn.Module] = queue.SimpleQueue()
        self._autocast = nullcontext  # __call__ sets the caller's for its workers
        model = points.model.eval()
        for _ in range(workers):
            if self.flat:
                self.models.put(FlatNet(model, layout, fold_bn))
            else:
                self.models.put(private_copy(model, False, tiling_pays(channels_last, device))[0])
        state_bytes = sum(v.numel() * v.element_size() for v in points.subspace.origin.values())
        self.states_at_once = max(1, int(memory_mb * 2**20 // max(state_bytes, 1)))

    def _states(self, coords: Tensor) -> list[ParamDict]:
        """Full states at coords (k, d), BN statistics recomputed (one read of bn_data) when
        asked, 4-D tensors channels-last when the plan is."""
        p = self.points
        states = [p.subspace.point(c) for c in coords]
        if p.bn_data is not None:
            states = recompute_bn_states(p.model, states, p.bn_data, p.bn_batch_size)
        if self.channels_last:
            states = [{key: to_channels_last(v) for key, v in s.items()} for s in states]
        return states

    def _forward(self, model: FlatNet | nn.Module, c: Tensor, state: ParamDict | None) -> Forward:
        if self.flat:
            return model.at(c)
        return _functional(model, state if state is not None else self._states(c[None])[0])

    def _one(
        self, c: Tensor, splits: Mapping[str, Split], state: ParamDict | None = None
    ) -> dict[str, Sums]:
        """The sums (1,) of each of `splits` (resident) at coordinates c (d,)."""
        p = self.points
        model = self.models.get()
        try:
            with torch.no_grad(), self._autocast():  # grad and autocast modes are per thread
                forward = self._forward(model, c, state)
                return {
                    name: split_sums(forward, split, self.batch_size, p.loss)
                    for name, split in splits.items()
                }
        finally:
            self.models.put(model)

    def _on_batch(
        self,
        block: Sequence[int],
        coords: Tensor,
        states: Sequence[ParamDict] | None,
        batch: Batch,
        totals: list[Sums | None],
    ) -> None:
        """The points `block` of coords on one batch, added to their totals."""
        model = self.models.get()
        try:
            with torch.no_grad(), self._autocast():
                for i in block:
                    forward = self._forward(model, coords[i], None if states is None else states[i])
                    sums = batch_sums(forward, batch, self.points.loss)
                    totals[i] = sums if totals[i] is None else totals[i] + sums
        finally:
            self.models.put(model)

    def _streamed(
        self,
        coords: Tensor,
        split: Split,
        states: Sequence[ParamDict] | None,
        pool: ThreadPoolExecutor | None,
    ) -> dict[str, Sums]:
        """The sums (k,) at coords (k, d) on one split read once: each batch runs
        through every point, the points split into one block per worker."""
        k = coords.shape[0]
        totals: list[Sums | None] = [None] * k
        blocks = [b.tolist() for b in torch.arange(k).tensor_split(min(self.workers, k))]
        for batch in split.batches(self.batch_size):
            if pool is None:
                self._on_batch(range(k), coords, states, batch, totals)
            else:
                run = functools.partial(
                    self._on_batch, coords=coords, states=states, batch=batch, totals=totals
                )
                list(pool.map(run, blocks))
        return {split.name: join(totals)}

    def _resident(self, coords: Tensor, splits: Mapping[str, Split], pool) -> Rows:
        """Every point on the resident splits, point after point (on the workers' blocks)."""
        if pool is None:
            return [self._one(c, splits) for c in coords]
        stop = threading.Event()

        def block(coords: Tensor) -> Rows:
            return [self._one(c, splits) for c in coords if not stop.is_set()]

        try:  # each worker a contiguous block: one task, not one per point
            done = pool.map(block, torch.tensor_split(coords, self.workers))
            return [row for rows in done for row in rows]
        finally:  # an error or Ctrl-C: the workers stop after their current point
            stop.set()

    def _with_streams(self, coords: Tensor, pool) -> dict[str, Sums]:
        """Some splits streamed: each read once per group of points (once per call with a flat
        buffer), the resident ones point after point."""
        data = self.points.data
        resident = {n: s for n, s in data.items() if not s.streamed}
        group = coords.shape[0] if self.flat else self.states_at_once
        parts = []
        for part in batches(coords.shape[0], group):
            states = None if self.flat else self._states(coords[part])
            out = {}
            for split in data.values():
                if split.streamed:
                    out.update(self._streamed(coords[part], split, states, pool))
            if resident and states is None:
                out.update(concat(self._resident(coords[part], resident, pool)))
            elif resident:
                out.update(
                    concat([self._one(c, resident, st) for c, st in zip(coords[part], states)])
                )
            parts.append({name: out[name] for name in data})
        return concat(parts)

    def __call__(self, coords: Tensor) -> dict[str, Sums]:
        """The sums of every split at each row of coords (K, d): rows (K,) (metrics.join)."""
        streams = any(s.streamed for s in self.points.data.values())
        # autocast is per thread: the workers take the caller's (engine.precision=bf16)
        self._autocast = autocast_like(next(iter(self.points.subspace.origin.values())).device)
        if (self.workers == 1 or coords.shape[0] == 1) and not streams:
            return concat([self._one(c, self.points.data) for c in coords])
        if self.workers == 1 or coords.shape[0] == 1:
            return self._with_streams(coords, None)
        with intra_op_threads(1):
            # OpenMP keeps a thread count per thread: each worker sets its own
            pool = ThreadPoolExecutor(
                self.workers, "point", initializer=torch.set_num_threads, initargs=(1,)
            )
            try:
                if streams:
                    return self._with_streams(coords, pool)
                return concat(self._resident(coords, self.points.data, pool))
            finally:
                pool.shutdown(wait=True)
