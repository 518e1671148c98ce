"""Radial tunnel width (Fort & Jastrzebski 2019, sec. 4.4): known answers on quadratic and norm
losses, the engine path against the plain reference, and the never-crossed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_hpc.config import DatasetConfig, ModelConfig, WidthConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.errors import UserError
from landscape_hpc.geometry.hyperplane import stream_seed
from landscape_hpc.geometry.width import (
    check_crossed,
    crossing_distance,
    random_unit_direction,
    ray_widths,
    run_width,
    subtended_angle,
    summarize_width,
    write_width,
)
from landscape_hpc.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_quadratic_width_is_the_root_of_the_threshold_on_every_ray() -> None:
    # loss = |θ − θ*|²: along any unit ray the loss is r², so the level 0.2 is crossed at √0.2
    centre = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = lambda theta: ((theta - centre) ** 2).sum()  # noqa: E731
    distances = np.linspace(0.0, 1.0, 101)
    for kind in ("absolute", "above_optimum"):
        widths, crossed, losses = ray_widths(loss, centre, 7, distances, 0.2, kind)
        assert crossed.all()
        np.testing.assert_allclose(widths, np.sqrt(0.2), atol=1e-4)
        np.testing.assert_allclose(losses, np.broadcast_to(distances**2, losses.shape), atol=1e-12)


def test_crossing_distance_interpolates_and_reports_lower_bounds() -> None:
    r = np.array([0.0, 1.0, 2.0, 3.0])
    assert crossing_distance(r, np.array([0.0, 0.5, 1.5, 4.0]), 1.0) == (1.5, True)
    assert crossing_distance(r, np.array([0.0, 0.1, 0.2, 0.3]), 1.0) == (3.0, False)
    assert crossing_distance(r, np.array([0.0, 0.1, np.nan, 0.3]), 1.0) == (2.0, True)
    assert crossing_distance(r, np.array([2.0, 3.0, 4.0, 5.0]), 1.0) == (0.0, True)


def _wedge_origin(tmp_path: Path, dim: int = 30) -> str:
    """model=wedge with n = 0 is the norm |θ|; at θ = 0 the width is the threshold itself."""
    path = tmp_path / "origin.pt"
    torch.save({"theta": torch.zeros(dim)}, path)
    return str(path)


def _width_cfg(optima: list[str], out: Path, **overrides) -> WidthConfig:
    """A small width run; by default on model=wedge as the norm (see _wedge_origin)."""
    values = dict(
        model=ModelConfig(name="wedge", kwargs={"dim": 30, "n": 0}),
        dataset=DatasetConfig(name="digits", max_samples=10),
        optima=optima,
        n_directions=6,
        r_max=1.0,
        n_distances=11,
        threshold=0.35,
        device="cpu",
        out_dir=str(out),
    )
    return WidthConfig(**(values | overrides))


def test_norm_loss_through_the_engine_has_width_equal_to_the_threshold(tmp_path: Path) -> None:
    origin = _wedge_origin(tmp_path)
    result = run_width(_width_cfg([origin, origin], tmp_path, labels=["a", "b"]))
    assert result.widths.shape == (2, 6) and result.crossed.all()
    np.testing.assert_allclose(result.widths, 0.35, atol=1e-6)
    np.testing.assert_allclose(result.losses, np.broadcast_to(result.distances, (2, 6, 11)), 1e-6)
    assert np.isnan(result.accs).all()  # a loss-output model has no accuracy
    files = write_width(result, tmp_path)
    table = np.genfromtxt(files[0], delimiter=",", names=True, dtype=None, encoding=None)
    assert len(table) == 12 and set(table["label"]) == {"a", "b"}


def test_threshold_never_crossed_is_a_lower_bound_then_an_error(tmp_path: Path) -> None:
    origin = _wedge_origin(tmp_path)
    result = run_width(_width_cfg([origin], tmp_path, threshold=2.0, threshold_kind="absolute"))
    assert not result.crossed.any()
    np.testing.assert_allclose(result.widths, 1.0)  # r_max, as a lower bound
    summary = summarize_width(result, 2.0, "absolute")
    assert "6 ray(s) never cross up to r_max=1 (width ≥ 1; largest loss there 1)" in summary
    with pytest.raises(UserError, match=r"threshold never crossed: on none of the 6 rays"):
        check_crossed(result)


def test_engine_rays_match_the_flat_reference_on_an_mlp(tmp_path: Path) -> None:
    dataset = DatasetConfig(name="digits", max_samples=200)
    model_cfg = ModelConfig(name="mlp", kwargs={"hidden": [8]}, init_seed=3)
    model = build_model(model_cfg, (1, 8, 8), 10)
    path = tmp_path / "net.pt"
    torch.save(model.state_dict(), path)
    cfg = _width_cfg(
        [str(path)],
        tmp_path,
        model=model_cfg,
        dataset=dataset,
        n_directions=4,
        r_max=30.0,
        n_distances=16,
        threshold=0.5,
        seed=5,
    )
    result = run_width(cfg)
    train = load_dataset(dataset)["train"]
    state = model.state_dict()
    keys = [name for name, _ in model.named_parameters()]
    loss, theta = flat_loss(model, state, keys, train.inputs, train.labels)
    widths, crossed, losses = ray_widths(loss, theta, 4, result.distances, 0.5, seed=5)
    np.testing.assert_allclose(result.losses[0], losses, rtol=1e-5)
    np.testing.assert_array_equal(result.crossed[0], crossed)
    np.testing.assert_allclose(result.widths[0], widths, rtol=1e-5)
    assert crossed.all() and (widths > 0).all()
    # the same widths as lengths relative to ‖θ*‖ and as angles: a unit ray's step is r long
    assert result.norms[0] == pytest.approx(float(theta.double().norm()), rel=1e-6)
    np.testing.assert_allclose(result.relative[0], widths / float(theta.norm()), rtol=1e-5)
    for i in range(4):
        d = random_unit_direction(theta.numel(), stream_seed(5, i), theta.dtype)
        want = subtended_angle(theta, d, float(result.widths[0, i]))
        assert result.angles[0, i] == pytest.approx(want, rel=1e-6)
    summary = summarize_width(result, 0.5, "above_optimum")
    assert "of ‖θ*‖" in summary and "°" in summary


def test_the_angle_a_width_subtends_from_the_origin() -> None:
    theta = torch.tensor([3.0, 4.0, 0.0])  # ‖θ‖ = 5
    across = torch.tensor([0.0, 0.0, 1.0])
    assert subtended_angle(theta, across, 5.0) == pytest.approx(45.0)
    assert subtended_angle(theta, across, 5.0 * np.sqrt(3)) == pytest.approx(60.0)
    along = theta / 5
    assert subtended_angle(theta, along, 2.0) == pytest.approx(0.0, abs=1e-6)
    assert subtended_angle(theta, -along, 7.0) == pytest.approx(180.0)  # through the origin
    # the same Euclidean width is a smaller angle at a larger norm
    assert subtended_angle(10 * theta, across, 5.0) < subtended_angle(theta, across, 5.0)


def test_labels_with_commas_and_quotes_read_back_through_csv(tmp_path: Path) -> None:
    """width.csv and width_curves.csv are written by the csv module: a label holding a comma or
    a quote is one field, so csv readers get the columns back (issue 33)."""
    import csv

    origin = _wedge_origin(tmp_path)
    labels = ["lr=0.1, wd=0", 'say "flat"']
    result = run_width(_width_cfg([origin, origin], tmp_path, labels=labels))
    table, curves, nets = write_width(result, tmp_path / "out")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["label"] for r in rows} == set(labels)
    assert all(len(r) == 11 and None not in r for r in rows)  # no spilled fields
    with open(nets, newline="") as f:
        net_rows = list(csv.DictReader(f))
    assert {r["label"] for r in net_rows} == set(labels)
    assert all(len(r) == 8 and None not in r for r in net_rows)
    np.testing.assert_allclose([float(r["width"]) for r in rows], 0.35, atol=1e-5)
    assert {r["optimum"] for r in rows} == {origin} and {r["crossed"] for r in rows} == {"1"}
    with open(curves, newline="") as f:
        curve_rows = list(csv.DictReader(f))
    assert len(curve_rows) == 2 * 6 * 11 and {r["label"] for r in curve_rows} == set(labels)
    np.testing.assert_allclose(
        [float(r["loss"]) for r in curve_rows if r["label"] == labels[0] and r["ray"] == "0"],
        result.distances,
        atol=1e-5,
    )
