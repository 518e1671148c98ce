"""The data protocol (engine/data.py): every form of data gives the numbers of the same data
resident, through every strategy and the loop; streamed data are read once per pass of points;
bad input gets one clear error."""

import math

import numpy as np
import pytest
import torch
from engine_helpers import random_plane
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.engine import autotune, data
from landscape_hpc.engine.autotune import Plan
from landscape_hpc.engine.data import Resident, Streamed, as_splits
from landscape_hpc.engine.evaluate import Evaluator, evaluate_points, evaluate_points_loop
from landscape_hpc.engine.memory import activation_bytes_per_sample
from landscape_hpc.errors import UserError, UserTypeError
from landscape_hpc.models import build_model

STRATEGIES = ["vmap", "sequential", "threads"]
COORDS = torch.tensor([[0.0, 0.0], [0.4, -0.3], [-1.0, 0.7]], dtype=torch.float64)
N, BATCH = 90, 32  # a last partial batch of 26


def _images(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


class Counting:
    """A DataLoader that counts how often it is read (each __iter__ is one read)."""

    def __init__(self, loader):
        self.loader, self.reads = loader, 0

    def __iter__(self):
        self.reads += 1
        return iter(self.loader)


def _same(got, want, rtol=1e-6):
    for split in want:
        np.testing.assert_allclose(got[split].loss, want[split].loss, rtol=rtol)
        np.testing.assert_allclose(got[split].acc, want[split].acc, atol=1e-9)


def _run(strategy, model, sub, coords, splits, opts, **kw):
    if strategy == "loop":
        return evaluate_points_loop(model, sub, coords, splits, opts, **kw)
    return evaluate_points(model, sub, coords, splits, opts, **kw)


@pytest.mark.parametrize("name", ["mlp", "mpo_cnn"])
@pytest.mark.parametrize("strategy", [*STRATEGIES, "loop"])
def test_a_streamed_dataloader_gives_the_numbers_of_the_same_data_resident(strategy, name):
    model = build_model(ModelConfig(name=name), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _images()
    opts = EngineConfig(batch_size=BATCH, strategy="vmap" if strategy == "loop" else strategy)
    resident = {"train": (x, y), "test": (x[:40], y[:40])}
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)  # 32, 32, 26
    streamed = {"train": loader, "test": (x[:40], y[:40])}  # one streamed, one resident
    want = evaluate_points_loop(model, sub, COORDS, resident, opts)
    _same(_run(strategy, model, sub, COORDS, streamed, opts), want)


@pytest.mark.parametrize("strategy", [*STRATEGIES, "loop"])
def test_bn_recompute_from_a_streamed_training_split(strategy):
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _images(64)
    opts = EngineConfig(batch_size=BATCH, bn="recompute", strategy="vmap")
    if strategy != "loop":
        opts = EngineConfig(batch_size=BATCH, bn="recompute", strategy=strategy)
    coords = COORDS * 0.5
    want = evaluate_points_loop(model, sub, coords, {"test": (x[:40], y[:40])}, opts, bn_data=x)
    # the training split streamed, in the engine's batches: BN statistics from it by default
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    splits = {"train": loader, "test": DataLoader(TensorDataset(x[:40], y[:40]), batch_size=16)}
    got = _run(strategy, model, sub, coords, splits, opts)
    _same({"test": got["test"]}, want, rtol=1e-5)
    plain = evaluate_points(model, sub, coords, splits, EngineConfig(batch_size=BATCH))
    assert not np.allclose(got["test"].loss, plain["test"].loss)  # recomputing changed them


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_streamed_data_are_read_once_per_pass_not_per_point(strategy):
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _images()
    loader = Counting(DataLoader(TensorDataset(x, y), batch_size=BATCH))
    sample = x[0]
    per_point = sum(v.numel() for v in sub.basis[0].values()) * 4
    per_point += 2 * activation_bytes_per_sample(model, sample) * BATCH
    opts = EngineConfig(batch_size=BATCH, memory_mb=3.5 * per_point / 2**20, strategy=strategy)
    evaluator = Evaluator(model, sub, {"train": loader}, opts)
    coords = torch.randn(7, 2, dtype=torch.float64) * 0.3
    evaluator(coords[:1])  # builds the runner (its first batch is read once and kept)
    before = loader.reads
    got = evaluator(coords)
    reads = loader.reads - before
    runner = evaluator._runner(evaluator.plan)
    passes = math.ceil(7 / runner.per_pass) if strategy == "vmap" else 1
    assert strategy != "vmap" or runner.per_pass == 3
    assert reads == passes < 7
    _same(got, evaluate_points_loop(model, sub, coords, {"train": (x, y)}, opts))


def test_auto_times_a_stream_on_a_few_batches_read_once():
    autotune.forget()
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _images(400)
    loader = Counting(DataLoader(TensorDataset(x, y), batch_size=BATCH))
    evaluator = Evaluator(model, sub, {"train": loader}, EngineConfig(batch_size=BATCH))
    coords = torch.randn(8, 2, dtype=torch.float64) * 0.3
    got = evaluator(coords)
    timed = autotune.timings(evaluator.key)
    assert len(timed) >= 2  # several plans timed, each run more than once...
    assert loader.reads <= 3  # ...on kept batches: the fingerprint's, the probe's, the run's
    _same(got, evaluate_points_loop(model, sub, coords, {"train": (x, y)}), rtol=1e-5)
    autotune.forget()


class Keyword(nn.Module):
    """A model of keyword inputs: forward(x, scale)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x, scale):
        return self.net(x) * scale


@pytest.mark.parametrize("strategy", [*STRATEGIES, "loop"])
def test_dict_batches_are_keyword_inputs_and_labels(strategy):
    g = torch.Generator().manual_seed(4)
    x, s = torch.randn(50, 5, generator=g), torch.rand(50, 1, generator=g) + 0.5
    y = torch.randint(0, 3, (50,), generator=g)
    model = Keyword()
    sub = random_plane(model, ignore="none")
    opts = EngineConfig(batch_size=16, strategy="vmap" if strategy == "loop" else strategy)
    rows = [{"x": x[i], "scale": s[i], "labels": y[i]} for i in range(50)]
    loader = DataLoader(rows, batch_size=16)  # default collate: dicts of (16, ...) tensors
    resident = {"t": {"x": x, "scale": s, "labels": y}}
    got = _run(strategy, model, sub, COORDS, {"t": loader}, opts)
    _same(got, evaluate_points_loop(model, sub, COORDS, resident, opts))
    with torch.no_grad():
        model.load_state_dict(sub.point(COORDS[1]))
        want = float(nn.functional.cross_entropy(model(x, s), y))
    np.testing.assert_allclose(got["t"].loss[1], want, rtol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_integer_inputs_stay_integers_through_an_embedding(strategy):
    class Bag(nn.Module):  # token ids (B, 7) -> class logits (B, 4), defined inside the test
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(20, 6)
            self.head = nn.Linear(6, 4)

        def forward(self, ids):
            assert not ids.is_floating_point()
            return self.head(self.embed(ids).mean(1))

    g = torch.Generator().manual_seed(5)
    ids, y = torch.randint(0, 20, (45, 7), generator=g), torch.randint(0, 4, (45,), generator=g)
    model = Bag()
    sub = random_plane(model, ignore="none")
    opts = EngineConfig(batch_size=16, strategy=strategy)
    want = evaluate_points_loop(model, sub, COORDS, {"t": (ids, y)}, opts)
    _same(evaluate_points(model, sub, COORDS, {"t": (ids, y)}, opts), want)
    loader = DataLoader(TensorDataset(ids, y), batch_size=16)
    _same(evaluate_points(model, sub, COORDS, {"t": loader}, opts), want)


class Pairs(Dataset):
    """A map-style Dataset of (input, label) items."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return iter(zip(self.x, self.y))


def test_datasets_resident_when_they_fit_else_streamed(monkeypatch):
    x, y = _images(50)
    small = as_splits({"t": Pairs(x, y)}, "cpu", BATCH)["t"]
    assert isinstance(small, Resident) and torch.equal(small.inputs, x)
    assert small.target.tolist() == y.tolist()
    assert isinstance(as_splits(Stream(x, y), "cpu", BATCH)["train"], Streamed)
    monkeypatch.setattr(data, "RESIDENT_MB", 0)
    big = as_splits({"t": Pairs(x, y)}, "cpu", BATCH)["t"]
    assert isinstance(big, Streamed)
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = random_plane(model)
    want = evaluate_points_loop(model, sub, COORDS, {"t": (x, y)})
    for form in (Pairs(x, y), Stream(x, y), [(x[:20], y[:20]), (x[20:], y[20:])]):
        _same(evaluate_points(model, sub, COORDS, {"t": form}), want)


def test_the_forms_of_as_splits():
    x, y = _images(10)
    only = as_splits(x)
    assert list(only) == ["train"] and only["train"].target is None and only["train"].n == 10
    pair = as_splits((x.numpy(), y.numpy()))["train"]
    assert torch.equal(pair.inputs, x) and pair.target.dtype == y.dtype
    picked = as_splits({"a": (x, y), "b": (x, y), "c": x}, names=["c", "a"])
    assert list(picked) == ["c", "a"]
    batch = data.normalise((x, y, "extra"), "t")  # items after the second are ignored
    assert batch.target is y and batch.n == 10
    keyed = data.normalise({"input_ids": y, "target": y * 2}, "t")
    assert keyed.inputs == {"input_ids": y} and torch.equal(keyed.target, y * 2)


# --- bad input: one clear error naming the split or argument and the fix ---


def test_bad_data_are_refused_with_one_clear_error():
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _images(20)
    empty = DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4)
    with pytest.raises(UserError, match="split 't' yielded no batches"):
        evaluate_points(model, sub, COORDS, {"t": empty})
    with pytest.raises(UserError, match="split 'val' is not in the data .* train, test"):
        as_splits({"train": (x, y), "test": (x, y)}, names=["train", "val"])
    with pytest.raises(UserError, match="one-shot generator.*DataLoader"):
        evaluate_points(model, sub, COORDS, {"t": ((x, y) for _ in range(2))})
    with pytest.raises(UserTypeError, match="split 't' yielded a str as a batch.*collate_fn"):
        evaluate_points(model, sub, COORDS, {"t": ["not a batch"]})
    with pytest.raises(TypeError, match="split 't' is a int"):
        as_splits({"t": 3})
    with pytest.raises(UserError, match="tuple of 3 items"):
        as_splits({"t": (x, y, y)})
    with pytest.raises(UserError, match="leading .* dim N"):
        as_splits({"t": (x, y[:5])})
    with pytest.raises(UserError, match="bn=recompute needs the training inputs"):
        bn = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
        Evaluator(bn, random_plane(bn), {"test": (x, y)}, EngineConfig(bn="recompute"))


def test_a_pinned_plan_on_streamed_data_keeps_the_loaders_batches():
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _images()
    seen = []

    def collate(items):
        seen.append(len(items))
        return torch.stack([a for a, _ in items]), torch.tensor([int(b) for _, b in items])

    loader = DataLoader(TensorDataset(x, y), batch_size=25, collate_fn=collate)
    plan = Plan("sequential", 64)
    got = Evaluator(model, sub, {"t": loader}, plan=plan)(COORDS)
    assert set(seen) == {25, 15}  # the loader's own batches, not the plan's 64
    _same(got, evaluate_points_loop(model, sub, COORDS, {"t": (x, y)}))
