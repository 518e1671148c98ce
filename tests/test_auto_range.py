"""The automatic range: the span where the loss first reaches a level, against the analytic
roots of parabolas, and through the engine (lh.auto_range) against lh.surface at its ends."""

from __future__ import annotations

import inspect
import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.auto_range import Level, find_span, parse_level
from landscape_hpc.config import DatasetConfig
from landscape_hpc.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


class Parabola:
    """f(c) = a·(c − s)² + b, recording the size of every batch it is called on."""

    def __init__(self, a: float, b: float, s: float = 0.0):
        self.a, self.b, self.s, self.calls = a, b, s, []

    def __call__(self, c: np.ndarray) -> np.ndarray:
        self.calls.append(len(c))
        return self.a * (np.asarray(c) - self.s) ** 2 + self.b

    def roots(self, level: float) -> tuple[float, float]:
        r = np.sqrt((level - self.b) / self.a)
        return self.s - r, self.s + r


@pytest.mark.parametrize(
    ("a", "b", "s", "level", "target"),
    [
        (3.0, 0.5, 0.0, "plus:1.0", 1.5),  # symmetric, origin + 1
        (0.2, 0.25, 0.0, "ratio:3", 0.75),  # symmetric, origin × 3
        (2.0, 0.1, 0.4, "plus:0.5", 2.0 * 0.16 + 0.1 + 0.5),  # shifted: asymmetric bounds
    ],
)
def test_the_span_is_the_analytic_roots_to_the_tolerance(a, b, s, level, target):
    f, tol = Parabola(a, b, s), 1e-4
    span = find_span(f, level, start=0.05, max_coord=10.0, tol=tol)
    lo, hi = f.roots(target)
    assert span.level == pytest.approx(target)
    assert span.origin_loss == pytest.approx(a * s**2 + b)
    assert abs(span.lo - lo) <= tol / 2 + 1e-12 and abs(span.hi - hi) <= tol / 2 + 1e-12
    assert not span.lo_capped and not span.hi_capped
    assert span.evaluations == sum(f.calls)
    assert f.calls[0] == 1 and all(n > 1 for n in f.calls[1:])  # the origin, then batches
    if s:
        assert hi - 0 > 0 - lo + 0.5  # the shift moves the basin to the right


def test_a_loss_that_never_reaches_the_level_ends_at_max_coord_with_a_warning():
    def bounded(c):  # rises to 0.9 and stays below origin + 1
        return 0.9 * (1 - np.exp(-(np.asarray(c) ** 2)))

    with pytest.warns(UserWarning, match="stays below") as caught:
        span = find_span(bounded, "plus:1.0", max_coord=6.0, tol=1e-3)
    assert (span.lo, span.hi) == (-6.0, 6.0) and span.lo_capped and span.hi_capped
    assert len(caught) == 2  # one per side


def test_one_capped_side_and_a_diverged_point_counts_as_above():
    def ramp(c):  # +side: finite and below the level until 2.5, then NaN (diverged)
        c = np.asarray(c, dtype=np.float64)
        return np.where(c > 2.5, np.nan, np.where(c > 0, 0.1 * c, 0.0))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        span = find_span(ramp, "plus:1.0", max_coord=4.0, tol=1e-3)
    assert abs(span.hi - 2.5) <= 5e-4 and not span.hi_capped
    assert span.lo == -4.0 and span.lo_capped and len(caught) == 1


def test_the_axis_widens_the_span_by_the_margin_and_levels_parse():
    span = find_span(Parabola(1.0, 0.0, 0.5), "plus:0.75", tol=1e-6)  # level 1: -0.5, 1.5
    lo, hi, n = span.axis(points=31, margin=0.25)
    assert (lo, hi, n) == (pytest.approx(-1.0), pytest.approx(2.0), 31)
    assert parse_level("ratio:2") == Level("ratio", 2.0) and str(Level("plus", 1.0)) == "plus:1"
    for bad in ("ratio:1", "plus:0", "minus:1", "plus:x", "2"):
        with pytest.raises(lh.UserError, match="plus:δ") as err:
            parse_level(bad)
        assert "\n" not in str(err.value)


def test_the_span_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="landscape_hpc.auto_range"):
        find_span(Parabola(1.0, 0.0), "plus:1.0", tol=1e-5, name="x")
    assert "along x: level 1" in caplog.text and "span [-1, 1]" in caplog.text


def _digits_mlp():
    splits = load_dataset(DatasetConfig(max_samples=120))
    data = {name: (s.inputs, s.labels) for name, s in splits.items()}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    return model, data


def test_auto_range_ends_where_the_surface_reaches_the_level():
    model, data = _digits_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tol = 0.01
    r = lh.auto_range(model, data, level="ratio:2", points=21, tol=tol, strategy="sequential")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(r.spans) == len(r.directions) == 2 and r.y is not None and r.x[2] == 21
    for span, direction in zip(r.spans, r.directions):
        assert span.lo < 0 < span.hi and not (span.lo_capped or span.hi_capped)
        assert span.level == pytest.approx(2 * span.origin_loss)
        # the surface (another code path) at each end and tol/2 inside and outside it
        for end, sign in ((span.lo, -1), (span.hi, 1)):
            ds = lh.surface(
                model, data, x=(end - tol / 2, end + tol / 2, 3), y=None,
                directions=[direction], splits=["train"], progress=False, strategy="sequential",
            )  # fmt: skip
            left, at_end, right = ds.train_loss.values
            inside, outside = (left, right) if sign > 0 else (right, left)
            assert inside < span.level <= outside
            assert at_end == pytest.approx(span.level, rel=0.02)


def test_auto_range_in_one_dimension_and_its_arguments():
    model, data = _digits_mlp()
    r = lh.auto_range(model, data, ndim=1, tol=0.05, strategy="sequential")
    assert r.y is None and len(r.spans) == 1
    assert r.spans[0].level == pytest.approx(r.spans[0].origin_loss + 1.0)  # the default
    with pytest.raises(lh.UserError, match="ndim=3"):
        lh.auto_range(model, data, ndim=3)
    doc = inspect.getdoc(lh.auto_range)
    assert "Returns:" in doc and "auto_range" in dir(lh)
    for parameter in inspect.signature(lh.auto_range).parameters:
        assert f"\n{parameter}: " in "\n" + doc.replace("    ", ""), parameter


def test_the_command_grid_auto_equals_lh_auto_range_and_resumes(tmp_path):
    from landscape_hpc.cli import compose_config
    from landscape_hpc.commands.surface import compute_surface
    from landscape_hpc.config import ModelConfig
    from landscape_hpc.files.surface_read import read_surface
    from landscape_hpc.models import build_model

    out = tmp_path / "auto.h5"
    overrides = ["model=mlp", "dataset.max_samples=80", "grid.x=[-1,1,5]", "grid.y=[-1,1,3]",
                 "grid.auto=true", "grid.auto_level=ratio:2", "grid.auto_margin=0.2",
                 "engine.strategy=sequential", "plot=false", f"out={out}"]  # fmt: skip
    compute_surface(compose_config("surface", overrides))
    s = read_surface(out)
    model = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)  # init_seed 0, as the command
    data = {k: v for k, v in _digits(80).items() if k == "train"}
    r = lh.auto_range(model, data, level="ratio:2", points=5, margin=0.2, tol=1e-3,
                      strategy="sequential")  # fmt: skip
    np.testing.assert_allclose(s.x, np.linspace(*r.x[:2], 5))
    np.testing.assert_allclose(s.y, np.linspace(*r.y[:2], 3))
    assert s.n_done == 15
    # the figures say what the range was found by
    assert s.range_level == "train loss reaches the origin's × 2"
    from landscape_hpc.plot_html import surface_figure

    assert "(range: train loss reaches the origin's × 2)" in surface_figure(s, {}).layout.title.text
    compute_surface(compose_config("surface", overrides))  # the same grid again: resumed
    bad = [o for o in overrides if not o.startswith("grid.auto_level")] + ["grid.auto_level=2"]
    with pytest.raises(lh.UserError, match="ratio:k"):
        compute_surface(compose_config("surface", bad))


def _digits(max_samples):
    splits = load_dataset(DatasetConfig(max_samples=max_samples))
    return {name: (s.inputs, s.labels) for name, s in splits.items()}
