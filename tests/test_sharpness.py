"""Flatness as a number: crossings of loss(0) + rise on sampled curves against the analytic
roots of parabolas; lh.sharpness on a model whose loss along each direction is t²·|d|²; and
lh.lines (n directions in one evaluator) against lh.surface one direction at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.config import DatasetConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.sharpness import Crossing, mean_width, rise_crossings

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_crossings_of_an_asymmetric_parabola_are_its_roots() -> None:
    x = np.linspace(-2, 2, 4001)  # spacing 1e-3: linear interpolation within ~1e-6 here
    loss = np.where(x < 0, 4.0, 1.0) * x**2 + 0.3  # sqrt(rise / 4) left, sqrt(rise) right
    lo, hi = rise_crossings(x, loss, rise=0.25)
    assert lo.distance == pytest.approx(0.25, abs=1e-5) and not lo.censored
    assert hi.distance == pytest.approx(0.5, abs=1e-5) and not hi.censored


def test_the_first_crossing_walking_outward_counts_not_a_later_dip() -> None:
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    loss = np.array([9.0, 0.0, 0.0, 2.0, 0.0, 9.0])  # rises past 1 at 0.25, dips, rises again
    lo, hi = rise_crossings(x, loss, rise=1.0)
    assert hi == Crossing(0.25, False)
    assert lo.distance == pytest.approx(0.5 + 0.5 / 9) and not lo.censored


def test_a_side_that_never_rises_enough_is_censored_at_the_grid_end() -> None:
    x = np.linspace(-1, 1, 5)
    lo, hi = rise_crossings(x, 0.1 * x**2, rise=1.0)
    assert lo == Crossing(1.0, True) and hi == Crossing(1.0, True)
    assert mean_width([lo, hi]) == (1.0, 2)


def test_a_diverged_point_counts_as_above_the_level() -> None:
    x = np.array([-1.0, 0.0, 1.0])
    lo, hi = rise_crossings(x, np.array([np.nan, 0.0, np.inf]), rise=0.5)
    assert lo == Crossing(1.0, False) and hi == Crossing(1.0, False)


@pytest.mark.parametrize(
    ("x", "loss", "match"),
    [
        (np.array([-1.0, 1.0]), np.array([1.0, 1.0]), "origin"),
        (np.array([1.0, 0.0, -1.0]), np.zeros(3), "increase"),
        (np.array([-1.0, 0.0, 1.0]), np.array([0.0, np.nan, 0.0]), "origin"),
    ],
)
def test_bad_curves_are_refused(x: np.ndarray, loss: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rise_crossings(x, loss, rise=0.1)


def _quadratic_problem() -> tuple[nn.Module, dict]:
    """A bias-free Linear(1, 1) at w0 = 0.7 with targets w0·x for x = 1: the mse loss at
    w0 + t·d is (t·d)²."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.7)
    inputs = torch.ones(8, 1)
    return model, {"train": (inputs, 0.7 * inputs)}


def test_sharpness_widths_are_the_roots_of_t2_d2() -> None:
    model, data = _quadratic_problem()
    dirs = [{"weight": torch.tensor([[1.0]])}, {"weight": torch.tensor([[2.0]])}]
    s = lh.sharpness(model, data, rise=(0.09, 1.0), directions=dirs, loss="mse", tol=1e-4,
                     progress=False)  # fmt: skip
    assert s.width.dims == ("rise", "direction", "side")
    for rise in (0.09, 1.0):
        for i, d in enumerate((1.0, 2.0)):
            expected = math.sqrt(rise) / d
            np.testing.assert_allclose(s.width.sel(rise=rise, direction=i), expected, atol=1e-4)
    assert not s.censored.any()
    assert s.attrs["origin_loss"] == pytest.approx(0.0, abs=1e-12)


def test_sharpness_censors_what_max_coord_cannot_reach() -> None:
    model, data = _quadratic_problem()
    dirs = [{"weight": torch.tensor([[1e-3]])}]
    s = lh.sharpness(model, data, rise=1.0, directions=dirs, loss="mse", max_coord=5.0,
                     progress=False)  # fmt: skip
    assert bool(s.censored.all()) and np.allclose(s.width, 5.0)


def test_sharpness_refuses_a_rise_that_is_not_positive() -> None:
    model, data = _quadratic_problem()
    with pytest.raises(lh.UserError, match="rise"):
        lh.sharpness(model, data, rise=0.0, loss="mse", progress=False)


@pytest.fixture(scope="module")
def mlp_and_digits() -> tuple[nn.Module, dict]:
    splits = load_dataset(DatasetConfig(name="digits", max_samples=300))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    data = {name: (s.inputs, s.labels) for name, s in splits.items()}
    return model, data


def test_lines_equal_one_surface_per_direction(mlp_and_digits) -> None:
    model, data = mlp_and_digits
    curves = lh.lines(model, data, n=3, x=(-1, 1, 11), seed=4, progress=False)
    assert curves.train_loss.dims == ("direction", "x")
    dirs = lh.random_directions(model, 3, seed=4)
    for i in range(3):
        one = lh.surface(model, data, x=(-1, 1, 11), y=None, directions=[dirs[i]],
                         strategy="sequential", progress=False)  # fmt: skip
        for var in ("train_loss", "train_acc", "test_loss", "test_acc"):
            np.testing.assert_allclose(curves[var][i], one[var], rtol=1e-5, atol=1e-6)
    # the first direction is lh.surface's x direction of the same seed
    first = lh.surface(model, data, x=(-1, 1, 11), y=None, seed=4, progress=False)
    np.testing.assert_allclose(curves.train_loss[0], first.train_loss, rtol=1e-5)


def test_bisection_and_the_sampled_curve_agree_to_the_grid_spacing(mlp_and_digits) -> None:
    model, data = mlp_and_digits
    rise = 0.5
    s = lh.sharpness(model, data, rise=rise, n=2, seed=1, tol=1e-4, progress=False)
    curves = lh.lines(model, data, n=2, x=(-3, 3, 601), seed=1, splits=["train"],
                      progress=False)  # fmt: skip
    for i in range(2):
        lo, hi = rise_crossings(curves.x.values, curves.train_loss[i].values, rise)
        grid = np.array([lo.distance, hi.distance])
        np.testing.assert_allclose(s.width.sel(rise=rise, direction=i), grid, atol=0.01)
