"""engine.precision (landscape_hpc/engine/precision.py): the flags it sets and restores, and the
values at each precision against float32 on the CPU (tf32 is float32 there; bf16 is autocast,
which runs on a CPU too). The GPU's side: tests/test_cuda.py."""

import math

import numpy as np
import pytest
import torch
from engine_helpers import random_plane
from torch import nn

from landscape_hpc.config import EngineConfig, ModelConfig
from landscape_hpc.engine.evaluate import (
    Metrics,
    check_engine,
    evaluate_points,
    evaluate_points_loop,
)
from landscape_hpc.engine.losses import per_sample_loss
from landscape_hpc.engine.pointwise import intra_op_threads
from landscape_hpc.engine.precision import autocast_like, precision, precision_error
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COORDS = torch.tensor([[0.0, 0.0], [0.4, -0.3], [-1.0, 0.7]], dtype=torch.float64)
#: bfloat16's unit roundoff: 8 significant bits, so rounding moves a value by at most 2^-8
BF16_U = 2.0**-8


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def bf16_bound(model: nn.Module) -> float:
    """The relative loss error bf16 may cost a net: autocast rounds the inputs and weights of
    each of its L convs and linears to bfloat16 (≤ u = 2^-8 relative each) and accumulates in
    float32, so to first order each lowered layer moves its outputs by at most 2u relative and
    the logits by at most 2uL; the cross-entropy near ln 10 (these random nets at these points)
    moves by no more than its logits do, relative. mlp (3 linears): 2.3e-2; mpo_cnn (2 convs,
    2 linears): 3.1e-2. The errors measured are 100× smaller (rounding errors cancel), while a
    point computed with another point's weights is off by 5e-2 or more."""
    layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    return 2 * BF16_U * layers


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_each_precision_sets_both_tf32_flags_and_autocast_and_restores_them():
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("medium")  # a caller's setting the flag alone cannot say
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
    try:
        with precision("fp32", "cpu"):
            assert _flags() == (False, False) and not torch.is_autocast_enabled("cpu")
        with precision("tf32", "cpu"):
            assert _flags() == (True, True) and not torch.is_autocast_enabled("cpu")
        with precision("bf16", "cpu"):
            assert _flags() == (False, False) and torch.is_autocast_enabled("cpu")
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
        with pytest.raises(RuntimeError, match="inside"), precision("tf32", "cpu"):
            raise RuntimeError("inside")  # restored after an error too
        assert torch.get_float32_matmul_precision() == "medium"
        assert torch.backends.cudnn.allow_tf32 and not torch.is_autocast_enabled("cpu")
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def test_fp32_turns_off_a_callers_autocast_and_unknown_names_are_refused():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with precision("fp32", "cpu"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
        assert torch.is_autocast_enabled("cpu")  # the caller's, back after the block
    with pytest.raises(ValueError, match="fp16"), precision("fp16", "cpu"):
        pass
    with pytest.raises(UserError, match="engine.precision"):
        check_engine(EngineConfig(precision="fp16"))


def test_autocast_like_carries_the_callers_state_to_another_thread():
    import threading

    seen = {}
    with precision("bf16", "cpu"):
        carry = autocast_like("cpu")

    def worker() -> None:
        seen["before"] = torch.is_autocast_enabled("cpu")
        with carry():
            seen["inside"] = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"before": False, "inside": (True, torch.bfloat16)}


def test_losses_of_bfloat16_logits_are_computed_in_float32():
    logits = torch.randn(2, 5, 3).bfloat16()
    labels = torch.tensor([0, 2, 1, 1, 0])
    for loss in ("ce", "mse"):
        got = per_sample_loss(logits, labels, loss)
        assert got.dtype == torch.float32
        assert torch.equal(got, per_sample_loss(logits.float(), labels, loss))


def test_precision_error_is_the_largest_relative_loss_and_accuracy_difference():
    ref = {"a": Metrics(np.array([2.0, 4.0, np.nan]), np.array([50.0, 60.0, 0.0]))}
    got = {"a": Metrics(np.array([2.1, 4.0, 1.0]), np.array([50.0, 62.5, 0.0]))}
    error = precision_error(got, ref)
    assert error["loss_rel"] == pytest.approx(0.05) and error["acc_points"] == 2.5
    nothing_finite = {"a": Metrics(np.array([np.nan]), np.array([0.0]))}
    assert math.isnan(precision_error(got, nothing_finite)["loss_rel"])


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_fp32_is_the_default_path_bit_for_bit_and_tf32_is_fp32_on_a_cpu(strategy):
    model = build_model(ModelConfig(name="mpo_cnn"), (1, 8, 8), 10)
    sub, data = random_plane(model), {"t": _data()}
    default = evaluate_points(model, sub, COORDS, data, EngineConfig(strategy=strategy))
    for name in ("fp32", "tf32"):
        got = evaluate_points(
            model, sub, COORDS, data, EngineConfig(strategy=strategy, precision=name)
        )
        np.testing.assert_array_equal(got["t"].loss, default["t"].loss, err_msg=name)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a caller's autocast changes nothing
        got = evaluate_points(model, sub, COORDS, data, EngineConfig(strategy=strategy))
    np.testing.assert_array_equal(got["t"].loss, default["t"].loss)


@pytest.mark.parametrize("name", ["mlp", "mpo_cnn"])
@pytest.mark.parametrize("strategy", ["vmap", "sequential", "threads", "loop"])
def test_bf16_values_are_within_the_rounding_bound_of_fp32(name, strategy):
    model = build_model(ModelConfig(name=name), (1, 8, 8), 10)
    sub, data = random_plane(model), {"train": _data(), "test": _data(40)}
    ref = evaluate_points_loop(model, sub, COORDS, data, EngineConfig(batch_size=40))
    opts = EngineConfig(batch_size=40, strategy=strategy, precision="bf16")
    if strategy == "loop":  # the reference loop honours the option too
        got = evaluate_points_loop(model, sub, COORDS, data, opts)
    else:
        with intra_op_threads(2):  # threads: two workers, each entering the caller's autocast
            got = evaluate_points(model, sub, COORDS, data, opts)
    error = precision_error(got, ref)
    assert 0 < error["loss_rel"] < bf16_bound(model), error  # bf16 did run, and within bound
    # argmax may flip where two logits are within bf16 rounding: a few samples of 40
    assert error["acc_points"] <= 3 * 100 / 40


def test_bf16_threads_give_the_bits_of_bf16_one_point_at_a_time():
    model = build_model(ModelConfig(name="mpo_cnn"), (1, 8, 8), 10)
    sub, data = random_plane(model), {"t": _data()}
    coords = torch.rand(6, 2, dtype=torch.float64) * 2 - 1
    with intra_op_threads(2):
        threads = evaluate_points(
            model, sub, coords, data, EngineConfig(strategy="threads", precision="bf16")
        )
    with intra_op_threads(1):
        one = evaluate_points(
            model, sub, coords, data, EngineConfig(strategy="sequential", precision="bf16")
        )
        fp32 = evaluate_points(model, sub, coords, data, EngineConfig(strategy="sequential"))
    np.testing.assert_array_equal(threads["t"].loss, one["t"].loss)
    assert not np.array_equal(one["t"].loss, fp32["t"].loss)
