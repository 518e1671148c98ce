"""The shard rule of data_parallel groups (engine/shard.py) and the group's sums (api/run.py):
the members' shards of a split are disjoint and cover it, and their sums added equal the whole
split's, for resident and streamed data, against the plain loop on the unsharded data. The
groups themselves run under the real mpirun in tests/test_mpi.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from landscape_hpc.api.run import shard_sums, sums_array
from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.engine.data import as_split
from landscape_hpc.engine.evaluate import Evaluator, evaluate_points_loop, metrics_of
from landscape_hpc.engine.shard import shard, shard_bounds
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

COORDS = torch.tensor([[0.0, 0.0], [0.4, -0.3], [-0.7, 0.2]], dtype=torch.float64)


def _problem(n: int = 203):
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    basis = [{k: torch.randn_like(v) * 0.1 for k, v in origin.items()} for _ in range(2)]
    x, y = torch.randn(n, 1, 8, 8), torch.randint(0, 10, (n,))
    return model, Subspace(origin, basis), x, y


def _group(model, sub, splits_of_members, opts):
    """The group's metrics: each member's Evaluator sums on its shards, added as run.py adds."""
    parts = []
    for data in splits_of_members:
        sums = Evaluator(model, sub, data, opts).sums(COORDS)
        parts.append({name: sums_array(s) for name, s in sums.items()})
    return metrics_of(shard_sums(parts))


def _same(got, want, rtol=1e-6):
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name].loss, want[name].loss, rtol=rtol, atol=0)
        np.testing.assert_allclose(got[name].acc, want[name].acc, rtol=rtol, atol=0)


@pytest.mark.parametrize("count", [2, 3])
def test_resident_shards_are_contiguous_disjoint_and_cover_the_split(count):
    _, _, x, y = _problem(203)
    split = as_split((x, y), None, 64)
    parts = [shard(split, i, count) for i in range(count)]
    bounds = [shard_bounds(203, i, count) for i in range(count)]
    assert bounds[0].start == 0 and bounds[-1].stop == 203
    assert all(a.stop == b.start for a, b in zip(bounds, bounds[1:]))
    assert sum(p.n for p in parts) == 203 and max(p.n for p in parts) - min(p.n for p in parts) <= 1
    torch.testing.assert_close(torch.cat([p.inputs for p in parts]), x, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([p.target for p in parts]), y, rtol=0, atol=0)


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_resident_shards_summed_equal_the_whole_split(strategy):
    model, sub, x, y = _problem()
    opts = EngineConfig(batch_size=64, strategy=strategy)
    splits = {"train": as_split((x, y), None, 64), "test": as_split((x[:50], y[:50]), None, 64)}
    members = [{n: shard(s, i, 2) for n, s in splits.items()} for i in range(2)]
    want = evaluate_points_loop(model, sub, COORDS, {"train": (x, y), "test": (x[:50], y[:50])})
    _same(_group(model, sub, members, opts), want)
    # one member's shard alone is not the whole split (so the check above could fail)
    alone = Evaluator(model, sub, members[0], opts)(COORDS)
    assert not np.allclose(alone["train"].loss, want["train"].loss, rtol=1e-6)


class Batches:
    """A re-iterable of batches with no len (a generic stream)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.parametrize("strategy", ["vmap", "sequential", "threads"])
@pytest.mark.parametrize("count", [2, 3])
def test_streamed_shards_take_every_kth_batch_and_sum_to_the_whole(strategy, count):
    model, sub, x, y = _problem(200)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)  # 7 batches, the last of 8
    streamed = as_split(loader, None, 32)
    members = [{"train": shard(streamed, i, count)} for i in range(count)]
    for i, member in enumerate(members):
        got = [b.target for b in member["train"].batches()]
        want = [t for j, (_, t) in enumerate(loader) if j % count == i]
        assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    opts = EngineConfig(batch_size=32, strategy=strategy)
    reference = evaluate_points_loop(model, sub, COORDS, {"train": (x, y)})
    _same(_group(model, sub, members, opts), reference)


def test_an_empty_shard_is_refused_in_one_line():
    _, _, x, y = _problem(2)
    with pytest.raises(UserError, match="fewer samples than the 3 ranks of a data_parallel"):
        shard(as_split((x, y), None, 64), 0, 3)
    loader = DataLoader(TensorDataset(x, y), batch_size=1)  # 2 batches: a len to check
    with pytest.raises(UserError, match="fewer batches than the 3 ranks"):
        shard(as_split(loader, None, 1), 2, 3)
    stream = as_split(Batches([(x[:1], y[:1]), (x[1:], y[1:])]), None, 1)  # no len: on reading
    part = shard(stream, 2, 3)
    with pytest.raises(UserError, match="fewer batches than the 3 ranks") as err:
        list(part.batches())
    assert "\n" not in str(err.value)
    assert shard(stream, 1, 3).first().n == 1  # the members with a batch read theirs
