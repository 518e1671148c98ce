"""The batched engine against the plain per-point loop it replaces."""

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from engine_helpers import random_plane

from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.engine import autotune
from landscape_hpc.engine.autotune import Plan
from landscape_hpc.engine.evaluate import (
    Evaluator,
    default_strategy,
    evaluate_points,
    evaluate_points_loop,
)
from landscape_hpc.engine.losses import per_sample_loss
from landscape_hpc.engine.memory import CPU_ACTIVATION_BYTES, cpu_batch_size
from landscape_hpc.engine.pointwise import FlatLayout, FlatNet, intra_op_threads
from landscape_hpc.models import MODEL_NAMES, build_model

# the image registry; the language models (token inputs) against the loop: tests/test_text.py
REGISTRY = [n for n in MODEL_NAMES if n not in ("custom", "gpt_tiny", "hf")]
COORDS = torch.tensor([[0.0, 0.0], [0.4, -0.3], [-1.0, 0.7]], dtype=torch.float64)


def _data(shape=(1, 8, 8), n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def _assert_close(a, b, rtol=1e-5):
    for split in b:
        np.testing.assert_allclose(a[split].loss, b[split].loss, rtol=rtol)
        # an argmax may flip only on an exact tie; allow one sample's worth (NaN: loss models)
        np.testing.assert_allclose(a[split].acc, b[split].acc, rtol=0, atol=100.0 / 96 + 1e-9)


@pytest.mark.parametrize("name", REGISTRY)
@pytest.mark.parametrize("strategy", ["vmap", "sequential", "threads"])
def test_engine_matches_loop_on_every_registry_model(name, strategy):
    model = build_model(ModelConfig(name=name), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _data()
    opts = EngineConfig(batch_size=40, strategy=strategy)
    data = {"train": (x, y), "test": (x[:50], y[:50])}
    _assert_close(
        evaluate_points(model, sub, COORDS, data, opts),
        evaluate_points_loop(model, sub, COORDS, data, opts),
    )


@pytest.mark.parametrize("strategy", ["vmap", "sequential", "threads"])
@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_bn_recompute_matches_loop(strategy, dir_type):
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    sub = random_plane(model, dir_type, ignore="none" if dir_type == "states" else "biasbn")
    x, y = _data()
    opts = EngineConfig(batch_size=32, bn="recompute", strategy=strategy)
    data = {"test": (x[:48], y[:48])}
    coords = COORDS * 0.5  # keep running variances positive, so no point diverges
    got = evaluate_points(model, sub, coords, data, opts, bn_data=x)
    ref = evaluate_points_loop(model, sub, coords, data, opts, bn_data=x)
    _assert_close(got, ref)
    plain = evaluate_points(model, sub, coords, data, EngineConfig(batch_size=32))
    assert not np.allclose(got["test"].loss, plain["test"].loss)  # recomputing changes the value


def test_mse_loss_matches_loop_and_reference_formula():
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _data()
    opts = EngineConfig(loss="mse")
    got = evaluate_points(model, sub, COORDS, {"t": (x, y)}, opts)
    _assert_close(got, evaluate_points_loop(model, sub, COORDS, {"t": (x, y)}, opts))
    with torch.no_grad():
        model.load_state_dict(sub.point(COORDS[1]))
        p = torch.softmax(model(x), -1)
        ref = ((p - torch.nn.functional.one_hot(y, 10)) ** 2).mean().item()
    assert got["t"].loss[1] == pytest.approx(ref, rel=1e-6)


def test_results_do_not_depend_on_the_chunk_size():
    model = build_model(ModelConfig(name="mpo_cnn"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _data()
    coords = torch.rand(7, 2, dtype=torch.float64) * 2 - 1
    big = evaluate_points(model, sub, coords, {"t": (x, y)}, EngineConfig(strategy="vmap"))
    tiny = EngineConfig(memory_mb=1e-3, strategy="vmap")  # one point per pass
    small = evaluate_points(model, sub, coords, {"t": (x, y)}, tiny)
    np.testing.assert_allclose(big["t"].loss, small["t"].loss, rtol=1e-6)
    parts = [evaluate_points(model, sub, coords[i : i + 3], {"t": (x, y)}) for i in (0, 3, 6)]
    np.testing.assert_allclose(
        np.concatenate([p["t"].loss for p in parts]), big["t"].loss, rtol=1e-6
    )


@pytest.mark.parametrize("name", ["mpo_cnn_bn", "vgg9", "resnet20"])
@pytest.mark.parametrize("plan", [Plan("sequential", 40, 1, False), Plan("threads", 40, 2, False)])
def test_nchw_plans_with_tiled_pools_match_the_loop(name, plan):
    """auto's other layout: NCHW, BN folded, max pools as tiled maxima (vgg9 has four)."""
    model = build_model(ModelConfig(name=name), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _data()
    data = {"train": (x, y), "test": (x[:50], y[:50])}
    with intra_op_threads(plan.workers):
        got = Evaluator(model, sub, data, EngineConfig(batch_size=40), plan=plan)(COORDS)
    _assert_close(got, evaluate_points_loop(model, sub, COORDS, data))


@pytest.mark.parametrize("fold_bn", [True, False])
@pytest.mark.parametrize("strategy", ["vmap", "sequential", "threads"])
def test_what_does_not_move_comes_from_the_subspace_not_the_template(strategy, fold_bn):
    """The model is a template: its weights are not used, even where the basis is zero (biases
    and BN tensors under ignore=biasbn)."""
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    sub = random_plane(model)
    torch.manual_seed(1)
    template = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    with torch.no_grad():
        for tensor in template.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.5)  # every tensor of the template differs from the origin's
    x, y = _data()
    opts = EngineConfig(strategy=strategy, fold_bn=fold_bn)
    got = evaluate_points(template, sub, COORDS, {"t": (x, y)}, opts)
    _assert_close(got, evaluate_points_loop(model, sub, COORDS, {"t": (x, y)}))


def test_cross_entropy_is_the_exact_per_sample_mean():
    logits = torch.randn(2, 5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    got = per_sample_loss(logits, labels, "ce")
    for k in range(2):
        ref = torch.nn.functional.cross_entropy(logits[k], labels, reduction="none")
        assert torch.allclose(got[k], ref)


def test_default_rule_for_calls_too_small_to_time():
    cpu = torch.device("cpu")
    conv = build_model(ModelConfig(name="mpo_cnn"), (1, 8, 8), 10)
    mlp = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    assert default_strategy(conv, cpu) == "sequential"
    assert default_strategy(mlp, cpu) == "vmap"
    assert default_strategy(conv, torch.device("cuda")) == "vmap"
    x, y = _data()
    evaluator = Evaluator(conv, random_plane(conv), {"t": (x, y)})
    evaluator(COORDS[:2])  # fewer points than autotune.MIN_POINTS: the rule, nothing kept
    assert evaluator.plan is None


def test_flat_net_holds_the_weights_of_subspace_point_bit_for_bit():
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    sub = random_plane(model, "states", ignore="none")  # moves BN running statistics too
    c = torch.tensor([0.7, -3.0], dtype=torch.float64)  # far enough to clamp some variances
    want = sub.point(c)
    assert any((want[k] == 0).any() for k in want if k.endswith("running_var"))
    for channels_last in (False, True):
        net = FlatNet(model, FlatLayout(sub, channels_last))
        net.at(c)
        got = net.net.state_dict()
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            assert torch.equal(got[key], value), key
            if channels_last and value.dim() == 4:
                assert got[key].is_contiguous(memory_format=torch.channels_last), key


def test_threads_give_the_bits_of_one_point_at_a_time_and_restore_the_thread_count():
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _data()
    coords = torch.rand(9, 2, dtype=torch.float64) * 2 - 1
    before = torch.get_num_threads()
    threads = evaluate_points(model, sub, coords, {"t": (x, y)}, EngineConfig(strategy="threads"))
    assert torch.get_num_threads() == before
    with intra_op_threads(1):  # each thread of the threads strategy runs one intra-op thread
        one = evaluate_points(
            model, sub, coords, {"t": (x, y)}, EngineConfig(strategy="sequential")
        )
    np.testing.assert_array_equal(threads["t"].loss, one["t"].loss)
    np.testing.assert_array_equal(threads["t"].acc, one["t"].acc)


def test_nan_and_inf_losses_are_returned_as_they_are():
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _data()
    far = torch.tensor([[1e30, 1e30], [0.0, 0.0]], dtype=torch.float64)
    out = evaluate_points(model, sub, far, {"t": (x, y)})
    ref = evaluate_points_loop(model, sub, far, {"t": (x, y)})
    assert not np.isfinite(out["t"].loss[0]) and np.isfinite(out["t"].loss[1])
    # the same kind of non-finite value as the plain loop (NaN stays NaN, inf stays inf)
    np.testing.assert_array_equal(np.isnan(out["t"].loss), np.isnan(ref["t"].loss))
    np.testing.assert_array_equal(np.isposinf(out["t"].loss), np.isposinf(ref["t"].loss))


def test_cpu_batch_keeps_the_largest_activation_within_16_mib():
    model = build_model(ModelConfig(name="mpo_cnn"), (1, 28, 28), 10)
    sample = torch.zeros(1, 28, 28)
    batch = cpu_batch_size(model, sample, 256)
    largest = 64 * 28 * 28 * 4  # the third conv's output per sample
    assert batch == CPU_ACTIVATION_BYTES // largest == 83
    assert batch * largest <= CPU_ACTIVATION_BYTES < (batch + 1) * largest
    assert cpu_batch_size(model, torch.zeros(1, 8, 8), 256) == 256  # digits: no cap
    assert cpu_batch_size(model, sample, 16) == 16


def test_choose_keeps_the_fastest_plan_refines_it_in_turn_and_times_once():
    vmap, seq, thr = (
        Plan("vmap", 256),
        Plan("sequential", 256, 1, True),
        Plan("threads", 256, 2, True),
    )
    seconds = {vmap: 3.0, seq: 2.0, thr: 1.0, Plan("threads", 64, 2, True): 1.5}
    best = Plan("threads", 300, 2, True)
    seconds[best] = 0.5
    nchw = replace(best, channels_last=False)
    seconds[nchw] = 0.6  # within NEAR_TIE: its other batch sizes are not refined again
    asked = []

    def time_it(plan):
        asked.append(plan)
        return seconds[plan]

    def other_batches(plan):
        return [replace(plan, batch_size=b) for b in autotune.batch_sizes(256, samples=300)]

    def other_layout(plan):
        return (
            []
            if plan.channels_last is None
            else [replace(plan, channels_last=not plan.channels_last)]
        )

    refinements = [other_batches, other_layout]
    autotune.forget()
    assert autotune.choose("k", [vmap, seq, thr], time_it, refinements) == best
    # the winner's batches only, then the other layout of the winner so far and its near-ties
    assert asked == [vmap, seq, thr, Plan("threads", 64, 2, True), best, nchw]
    assert autotune.choose("k", [vmap, seq, thr], time_it, refinements) == best
    assert len(asked) == 6  # kept: not timed again
    seconds[nchw] = 0.4  # a faster layout is taken
    assert autotune.choose("k1", [vmap, seq, thr], time_it, refinements) == nchw
    seconds[best] = seconds[nchw] = 9.0  # other batch sizes that are slower are not taken
    seconds[replace(thr, channels_last=False)] = 1.2  # nor a slower layout
    assert autotune.choose("k2", [vmap, seq, thr], time_it, refinements) == thr
    assert autotune.batch_sizes(256, samples=300) == [64, 300]
    assert autotune.batch_sizes(256, samples=60) == []  # one batch, and a quarter is no split
    assert autotune.batch_sizes(256, samples=600) == [64]  # more than twice the batch
    assert autotune.batch_sizes(16, samples=20) == [20]  # no quarter below MIN_BATCH
    # on a CPU, twice the batch where that still splits the data (never twice the same size)
    assert autotune.batch_sizes(256, samples=600, larger=True) == [64, 512]
    assert autotune.batch_sizes(256, samples=512, larger=True) == [64, 512]
    assert autotune.batch_sizes(256, samples=300, larger=True) == [64, 300]


def test_auto_times_every_strategy_once_keeps_the_fastest_and_logs_why(caplog):
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    sub = random_plane(model)
    x, y = _data()
    coords = torch.rand(8, 2, dtype=torch.float64) * 2 - 1
    autotune.forget()
    with intra_op_threads(2), caplog.at_level(logging.INFO, logger="landscape_hpc.engine.autotune"):
        evaluator = Evaluator(model, sub, {"t": (x, y)})
        got = evaluator(coords)
        times = autotune.timings(evaluator.key)
        assert {p.strategy for p in times} == {"vmap", "sequential", "threads"}
        assert evaluator.plan == min(times, key=times.__getitem__)
        if evaluator.plan.strategy != "vmap":  # the chosen plan's other layout was timed
            flipped = not evaluator.plan.channels_last
            assert replace(evaluator.plan, channels_last=flipped) in times
        assert [r.message.startswith("engine auto: ") for r in caplog.records] == [True]
        again = Evaluator(model, sub, {"t": (x, y)})
        again(coords)  # the same fingerprint: the kept choice, no second timing
        assert again.plan == evaluator.plan and len(caplog.records) == 1
        other = Evaluator(model, sub, {"t": (x[:50], y[:50])})
        other(coords)  # other data shapes: timed again
        assert len(caplog.records) == 2
    _assert_close(got, evaluate_points_loop(model, sub, coords, {"t": (x, y)}))
