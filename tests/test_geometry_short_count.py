"""Short-direction counts at scale (geometry/short_count.py, lh.short_directions): on an analytic
quadratic with k short axes in D dimensions the count matches the exact crossing distances of
the same directions and the Beta law of a random direction's weight on those axes; the engine's
chunked path equals the plain per-direction loop; the reference rule and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as sp
from torch import nn

import landscape_hpc as lh
from landscape_hpc.errors import UserError
from landscape_hpc.geometry import short_count
from landscape_hpc.geometry.hyperplane import stream_seed
from landscape_hpc.geometry.width import random_unit_direction
from landscape_hpc.stats import binomial_interval

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

D, K, BIG, SMALL = 40, 3, 100.0, 0.01


class Quadratic(nn.Module):
    """L(θ) = Σ a_i θ_i², whatever the input (a per-sample loss, as the n-wedge's)."""

    loss_output = True

    def __init__(self, a: torch.Tensor, theta: torch.Tensor | None = None) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(len(a)) if theta is None else theta.clone())
        self.register_buffer("a", a.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.a * self.theta**2).sum().expand(x.shape[0])


def _axes() -> torch.Tensor:
    a = torch.full((D,), SMALL)
    a[:K] = BIG  # k short axes
    return a


DATA = {"train": (torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))}


def _exact_at_zero(n: int, rise: float, seed: int) -> np.ndarray:
    """Where r² Σ a_i d_i² = rise, for the same directions."""
    a = _axes().double()
    out = []
    for j in range(n):
        d = random_unit_direction(D, stream_seed(seed, j), torch.float64)
        out.append(np.sqrt(rise / float((a * d * d).sum())))
    return np.array(out)


def test_quadratic_count_matches_the_exact_distances_and_the_beta_law():
    n, rise, radius, r_max, seed = 1000, 1.0, 0.5, 2.0, 5
    found = lh.short_directions(
        Quadratic(_axes()), DATA, n=n, r_max=r_max, n_distances=201, rise=rise, short=radius,
        seed=seed,
    )  # fmt: skip
    exact = _exact_at_zero(n, rise, seed)
    crossed = exact <= r_max
    assert 0 < crossed.sum() < n  # some directions lie almost along the long axes
    np.testing.assert_array_equal(found.crossed, crossed)
    # the chord between grid points of a convex curve crosses a little early: < one step
    step = r_max / 200
    err = exact[crossed] - found.distance[crossed]
    assert err.min() > -1e-6 and err.max() < step
    # the count: exact for every direction not within a grid step of the radius
    clear = np.abs(exact - radius) > step
    np.testing.assert_array_equal(found.short[clear], (exact < radius)[clear])
    # and the law: Σ a d² = SMALL + (BIG − SMALL)·S, S = Σ_{i<k} d_i² ~ Beta(k/2, (D − k)/2)
    cut = (rise / radius**2 - SMALL) / (BIG - SMALL)
    p = sp.beta.sf(cut, K / 2, (D - K) / 2)
    assert 0.2 < p < 0.8  # a count that could come out either way
    wide = binomial_interval(found.count, n, 0.999)
    assert wide.lo <= p <= wide.hi
    assert found.proportion.lo < found.proportion.fraction < found.proportion.hi
    assert found.proportion.hi - found.proportion.lo < 0.07  # 1,000 directions resolve it
    assert found.level == pytest.approx(rise)  # the point's own loss is 0


def test_the_chunked_engine_path_is_the_per_direction_loop():
    torch.manual_seed(0)
    theta = 0.2 * torch.randn(D)
    model = Quadratic(_axes(), theta)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    distances = np.linspace(0.0, 1.0, 7)
    got = short_count.ray_losses(
        model, state, ["theta"], 10, distances, DATA, "train", seed=2, chunk=3
    )
    a = _axes().double()
    want = np.zeros_like(got)
    for j in range(10):
        d = random_unit_direction(D, stream_seed(2, j), torch.float64)
        for i, r in enumerate(distances):
            point = theta.double() + r * d
            want[j, i] = float((a * point * point).sum())
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # chunk size does not change a value
    again = short_count.ray_losses(
        model, state, ["theta"], 10, distances, DATA, "train", seed=2, chunk=10
    )
    np.testing.assert_allclose(again, got, rtol=1e-6)


def test_the_reference_rule_is_the_quantile_of_the_distances_at_the_reference():
    torch.manual_seed(1)
    ref = Quadratic(_axes(), 0.3 * torch.randn(D))
    kw = dict(n=200, r_max=2.0, n_distances=101, rise=1.0, seed=4)
    at_ref = lh.short_directions(ref, DATA, short=2.0, **kw)  # its distances
    median = float(np.quantile(at_ref.distance, 0.5, method="lower"))
    got = lh.short_directions(Quadratic(_axes()), DATA, reference=ref, **kw)
    assert got.radius == pytest.approx(median)
    assert "quantile" in got.rule
    plain = lh.short_directions(Quadratic(_axes()), DATA, short=median, **kw)
    np.testing.assert_array_equal(got.short, plain.short)
    # at the reference itself the median rule makes about half the directions short
    self_ref = lh.short_directions(ref, DATA, reference=ref, **kw)
    assert 0.45 <= self_ref.proportion.fraction <= 0.5


def test_reference_radius_refuses_a_quantile_beyond_r_max():
    distance = np.array([1.0, 2.0, 3.0, 3.0])
    crossed = np.array([True, True, False, False])
    assert short_count.reference_radius(distance, crossed, 0.25) == 1.0
    with pytest.raises(UserError, match="r_max"):
        short_count.reference_radius(distance, crossed, 0.75)
    with pytest.raises(UserError):
        short_count.reference_radius(distance, crossed, 1.5)


def test_bad_arguments_are_refused_in_one_message():
    model = Quadratic(_axes())
    with pytest.raises(UserError, match="not both"):
        lh.short_directions(model, DATA, n=5)
    with pytest.raises(UserError, match="not both"):
        lh.short_directions(model, DATA, n=5, short=1.0, reference=model)
    with pytest.raises(UserError, match="r_max"):
        lh.short_directions(model, DATA, n=5, r_max=2.0, short=3.0)
    with pytest.raises(UserError, match="rise"):
        lh.short_directions(model, DATA, n=5, short=1.0, rise=0.0)
    with pytest.raises(UserError, match="state dict"):
        lh.short_directions(model, DATA, n=5, reference=Quadratic(torch.ones(3)))
