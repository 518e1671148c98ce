"""Tunnel width error bars over nets, not rays (geometry/width_nets.py, WidthResult.over_nets):
the interval is the t interval of the per-net means, unlike the pooled rays' one; a label
measured on one net gets no interval; the summary and width_nets.csv say it per label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landscape_hpc.geometry import width_nets
from landscape_hpc.geometry.width import WidthResult, summarize_width, write_width
from landscape_hpc.stats import mean_interval


def _rays(seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Three nets of setting "a" whose widths differ from net to net (10, 12, 17) with little
    spread along each net's 20 rays; one net of setting "b"."""
    rng = np.random.default_rng(seed)
    means = [10.0, 12.0, 17.0, 30.0]
    values = np.array([m + 0.2 * rng.standard_normal(20) for m in means])
    crossed = np.ones_like(values, dtype=bool)
    crossed[1, :15] = False  # net 1: 5 crossed rays only
    return ["a", "a", "a", "b"], values, crossed


def test_the_interval_is_over_per_net_means_not_pooled_rays():
    labels, values, crossed = _rays()
    a, b = width_nets.over_nets(labels, values, crossed)
    per_net = [values[o][crossed[o]].mean() for o in range(3)]
    assert (a.mean, a.lo, a.hi) == pytest.approx(mean_interval(np.array(per_net)))
    assert a.n_nets == 3 and a.n_rays == 45 and a.label == "a"
    pooled = np.concatenate([values[o][crossed[o]] for o in range(3)])
    p_mean, p_lo, p_hi = mean_interval(pooled)
    assert a.mean != pytest.approx(p_mean)  # net 1 weighs as much as the others
    assert (a.hi - a.lo) > 5 * (p_hi - p_lo)  # 45 rays are not 45 replicates
    assert b.n_nets == 1 and np.isnan(b.lo) and np.isnan(b.hi)


def test_a_net_without_a_crossed_ray_is_left_out_and_counted():
    labels, values, crossed = _rays()
    crossed[2] = False
    a = width_nets.over_nets(labels, values, crossed)[0]
    assert a.n_nets == 2 and a.uncrossed_nets == 1
    assert a.mean == pytest.approx((values[0].mean() + values[1][crossed[1]].mean()) / 2)
    with pytest.raises(ValueError):
        width_nets.over_nets(labels[:3], values, crossed)


def _result(labels, values, crossed) -> WidthResult:
    o, n = values.shape
    distances = np.linspace(0, 40, 5)
    losses = np.zeros((o, n, 5))
    return WidthResult(
        labels, [f"net{i}.pt" for i in range(o)], distances, losses, losses.copy(),
        np.ones(o), values, crossed, np.full(o, 20.0), values / 20.0, 2.0 * values,
    )  # fmt: skip


def test_summary_and_csv_report_the_nets_interval(tmp_path: Path):
    result = _result(*_rays())
    rows = result.over_nets()
    assert [r.measure for r in rows] == ["width", "width", "relative", "relative", "angle", "angle"]
    angle_a = rows[4]
    width_a = rows[0]
    assert angle_a.mean == pytest.approx(2 * width_a.mean)
    summary = summarize_width(result, 1.0, "above_optimum")
    line = [x for x in summary.splitlines() if x.startswith("  a over 3 nets")]
    assert len(line) == 1 and f"width {width_a.mean:.4g} [{width_a.lo:.4g}" in line[0]
    assert not any(x.startswith("  b over") for x in summary.splitlines())
    files = write_width(result, tmp_path)
    table = np.genfromtxt(
        tmp_path / "width_nets.csv", delimiter=",", names=True, dtype=None, encoding=None
    )
    assert tmp_path / "width_nets.csv" in files and len(table) == 6
    row = table[(table["label"] == "a") & (table["measure"] == "width")][0]
    assert row["n_nets"] == 3 and row["lo"] == pytest.approx(width_a.lo, rel=1e-5)
