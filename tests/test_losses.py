"""The loss protocol (engine/losses.py) against hand-written formulas, through every strategy of
the engine, MPO's objective and the Hessian's loss; and the bad inputs it refuses."""

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape_hpc.config import EngineConfig
from landscape_hpc.engine.data import Batch
from landscape_hpc.engine.evaluate import evaluate_points, evaluate_points_loop
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.engine.losses import (
    FEW_CLASSES,
    LMLoss,
    log_softmax,
    resolve_loss,
    unwrap_output,
)
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError, UserTypeError

STRATEGIES = ["vmap", "sequential", "threads"]
COORDS = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.5, 0.4]], dtype=torch.float64)
V, T = 11, 6  # vocabulary, sequence length


def plane(model: nn.Module, seed: int = 0) -> Subspace:
    """A random plane through all of a model's float tensors."""
    g = torch.Generator().manual_seed(seed)
    origin = {k: v.detach().clone() for k, v in model.state_dict().items()}
    basis = [
        {k: 0.1 * torch.randn(v.shape, generator=g) for k, v in origin.items()} for _ in range(2)
    ]
    return Subspace(origin, basis)


class TinyLM(nn.Module):
    """Token ids (B, T) -> logits (B, T, V): an embedding, a causal mix of the previous token."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, 8)
        self.mix = nn.Linear(16, 8)
        self.head = nn.Linear(8, V)

    def forward(self, ids):
        e = self.embed(ids)  # (B, T, 8)
        prev = torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], dim=1)
        return self.head(torch.tanh(self.mix(torch.cat([e, prev], -1))))  # (B, T, V)


def _tokens(n: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (n, T), generator=g)
    labels = ids.clone()
    labels[torch.rand(n, T, generator=g) < 0.3] = -100  # ignored positions
    return ids, labels


def _hand_lm(model, state, ids, labels, shift):
    """Per-token cross-entropy written out: sum over counted tokens / their number."""
    with torch.no_grad():
        model.load_state_dict(state)
        logits = model(ids).double()
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    total, count, hits = 0.0, 0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y == -100:
                continue
            total -= float(torch.log_softmax(logits[b, t], -1)[y])
            hits += int(logits[b, t].argmax() == y)
            count += 1
    return total / count, 100.0 * hits / count


@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize("strategy", [*STRATEGIES, "loop"])
def test_lm_loss_is_the_hand_written_per_token_cross_entropy(strategy, shift):
    torch.manual_seed(0)
    model = TinyLM()
    sub = plane(model)
    ids, labels = _tokens()
    opts = EngineConfig(batch_size=4, strategy="vmap" if strategy == "loop" else strategy)
    run = evaluate_points_loop if strategy == "loop" else evaluate_points
    loss = "lm" if shift else "lm_aligned"
    got = run(model, sub, COORDS, {"train": (ids, labels)}, opts, loss=loss)["train"]
    for i, c in enumerate(COORDS):
        want_loss, want_acc = _hand_lm(TinyLM(), sub.point(c), ids, labels, shift)
        np.testing.assert_allclose(got.loss[i], want_loss, rtol=1e-5)
        np.testing.assert_allclose(got.acc[i], want_acc, atol=1e-9)


def test_lm_means_are_weighted_by_tokens_not_batches():
    ids, labels = _tokens(n=8)
    labels[:4, 1:] = -100  # the first batch counts far fewer tokens than the second
    model = TinyLM()
    sub = plane(model)
    got = evaluate_points(
        model, sub, COORDS[:1], {"t": (ids, labels)}, EngineConfig(batch_size=4), loss="lm"
    )
    want, _ = _hand_lm(TinyLM(), sub.point(COORDS[0]), ids, labels, True)
    np.testing.assert_allclose(got["t"].loss[0], want, rtol=1e-6)


def test_lm_without_labels_takes_the_input_ids_and_matches_hf_shift():
    ids, _ = _tokens()
    logits = torch.randn(1, *ids.shape, V)
    batch = Batch(ids, None, ids.shape[0])
    got = LMLoss().mean(logits, batch)
    want = F.cross_entropy(logits[0, :, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(got[0], want)


def test_ce_and_mse_sums_are_the_formulas():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 5, generator=g)
    labels = torch.randint(0, 5, (9,), generator=g)
    batch = Batch(torch.zeros(9, 1), labels, 9)
    ce = resolve_loss("ce").sums(logits, batch)
    want = torch.stack([F.cross_entropy(lg, labels, reduction="sum") for lg in logits])
    torch.testing.assert_close(ce.loss, want.double())
    assert ce.correct.tolist() == [(lg.argmax(-1) == labels).sum().item() for lg in logits]
    # mse of float targets of the output's shape: squared error, mean over non-batch dims
    target = torch.randn(9, 5, generator=g)
    mse = resolve_loss("mse").sums(logits, Batch(torch.zeros(9, 1), target, 9))
    torch.testing.assert_close(mse.loss, ((logits - target) ** 2).mean(-1).sum(-1).double())
    loss, acc = mse.means()
    assert torch.isnan(acc).all() and torch.isfinite(loss).all()


@pytest.mark.parametrize("classes", [2, 10, FEW_CLASSES, FEW_CLASSES + 1, 100])
def test_log_softmax_fast_path_is_torchs_to_rounding(classes):
    """Few classes take the transposed kernel: torch's values to float32 rounding, stable for
    logits of 1e4 (no overflow), on a non-contiguous input too."""
    g = torch.Generator().manual_seed(classes)
    logits = 30 * torch.randn(3, 257, classes, generator=g)
    logits[0, 0] += 1e4
    for x in (logits, logits.transpose(0, 1)):
        want = torch.log_softmax(x, dim=-1)
        got = log_softmax(x)
        assert got.shape == want.shape and torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=3e-7, atol=2e-6)


def _sq_err(outputs, batch):
    """A user's per-sample metric: squared error of the first output against a float target."""
    return (outputs[:, 0] - batch.target) ** 2


def _sq_err_sum(outputs, batch):
    """The same metric as a (sum, count) pair."""
    return ((outputs[:, 0] - batch.target) ** 2).sum(), batch.n


@pytest.mark.parametrize("metric", [_sq_err, _sq_err_sum])
@pytest.mark.parametrize("strategy", [*STRATEGIES, "loop"])
def test_a_user_metric_in_both_return_forms(strategy, metric):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(50, 3, generator=g), torch.randn(50, generator=g)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    sub = plane(model)
    opts = EngineConfig(batch_size=16, strategy="vmap" if strategy == "loop" else strategy)
    run = evaluate_points_loop if strategy == "loop" else evaluate_points
    got = run(model, sub, COORDS, {"train": (x, y)}, opts, loss=metric)["train"]
    for i, c in enumerate(COORDS):
        with torch.no_grad():
            model.load_state_dict(sub.point(c))
            want = float(((model(x)[:, 0] - y) ** 2).mean())
        np.testing.assert_allclose(got.loss[i], want, rtol=1e-5)
    assert np.isnan(got.acc).all()


@dataclass
class Output:
    """A ModelOutput-like result: a dataclass with .logits (transformers is not installed)."""

    logits: torch.Tensor
    hidden: torch.Tensor


class DictOutput(OrderedDict):
    """HF's ModelOutput is an OrderedDict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def test_unwrap_rule():
    t = torch.ones(2, 3)
    assert unwrap_output(t) is t
    assert unwrap_output(Output(t, t + 1)) is t
    assert unwrap_output(DictOutput(logits=t, hidden=t + 1)) is t
    assert unwrap_output({"logits": t}) is t
    assert unwrap_output((t, t + 1)) is t
    with pytest.raises(UserTypeError, match="logits"):
        unwrap_output({"scores": t})
    with pytest.raises(TypeError):  # a UserTypeError is a TypeError as well
        unwrap_output(3.0)


@pytest.mark.parametrize("wrap", ["dataclass", "ordered_dict", "tuple"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_model_output_objects_are_unwrapped_by_every_strategy(strategy, wrap):
    class Wrapped(nn.Module):  # a model defined inside the test
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

        def forward(self, x):
            logits = self.body(x)
            if wrap == "dataclass":
                return Output(logits, x)
            if wrap == "ordered_dict":
                return DictOutput(logits=logits, hidden=x)
            return logits, x

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    model = Wrapped()
    sub = plane(model)
    opts = EngineConfig(batch_size=16, strategy=strategy)
    got = evaluate_points(model, sub, COORDS, {"t": (x, y)}, opts)["t"]
    plain = model.body
    for i, c in enumerate(COORDS):
        with torch.no_grad():
            model.load_state_dict(sub.point(c))
            want = float(F.cross_entropy(plain(x), y))
        np.testing.assert_allclose(got.loss[i], want, rtol=1e-5)


def test_flat_loss_and_mpo_objective_take_the_lm_loss():
    from landscape_hpc.mpo.objective import objective_batched, objective_loop
    from landscape_hpc.mpo.plane import Plane

    torch.manual_seed(0)
    model = TinyLM()
    ids, labels = _tokens()
    state = dict(model.state_dict())
    loss, theta = flat_loss(model, state, list(state), ids, labels, batch_size=3, loss="lm")
    want, _ = _hand_lm(TinyLM(), state, ids, labels, True)
    np.testing.assert_allclose(float(loss(theta)), want, rtol=1e-5)
    p = Plane.init((model, TinyLM(), TinyLM()), scale=0.1)
    low = torch.tensor([[0.0, 0.0], [0.5, -0.5]])
    high = torch.tensor([[1.0, 1.0]])
    a = objective_batched(p, model, low, high, ids, labels, 5.0, 2, backward=False, loss="lm")
    b = objective_loop(p, model, low, high, ids, labels, 5.0, backward=False, loss="lm")
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)
    np.testing.assert_allclose(a.acc_low, b.acc_low, atol=1e-9)
    with torch.no_grad():
        cells = [{k: w[0] for k, w in p.cell_weights(low[i : i + 1]).items()} for i in range(2)]
    hand = [_hand_lm(TinyLM(), {**c, **p.buffers}, ids, labels, True)[0] for c in cells]
    np.testing.assert_allclose(a.ce_low, np.mean(hand), rtol=1e-5)


# --- bad input: one clear error naming the argument and the fix ---


def test_per_token_output_with_ce_and_class_labels_is_refused_not_summed():
    model = TinyLM()
    ids = torch.randint(0, V, (8, T))
    labels = torch.randint(0, V, (8,))
    with pytest.raises(UserError, match=r"loss='ce'.*\(8, 6, 11\).*loss='lm'"):
        evaluate_points(model, plane(model), COORDS, {"t": (ids, labels)})
    with pytest.raises(ValueError):  # a UserError is a ValueError
        evaluate_points_loop(model, plane(model), COORDS, {"t": (ids, labels)})


@pytest.mark.parametrize(
    ("metric", "error", "message"),
    [
        (lambda out, batch: out.mean(), UserError, "a scalar is a mean"),
        (lambda out, batch: out, UserError, "per-sample values of shape"),
        (lambda out, batch: "low", UserTypeError, "returned a str"),
        (lambda out, batch: (out.sum(), float("inf")), UserError, "finite"),
    ],
)
def test_a_metric_returning_the_wrong_thing_names_loss(metric, error, message):
    model = nn.Linear(3, 2)
    x, y = torch.randn(10, 3), torch.randn(10)
    with pytest.raises(error, match=message) as caught:
        evaluate_points(model, plane(model), COORDS, {"t": (x, y)}, loss=metric)
    assert "loss=" in str(caught.value)


def test_unknown_loss_names_and_loss_needing_labels():
    model = nn.Linear(3, 2)
    x = torch.randn(10, 3)
    with pytest.raises(UserError, match="loss='hinge' is not known; valid values: ce, mse, lm"):
        evaluate_points(model, plane(model), COORDS, {"t": (x, None)}, loss="hinge")
    with pytest.raises(UserError, match="loss='ce' needs labels"):
        evaluate_points(model, plane(model), COORDS, x)
    with pytest.raises(UserTypeError, match="loss=3"):
        resolve_loss(3)
