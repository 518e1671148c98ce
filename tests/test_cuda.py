"""What only a GPU can check: the engine's strategies, a surface over MPI, an MPO fit, a Hessian
point and engine.precision on a CUDA device, each against the CPU; and device placement with
the real torch.cuda (tests/test_devices.py stands in GPUs by patching it).

Marked `cuda` (setup.cfg) and skipped with a reason where torch sees no CUDA device.

    pytest -m cuda tests/test_cuda.py                              # on a GPU (bench_gpu.sh does)
    LANDSCAPE_TEST_DEVICE=cpu pytest -m cuda tests/test_cuda.py    # their logic, on the CPU

LANDSCAPE_TEST_DEVICE names the device they run on (default cuda; cpu checks the tests
themselves on a machine without a GPU, where the device and the CPU reference coincide).
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import random_plane
from mpi_helpers import (
    assert_same_surface,
    check_ok,
    mpirun_available,
    read_surface,
    run_surface,
)
from torch import nn

from landscape_hpc.config import DatasetConfig, EngineConfig, HessianConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.devices import resolve_device
from landscape_hpc.engine.evaluate import evaluate_points, evaluate_points_loop
from landscape_hpc.engine.precision import precision, precision_error
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.curvature import run_point
from landscape_hpc.models import build_model
from landscape_hpc.mpo.fit import FitOptions, fit_plane
from landscape_hpc.mpo.objective import objective_batched, objective_loop, training_template
from landscape_hpc.mpo.patterns import builtin_mask
from landscape_hpc.mpo.plane import Plane
from landscape_hpc.problem import load_problem

DEVICE = torch.device(os.environ.get("LANDSCAPE_TEST_DEVICE", "cuda"))
CPU = torch.device("cpu")
NO_CUDA = "no CUDA device on this machine (torch.cuda.is_available() is False)"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason=NO_CUDA),
]

#: the device against the CPU at fp32: float32 kernels that sum in another order (about 1e-7
#: relative per layer); TF32, which PyTorch leaves on for cuDNN convolutions, would be 1e-4-1e-3
RTOL = 1e-5
#: unit roundoff of the lower precisions: significant bits 11 (TF32) and 8 (bfloat16)
UNIT_ROUNDOFF = {"tf32": 2.0**-11, "bf16": 2.0**-8}
SHAPE = (3, 16, 16)
# five points: auto times its candidates from four on
COORDS = torch.tensor(
    [[0.0, 0.0], [0.4, -0.3], [-0.6, 0.5], [0.2, 0.8], [-0.3, -0.7]], dtype=torch.float64
)


def _data(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


def _on_device(model: nn.Module, data: dict) -> tuple[nn.Module, dict]:
    moved = {name: (x.to(DEVICE), y.to(DEVICE)) for name, (x, y) in data.items()}
    return copy.deepcopy(model).to(DEVICE), moved


def _layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def _assert_close(got: dict, want: dict, rtol: float = RTOL) -> None:
    for split in want:
        np.testing.assert_allclose(got[split].loss, want[split].loss, rtol=rtol, err_msg=split)
        # an argmax may flip on a near tie: one sample's worth
        np.testing.assert_allclose(got[split].acc, want[split].acc, rtol=0, atol=100 / 128 + 1e-9)


@functools.cache
def _problem(name: str) -> tuple[nn.Module, Subspace, dict, dict]:
    """A registry net, its random plane, two splits and the CPU loop's values at COORDS: built
    once per net (the tests copy what they move)."""
    model = build_model(ModelConfig(name=name), SHAPE, 10)
    sub, data = random_plane(model), {"train": _data(), "test": _data(64)}
    return (
        model,
        sub,
        data,
        evaluate_points_loop(model, sub, COORDS, data, EngineConfig(batch_size=48)),
    )


@pytest.mark.parametrize("name", ["mlp", "mpo_cnn", "mpo_cnn_bn", "resnet20"])
@pytest.mark.parametrize("strategy", ["vmap", "sequential", "threads", "auto"])
def test_every_strategy_on_the_device_matches_the_cpu_loop_at_fp32(name, strategy):
    model, sub, data, ref = _problem(name)
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    net, moved = _on_device(model, data)
    opts = EngineConfig(batch_size=48, strategy=strategy)
    got = evaluate_points(net, sub.to(DEVICE), COORDS, moved, opts)
    _assert_close(got, ref)
    assert torch.backends.cudnn.allow_tf32 == cudnn_tf32  # set inside the call only


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_bn_recompute_on_the_device_matches_the_cpu_loop(strategy):
    model = build_model(ModelConfig(name="mpo_cnn_bn"), SHAPE, 10)
    sub, (x, y) = random_plane(model), _data()
    opts = EngineConfig(batch_size=48, bn="recompute", strategy=strategy)
    coords = COORDS * 0.5  # running variances stay positive
    ref = evaluate_points_loop(model, sub, coords, {"t": (x, y)}, opts, bn_data=x)
    net, moved = _on_device(model, {"t": (x, y)})
    got = evaluate_points(net, sub.to(DEVICE), coords, moved, opts, bn_data=moved["t"][0])
    _assert_close(got, ref)


def test_fp32_convolutions_are_float32_not_tf32():
    # 64 channels of 3x3: 576 products per output, where TF32's 2^-11 rounding shows at 1e-4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 32, 32, generator=g)
    w = torch.randn(64, 64, 3, 3, generator=g)
    exact = torch.nn.functional.conv2d(x.double(), w.double())
    with precision("fp32", DEVICE):
        got = torch.nn.functional.conv2d(x.to(DEVICE), w.to(DEVICE)).cpu().double()
    assert float((got - exact).abs().max() / exact.abs().max()) < 1e-5


@pytest.mark.parametrize("name", ["mlp", "mpo_cnn", "resnet20"])
def test_precision_errors_on_the_device_are_within_their_rounding_bounds(name):
    # first order, a net of L lowered convs and linears moves its loss by at most 2uL relative
    # (tests/test_precision.py's bf16_bound), u the precision's unit roundoff
    model, sub, data, ref = _problem(name)
    net, moved = _on_device(model, data)
    errors = {}
    for p in ("fp32", "tf32", "bf16"):
        opts = EngineConfig(batch_size=48, strategy="sequential", precision=p)
        errors[p] = precision_error(evaluate_points(net, sub.to(DEVICE), COORDS, moved, opts), ref)
    assert errors["fp32"]["loss_rel"] < RTOL, errors
    for p, u in UNIT_ROUNDOFF.items():
        assert errors[p]["loss_rel"] < 2 * u * _layers(model), (p, errors)
    assert errors["bf16"]["loss_rel"] > 0, errors  # bf16 did run


@pytest.mark.skipif(not mpirun_available(), reason="mpirun is not on PATH")
def test_a_surface_over_mpi_with_one_device_rank_and_the_master_on_the_cpu(tmp_path: Path):
    overrides = [
        "model=mpo_cnn",
        "dataset.max_samples=100",
        "grid.x=[-1,1,5]",
        "grid.y=[-1,1,4]",
        "engine.strategy=sequential",
        "io=gather",
    ]
    check_ok(run_surface(None, tmp_path / "cpu", [*overrides, "device=cpu"]))
    # rank 0 hands out the chunks on the CPU (devices.rank_device), rank 1 computes on DEVICE
    done = run_surface(2, tmp_path / "mpi", [*overrides, f"device={DEVICE}"])
    check_ok(done)
    assert "rank 1: 20 points" in done.stdout, done.stdout[-3000:]
    want, _ = read_surface(tmp_path / "cpu" / "surface.h5")
    got, attrs = read_surface(tmp_path / "mpi" / "surface.h5")
    assert attrs["precision"] == "fp32"
    assert_same_surface(got, want, rtol=RTOL)


def _mpo_plane(device: torch.device) -> tuple[Plane, nn.Module]:
    models = [
        build_model(ModelConfig(name="mpo_cnn_bn", init_seed=i), (1, 8, 8), 10) for i in range(3)
    ]
    return Plane.init(tuple(models), 0.1).to(device), models[0]


def test_an_mpo_step_batched_equals_the_loop_on_the_device_and_the_cpu():
    digits = {d: load_dataset(DatasetConfig(max_samples=64), d)["train"] for d in (CPU, DEVICE)}
    g = torch.Generator().manual_seed(0)
    low, high = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    runs = {}
    for where in (CPU, DEVICE):
        for mode in ("batched", "loop"):
            plane, model = _mpo_plane(where)
            template = training_template(model).to(where)
            x, y = digits[where].inputs, digits[where].labels
            cells = (low.to(where), high.to(where), x, y, 2.5)
            if mode == "batched":
                stats = objective_batched(plane, template, *cells, chunk_cells=3)
            else:
                stats = objective_loop(plane, template, *cells)
            grad = torch.cat([p.grad.flatten().cpu() for p in plane.parameters()])
            runs[where.type, mode] = stats, grad
    ref_stats, ref_grad = runs["cpu", "loop"]
    for key, (stats, grad) in runs.items():
        for term in ("ce_low", "ce_high"):
            assert getattr(stats, term) == pytest.approx(getattr(ref_stats, term), rel=RTOL), key
        # the gradient of a difference of two losses: rounding relative to its norm
        assert float((grad - ref_grad).norm() / ref_grad.norm()) < 1e-4, key


def test_an_mpo_fits_first_steps_batched_equal_the_loop_on_the_device():
    digits = load_dataset(DatasetConfig(max_samples=200), DEVICE)
    mask = builtin_mask("square", 6)
    opts = FitOptions(steps=3, batch_size=32, cells_per_step=3, lr=1e-3, checkpoint_every=0)
    start = [p.detach().clone() for p in _mpo_plane(DEVICE)[0].parameters()]
    fits = {}
    for strategy in ("vmap", "loop"):
        plane, model = _mpo_plane(DEVICE)
        options = FitOptions(**{**opts.__dict__, "strategy": strategy})
        fits[strategy] = fit_plane(plane, model, mask, digits["train"], options, progress=False)
    # as tests/test_mpo.py: Adam carries float rounding into the weights; measured against the
    # distance the fit moved the plane
    pairs = zip(start, fits["vmap"].plane.parameters(), fits["loop"].plane.parameters())
    for a0, a, b in pairs:
        moved = float((a.detach() - a0).norm())
        assert moved > 0 and float((a - b).detach().norm()) < 1e-2 * moved
    assert fits["loop"].last.loss == pytest.approx(fits["vmap"].last.loss, rel=1e-4)


def test_a_hessian_point_on_the_device_equals_the_cpu_and_bf16_is_within_its_bound(tmp_path):
    base = dict(
        model=ModelConfig(name="mlp"),
        dataset=DatasetConfig(max_samples=200),
        lanczos_steps=10,
        lanczos_tol=0.0,
        trace_samples=0,
        out_dir=str(tmp_path),
    )
    cpu = run_point(HessianConfig(**base, device="cpu"))
    here = run_point(HessianConfig(**base, device=str(DEVICE)))
    bf16 = run_point(HessianConfig(**base, device=str(DEVICE), precision="bf16"))
    scale = abs(cpu.max_eig)
    for got, want in ((here.max_eig, cpu.max_eig), (here.min_eig, cpu.min_eig)):
        assert abs(got - want) < 1e-4 * scale
    # tests/test_geometry_curvature.py's bound: 2u · 3L of |λ_max|, L = 3 linears
    for got, want in ((bf16.max_eig, cpu.max_eig), (bf16.min_eig, cpu.min_eig)):
        assert 0 < abs(got - want) < 2 * UNIT_ROUNDOFF["bf16"] * 9 * scale


def test_device_placement_with_the_real_torch_cuda():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for local_rank in range(3):  # auto: GPU local_rank mod count, else the CPU
        want = torch.device("cuda", local_rank % count) if count else CPU
        assert resolve_device("auto", local_rank) == want
    problem = load_problem(ModelConfig(name="mpo_cnn"), DatasetConfig(max_samples=50), DEVICE)
    assert {p.device.type for p in problem.model.parameters()} == {DEVICE.type}
    for split in problem.splits.values():
        assert split.inputs.device.type == split.labels.device.type == DEVICE.type
    if count:
        assert resolve_device(f"cuda:{count - 1}") == torch.device("cuda", count - 1)
        with pytest.raises(UserError, match=f"has {count} CUDA GPU"):
            resolve_device(f"cuda:{count}")
