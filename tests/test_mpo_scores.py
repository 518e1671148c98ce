"""The scores that separate a fitted pattern from the radial prior (mpo/scores.py), on surfaces
made by hand: the AUC against sklearn's, the radial AUC of a ring, the interior-only gap of a
framed mask, a surface equal to the prior scoring 0."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from landscape_hpc.grid import cell_coords, pattern_to_surface
from landscape_hpc.mpo.patterns import builtin_mask, random_mask, trainable_cells
from landscape_hpc.mpo.scores import (
    METRIC_COLUMNS,
    auc,
    interior_cells,
    is_framed,
    pattern_metrics,
    pattern_scores,
    radial_prior,
)
from landscape_hpc.sweep import report


def values_of(loss: np.ndarray, acc: np.ndarray) -> dict[str, np.ndarray]:
    """Pattern-orientation arrays as the cells' values of both splits (surface orientation)."""
    return {
        f"{s}_{k}": pattern_to_surface(v) for s in ("train", "test") for k, v in (("loss", loss),
                                                                                  ("acc", acc))
    }  # fmt: skip


def test_auc_from_ranks_equals_sklearns_with_ties_counted_half():
    rng = np.random.default_rng(0)
    for ties in (False, True):
        scores = rng.normal(size=200)
        if ties:
            scores = np.round(scores, 1)  # many ties
        labels = rng.random(200) < 0.3
        assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # by hand: positives {1, 2}, negatives {0, 2}: pairs (1>0) (1<2) (2>0) (2=2) → 2.5 / 4
    assert auc(np.array([1.0, 2.0, 0.0, 2.0]), np.array([1, 1, 0, 0], bool)) == 0.625
    assert np.isnan(auc(np.ones(3), np.ones(3, bool)))  # one class only
    assert np.isnan(auc(np.array([np.nan, 1.0]), np.array([True, False])))


def test_the_radial_prior_scores_a_ring_as_hand_counted():
    # 6×6: a low-loss ring around a high-loss centre, high-loss corners: the radius alone ranks
    # the centre first, so the prior gets the ring's inside wrong and its outside right
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    mask[2:4, 2:4] = False
    x, y = cell_coords(mask.shape)
    radius = np.hypot(x[None, :], y[:, None])
    np.testing.assert_array_equal(radial_prior(mask.shape), -radius)
    # the hand count: -radius against the mask, each pair of (low, high) cells
    low = -radius[mask].ravel()
    high = -radius[~mask].ravel()
    wins = (low[:, None] > high[None, :]).sum() + 0.5 * (low[:, None] == high[None, :]).sum()
    expected = wins / (low.size * high.size)
    got = pattern_scores(np.zeros(mask.shape), np.zeros(mask.shape), mask, np.ones_like(mask))
    assert got["auc_radial"] == pytest.approx(expected)
    assert got["auc_radial"] == pytest.approx(roc_auc_score(mask.ravel(), -radius.ravel()))
    # 4 centre cells beat every ring cell, the ring beats the 20 outer cells
    assert expected == pytest.approx((12 * 20) / (12 * 24))
    # the builtin ring: the prior gets most of it right for free
    ring = builtin_mask("ring", 20)
    assert pattern_scores(np.zeros((20, 20)), np.zeros((20, 20)), ring, ring)["auc_radial"] > 0.5


def test_a_surface_equal_to_the_radial_prior_scores_zero_and_the_pattern_scores_above():
    mask = builtin_mask("cross", 12)
    x, y = cell_coords(mask.shape)
    loss_prior = np.hypot(x[None, :], y[:, None])[::-1]  # pattern orientation: loss = radius
    acc = np.full(mask.shape, 50.0)
    prior = pattern_metrics(values_of(loss_prior, acc), mask)["test"]
    assert prior["auc_loss"] == prior["auc_radial"]
    assert prior["pattern_score"] == 0.0
    drawn = pattern_metrics(values_of(np.where(mask, 0.1, 3.0), acc), mask)["test"]
    assert drawn["auc_loss"] == 1.0  # every low-loss cell below every high-loss one
    assert drawn["pattern_score"] == pytest.approx(1.0 - prior["auc_radial"])
    assert drawn["pattern_score"] > 0
    inverted = pattern_metrics(values_of(np.where(mask, 3.0, 0.1), acc), mask)["test"]
    assert inverted["auc_loss"] == 0.0 and inverted["pattern_score"] < 0


def test_the_interior_gap_of_a_framed_mask_counts_the_interior_only():
    mask = random_mask(10, 0.5, seed=2, frame=True)
    assert is_framed(mask) and not is_framed(builtin_mask("ring", 10))
    inside = interior_cells(mask.shape)
    assert inside.sum() == 36 and not inside[:2].any() and not inside[:, -2:].any()
    # accuracy: 90 / 10 on the scaffold (ring and frame), 60 / 40 inside: gap 20 inside only
    acc = np.where(mask, 90.0, 10.0)
    acc[inside] = np.where(mask[inside], 60.0, 40.0)
    trained = trainable_cells(mask)
    m = pattern_metrics(values_of(np.where(mask, 0.1, 3.0), acc), mask, trained)["test"]
    assert m["interior_acc_gap"] == 20.0
    assert m["trained_interior_acc_gap"] == 20.0
    assert m["acc_gap"] > 20.0  # the scaffold's 80 points lift the all-cell gap
    # trained interior cells alone: change an untrained interior cell, only the first moves
    untrained = inside & ~trained & mask
    assert untrained.any()
    acc2 = acc.copy()
    acc2[untrained] = 100.0
    m2 = pattern_metrics(values_of(np.where(mask, 0.1, 3.0), acc2), mask, trained)["test"]
    assert m2["interior_acc_gap"] > 20.0 and m2["trained_interior_acc_gap"] == 20.0
    # an unframed mask has no interior gap
    plain = pattern_metrics(values_of(np.where(mask, 0.1, 3.0), acc), builtin_mask("ring", 10))
    assert "interior_acc_gap" not in plain["test"] and "auc_loss" in plain["test"]


def test_every_metric_column_is_in_the_report_and_the_sweep_file():
    from landscape_hpc.files.sweep import METRIC_COLUMNS as FILE_COLUMNS

    assert report.METRICS == METRIC_COLUMNS == FILE_COLUMNS
    m = pattern_metrics(values_of(np.ones((6, 6)), np.ones((6, 6))), random_mask(6, 0.5, 0, True))
    assert set(m["train"]) == set(METRIC_COLUMNS)


def test_a_sweep_file_made_before_the_scores_reads_them_from_its_cells(tmp_path):
    import h5py

    from landscape_hpc.files.sweep import DONE, JobSpec, Outcome, SweepFile, read_jobs
    from landscape_hpc.sweep.jobs import SweepJob

    mask = random_mask(8, 0.5, seed=1, frame=True)
    rng = np.random.default_rng(3)
    values = values_of(rng.random((8, 8)), 100 * rng.random((8, 8)))
    trained = trainable_cells(mask)
    metrics = pattern_metrics(values, mask, trained)
    spec = JobSpec(SweepJob("mlp", 0.5, 1), mask, {"skip_interior_cells": True})
    for name in ("new", "old"):
        sweep = SweepFile.open(tmp_path / f"{name}.h5", [spec], {})
        try:
            sweep.write(spec.job, Outcome(DONE, values=values, metrics=metrics, steps=1))
        finally:
            sweep.close()
    with h5py.File(tmp_path / "old.h5", "r+") as f:  # the layout before the scores: 10 columns
        g = f["jobs/mlp/fill_0.5/seed_1"]
        old = g["metrics"][:, :10]
        del g["metrics"]
        g.create_dataset("metrics", data=old)
        g["metrics"].attrs["columns"] = list(METRIC_COLUMNS[:10])
    (new,), (old_row,) = read_jobs(tmp_path / "new.h5"), read_jobs(tmp_path / "old.h5")
    for split in ("train", "test"):
        for col in METRIC_COLUMNS:
            key = f"{split}_{col}"
            assert old_row[key] == new[key] == metrics[split][col], key
    assert np.isfinite(new["test_pattern_score"]) and np.isfinite(new["test_interior_acc_gap"])
