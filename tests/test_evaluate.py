"""The batched engine against the plain per-point loop it replaces."""

import numpy as np
import pytest
import torch

from landscape_hpc import directions
from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.evaluate import (
    evaluate_points,
    evaluate_points_loop,
    per_sample_loss,
    resolve_strategy,
)
from landscape_hpc.models import MODEL_NAMES, build_model
from landscape_hpc.subspace import Subspace

REGISTRY = [n for n in MODEL_NAMES if n != "custom"]
COORDS = torch.tensor([[0.0, 0.0], [0.4, -0.3], [-1.0, 0.7]], dtype=torch.float64)


def _data(shape=(1, 8, 8), n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def _subspace(model, dir_type="weights", ignore="biasbn"):
    origin = {k: v.clone() for k, v in model.state_dict().items()}
    keys = directions.direction_keys(model, dir_type)
    return Subspace(origin, directions.random_basis(origin, keys, 2, 0, "filter", ignore))


def _assert_close(a, b, rtol=1e-5):
    for split in b:
        np.testing.assert_allclose(a[split].loss, b[split].loss, rtol=rtol)
        # an argmax may flip only on an exact tie; allow one sample's worth (NaN: loss models)
        np.testing.assert_allclose(a[split].acc, b[split].acc, rtol=0, atol=100.0 / 96 + 1e-9)


@pytest.mark.parametrize("name", REGISTRY)
@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_engine_matches_loop_on_every_registry_model(name, strategy):
    model = build_model(ModelConfig(name=name), (1, 8, 8), 10)
    sub = _subspace(model)
    x, y = _data()
    opts = EngineConfig(batch_size=40, strategy=strategy)
    data = {"train": (x, y), "test": (x[:50], y[:50])}
    _assert_close(
        evaluate_points(model, sub, COORDS, data, opts),
        evaluate_points_loop(model, sub, COORDS, data, opts),
    )


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_bn_recompute_matches_loop(strategy, dir_type):
    model = build_model(ModelConfig(name="mpo_cnn_bn"), (1, 8, 8), 10)
    sub = _subspace(model, dir_type, ignore="none" if dir_type == "states" else "biasbn")
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
    sub = _subspace(model)
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
    sub = _subspace(model)
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


def test_cross_entropy_is_the_exact_per_sample_mean():
    logits = torch.randn(2, 5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    got = per_sample_loss(logits, labels, "ce")
    for k in range(2):
        ref = torch.nn.functional.cross_entropy(logits[k], labels, reduction="none")
        assert torch.allclose(got[k], ref)


def test_auto_strategy():
    cpu = torch.device("cpu")
    conv = build_model(ModelConfig(name="mpo_cnn"), (1, 8, 8), 10)
    mlp = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    assert resolve_strategy(conv, cpu, "auto") == "sequential"
    assert resolve_strategy(mlp, cpu, "auto") == "vmap"
    assert resolve_strategy(conv, torch.device("cuda"), "auto") == "vmap"
    assert resolve_strategy(conv, cpu, "vmap") == "vmap"


def test_nan_and_inf_losses_are_returned_as_they_are():
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    sub = _subspace(model)
    x, y = _data()
    far = torch.tensor([[1e30, 1e30], [0.0, 0.0]], dtype=torch.float64)
    out = evaluate_points(model, sub, far, {"t": (x, y)})
    ref = evaluate_points_loop(model, sub, far, {"t": (x, y)})
    assert not np.isfinite(out["t"].loss[0]) and np.isfinite(out["t"].loss[1])
    # the same kind of non-finite value as the plain loop (NaN stays NaN, inf stays inf)
    np.testing.assert_array_equal(np.isnan(out["t"].loss), np.isnan(ref["t"].loss))
    np.testing.assert_array_equal(np.isposinf(out["t"].loss), np.isposinf(ref["t"].loss))


def test_cpu_batch_keeps_the_largest_activation_within_16_mib():
    from landscape_hpc.evaluate import CPU_ACTIVATION_BYTES, cpu_batch_size

    model = build_model(ModelConfig(name="mpo_cnn"), (1, 28, 28), 10)
    sample = torch.zeros(1, 28, 28)
    batch = cpu_batch_size(model, sample, 256)
    largest = 64 * 28 * 28 * 4  # the third conv's output per sample
    assert batch == CPU_ACTIVATION_BYTES // largest == 83
    assert batch * largest <= CPU_ACTIVATION_BYTES < (batch + 1) * largest
    assert cpu_batch_size(model, torch.zeros(1, 8, 8), 256) == 256  # digits: no cap
    assert cpu_batch_size(model, sample, 16) == 16
