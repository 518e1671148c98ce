"""The BN experiment's net pair, the paper code's framed random masks, the two accuracy gaps, and
convergence: the held-out history, its exact resume, and the stop rule."""

import csv

import numpy as np
import pytest
import torch
from torch import nn

from landscape_hpc.config import DatasetConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.errors import UserError
from landscape_hpc.grid import pattern_to_surface
from landscape_hpc.models import build_model
from landscape_hpc.mpo.convergence import HISTORY_COLUMNS, StopRule, read_history_csv
from landscape_hpc.mpo.fit import FitOptions, fit_plane
from landscape_hpc.mpo.job import pattern_metrics
from landscape_hpc.mpo.patterns import builtin_mask, random_mask, trainable_cells
from landscape_hpc.mpo.plane import Plane

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetConfig(name="digits", max_samples=300), "cpu")


def make_plane(seed: int = 0) -> tuple[Plane, nn.Module]:
    models = [
        build_model(ModelConfig(name="mlp", init_seed=seed + i, kwargs={"hidden": [16]}), SHAPE, 10)
        for i in range(3)
    ]
    return Plane.init(tuple(models)), models[0]


# ----------------------------------------------------------------------------- the net pair


def test_the_bn_pair_differs_only_by_batch_norm():
    plain = build_model(ModelConfig(name="mpo_cnn6"), SHAPE, 10)
    bn = build_model(ModelConfig(name="mpo_cnn_bn"), SHAPE, 10)

    def convs(model):
        return [m for m in model.modules() if isinstance(m, nn.Conv2d)]

    assert [c.weight.shape for c in convs(plain)] == [c.weight.shape for c in convs(bn)]
    assert [c.out_channels for c in convs(plain)] == [8, 8, 32, 32, 64, 64]  # appendix B
    head = [p.shape for p in plain.classifier.parameters()]
    assert head == [p.shape for p in bn.classifier.parameters()]
    assert head[0] == (128, 1024)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 6
    # the pictures net of section 4.1 is the three-conv one
    pictures = build_model(ModelConfig(name="mpo_cnn"), SHAPE, 10)
    assert [c.out_channels for c in convs(pictures)] == [8, 32, 64]


# ----------------------------------------------------------------------------- framed masks


def test_framed_random_masks_have_the_paper_codes_ring_frame_and_random_interior():
    for size, fill in ((30, 0.1), (30, 0.9), (12, 0.5)):
        mask = random_mask(size, fill, seed=3, frame=True)
        ring = np.ones((size, size), bool)
        ring[1:-1, 1:-1] = False
        assert not mask[ring].any()  # the outer ring: high-loss
        assert mask[1, 1:-1].all() and mask[-2, 1:-1].all()  # the frame: low-loss
        assert mask[1:-1, 1].all() and mask[1:-1, -2].all()
        interior = mask[2:-2, 2:-2]
        assert interior.shape == (size - 4, size - 4)
        assert abs(interior.mean() - fill) < 3.5 * np.sqrt(fill * (1 - fill) / interior.size)
        assert np.array_equal(mask, random_mask(size, fill, seed=3, frame=True))
    assert not np.array_equal(random_mask(30, 0.5, 3, True), random_mask(30, 0.5, 4, True))
    # unframed stays every cell drawn
    assert random_mask(30, 0.1, seed=3)[0].any()
    assert random_mask(4, 0.5, 0, frame=True).sum() == 4  # a frame of 2×2 and no interior
    with pytest.raises(UserError, match=r"mask.frame=true needs mask.size of at least 4×4"):
        random_mask(3, 0.5, 0, frame=True)


# ----------------------------------------------------------------------------- both metrics


def test_pattern_metrics_average_all_cells_and_the_trained_cells():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # low-loss block top-left
    trained = trainable_cells(mask)
    # accuracy 90 on low cells, 10 on high; the trained (boundary) cells get other values
    acc = np.where(mask, 90.0, 10.0)
    acc[trained & mask] = 70.0
    acc[trained & ~mask] = 40.0
    loss = np.where(mask, 0.1, 3.0)
    values = {f"{s}_{k}": pattern_to_surface(v) for s in ("train", "test") for k, v in
              (("acc", acc), ("loss", loss))}  # fmt: skip
    m = pattern_metrics(values, mask, trained)["test"]
    n_low_trained, n_high_trained = (trained & mask).sum(), (trained & ~mask).sum()
    assert (n_low_trained, n_high_trained) == (3, 5)  # (1,1) is interior; 5 high cells touch it
    assert m["trained_acc_low"] == 70.0 and m["trained_acc_high"] == 40.0
    assert m["trained_acc_gap"] == 30.0
    assert m["acc_low"] == pytest.approx((70 * 3 + 90) / 4)
    assert m["acc_high"] == pytest.approx((40 * 5 + 10 * 7) / 12)
    assert m["acc_gap"] == pytest.approx(m["acc_low"] - m["acc_high"])
    # without a trained mask every cell counts both ways
    m_all = pattern_metrics(values, mask)["train"]
    assert m_all["trained_acc_gap"] == m_all["acc_gap"]


# ----------------------------------------------------------------------------- history


def test_history_is_written_and_a_resumed_fit_records_it_exactly(digits, tmp_path):
    mask = builtin_mask("square", 6)
    opts = FitOptions(
        steps=8, batch_size=32, cells_per_step=3, lr=1e-3, checkpoint_every=3, eval_every=2,
        heldout_samples=64, heldout_cells=5, early_stop=False,
    )  # fmt: skip
    train, test = digits["train"], digits["test"]
    plane, model = make_plane()
    straight = fit_plane(plane, model, mask, train, opts, tmp_path / "a", {"j": 1},
                         progress=False, heldout=test)  # fmt: skip
    steps = [row[0] for row in straight.history]
    assert steps == [0, 2, 4, 6, 8]
    on_disk = read_history_csv(tmp_path / "a" / "history.csv")
    assert on_disk.shape == (5, len(HISTORY_COLUMNS))
    np.testing.assert_allclose(on_disk, np.array(straight.history), rtol=1e-5)
    row = dict(zip(HISTORY_COLUMNS, straight.history[-1]))
    assert row["gap_trained"] == pytest.approx(row["acc_low_trained"] - row["acc_high_trained"])
    assert np.isnan(straight.history[0][HISTORY_COLUMNS.index("loss")])  # no step before 0

    # stopped after 5 steps (checkpoint at 3 and at the end), resumed from a plane with other
    # initial weights: the checkpoint must win, and the history must come out the same
    short = FitOptions(**{**opts.__dict__, "steps": 5})
    plane_b, _ = make_plane()
    fit_plane(plane_b, model, mask, train, short, tmp_path / "b", {"j": 1}, progress=False,
              heldout=test)  # fmt: skip
    plane_c, _ = make_plane(seed=7)
    resumed = fit_plane(plane_c, model, mask, train, opts, tmp_path / "b", {"j": 1},
                        progress=False, heldout=test)  # fmt: skip
    assert [row[0] for row in resumed.history] == [0, 2, 4, 5, 6, 8]  # 5: where the first ended
    keep = [i for i, row in enumerate(resumed.history) if row[0] != 5]
    got = np.array(resumed.history)[keep]
    want = np.array(straight.history)
    no_time = [i for i, c in enumerate(HISTORY_COLUMNS) if c != "seconds"]
    np.testing.assert_allclose(got[:, no_time], want[:, no_time], rtol=1e-6)
    for a, b in zip(straight.plane.parameters(), resumed.plane.parameters()):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- the stop rule


def plateau(gaps, every=10):
    return [[every * i, g, *([0.0] * (len(HISTORY_COLUMNS) - 2))] for i, g in enumerate(gaps)]


def test_the_stop_rule_waits_for_a_plateau_of_patience_checks():
    rule = StopRule(enabled=True, patience=3, min_delta=1.0, min_steps=0)
    rising = [0, 10, 20, 30, 40, 50]
    assert not rule.converged(plateau(rising))
    flat = [0, 10, 20, 30, 30.5, 29, 30.9]  # within 1 point of 30 for the last 3 checks
    assert rule.converged(plateau(flat))
    assert not rule.converged(plateau(flat[:-1]))  # only 2 checks on the plateau
    assert not rule.converged(plateau([0, 10, 20, 30, 30.5, 29, 31.5]))  # still rising by > 1
    # a plateau before min_steps (the slow start of a net without BN) does not count
    slow_start = [0.1, 0.0, -0.1, 0.2, 0.1]
    assert rule.converged(plateau(slow_start))
    assert not StopRule(True, 3, 1.0, min_steps=100).converged(plateau(slow_start))
    assert not StopRule(False, 3, 1.0, 0).converged(plateau(flat))
    assert not rule.converged(plateau([0, 1]))  # too few checks


def test_a_fit_stops_by_itself_and_a_rerun_does_nothing(digits, tmp_path):
    mask = builtin_mask("square", 6)
    # min_delta of 200 points: no check can beat the one before, so the rule fires as soon as
    # `patience` checks follow the first one
    opts = FitOptions(
        steps=50, batch_size=32, cells_per_step=3, lr=1e-3, checkpoint_every=0, eval_every=2,
        heldout_samples=32, heldout_cells=3, patience=2, min_delta=200.0, min_steps=3,
    )  # fmt: skip
    plane, model = make_plane()
    result = fit_plane(plane, model, mask, digits["train"], opts, tmp_path, {"j": 1},
                       progress=False, heldout=digits["test"])  # fmt: skip
    assert result.converged and result.steps == 4  # checks at 0, 2, 4; min_steps 3
    again = fit_plane(make_plane(seed=5)[0], model, mask, digits["train"], opts, tmp_path,
                      {"j": 1}, progress=False, heldout=digits["test"])  # fmt: skip
    assert again.converged and again.steps == 4 and again.last is None  # nothing trained
    with (tmp_path / "history.csv").open() as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [0, 2, 4]
    # a looser rule asks for more: the same checkpoint resumes and trains on
    more = FitOptions(**{**opts.__dict__, "patience": 4})
    longer = fit_plane(make_plane(seed=5)[0], model, mask, digits["train"], more, tmp_path,
                       {"j": 1}, progress=False, heldout=digits["test"])  # fmt: skip
    assert longer.converged and longer.steps == 8


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("eval_every", 0, "eval_every=0 must be a positive integer"),
        ("heldout_samples", -1, "heldout_samples=-1 must be a positive integer"),
        ("patience", 0, "patience=0 must be a positive integer"),
        ("min_delta", -1.0, "min_delta=-1.0 must be 0 or more"),
        ("threads", 0, "threads=0 must be at least 1"),
    ],
)
def test_bad_convergence_settings_are_refused_with_the_key(digits, key, value, message):
    plane, model = make_plane()
    opts = FitOptions(**{"steps": 2, key: value})
    with pytest.raises(UserError, match=message):
        fit_plane(plane, model, builtin_mask("square", 6), digits["train"], opts, progress=False)
