"""The validation split of an MPO fit (mpo/convergence.py validation_split, mpo/job.py
fit_splits): carved from the training split by a seeded draw, never in a training batch, the only
data the held-out checks and the stop rule read; the test split is left to the final evaluation.
Checked through the data a real fit is given, not by replacing the fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.config import DatasetConfig, ModelConfig
from landscape_hpc.data import Split, load_dataset
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model
from landscape_hpc.mpo.convergence import (
    HISTORY_COLUMNS,
    VALIDATION_MAX_SHARE,
    validation_rows,
    validation_size,
    validation_split,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

TIMELESS = [c for c in HISTORY_COLUMNS if c != "seconds"]
CHECKS = [c for c in TIMELESS if c not in ("step", "loss", "scale")]  # the held-out columns
FIT = {"batch_size": 32, "cells_per_step": 4, "steps": 24, "eval_every": 8, "lr": 3e-3}
KW = {**FIT, "val_samples": 30, "engine": {"strategy": "sequential"}, "progress": False}


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    splits = load_dataset(DatasetConfig(max_samples=200))
    return {name: (s.inputs, s.labels) for name, s in splits.items()}


def mlp() -> nn.Module:
    return build_model(ModelConfig(name="mlp", kwargs={"hidden": [16]}), (1, 8, 8), 10)


def mask() -> np.ndarray:
    return lh.mpo_mask("random", size=4, fill_prob=0.5, seed=0)


def planes_equal(a: dict, b: dict) -> bool:
    return a["scale"] == b["scale"] and all(
        torch.equal(a[part][k], b[part][k]) for part in ("origin", "up", "right") for k in a[part]
    )


def test_validation_rows_are_a_seeded_draw_disjoint_from_the_rest():
    rest, val = validation_rows(1437, 256, seed=3)
    assert len(val) == 256 and len(rest) == 1437 - 256
    assert not set(rest) & set(val)
    assert np.array_equal(np.sort(np.concatenate([rest, val])), np.arange(1437))
    assert np.all(np.diff(val) > 0) and np.all(np.diff(rest) > 0)  # original order
    again = validation_rows(1437, 256, seed=3)
    assert np.array_equal(again[1], val) and np.array_equal(again[0], rest)
    assert not np.array_equal(validation_rows(1437, 256, seed=4)[1], val)
    # at most a fifth of the training split
    assert validation_size(200, 256) == 200 // VALIDATION_MAX_SHARE == 40
    assert validation_size(1437, 256) == 256
    with pytest.raises(UserError, match=r"val_samples=0 must be a positive integer"):
        validation_rows(100, 0, 0)
    with pytest.raises(UserError, match=r"training split has 4 samples, too few"):
        validation_rows(4, 10, 0)


def test_validation_split_takes_its_rows_of_the_training_split_and_only_them():
    train = Split(torch.arange(50.0).reshape(50, 1), torch.arange(50))
    rest, val = validation_split(train, 10, seed=1)
    rest_rows, val_rows = validation_rows(50, 10, 1)
    assert torch.equal(val.labels, torch.from_numpy(val_rows))
    assert torch.equal(rest.labels, torch.from_numpy(rest_rows))
    assert torch.equal(val.inputs[:, 0], val.labels.float())  # inputs and labels stay paired
    assert len(set(val.labels.tolist()) | set(rest.labels.tolist())) == 50


def test_the_held_out_checks_read_the_validation_split_and_never_the_test_split(data):
    """Three changes to the data a real fit gets: the test split made NaN changes neither the
    plane nor a held-out check (the stop rule's input); the validation rows of the training
    split changed leave the plane (no batch holds them) but move the checks; the other training
    rows changed move the plane."""
    base = lh.fit_mpo(mlp(), data, mask(), **KW)
    n = data["train"][1].shape[0]
    rest, val = validation_rows(n, KW["val_samples"], seed=0)
    x, y = data["train"]

    nan_test = {"train": data["train"], "test": (torch.full_like(data["test"][0], np.nan),
                                                  data["test"][1])}  # fmt: skip
    blind = lh.fit_mpo(mlp(), nan_test, mask(), **KW)
    assert planes_equal(blind.plane, base.plane)
    np.testing.assert_array_equal(
        blind.history[TIMELESS].to_numpy(), base.history[TIMELESS].to_numpy()
    )
    assert np.isfinite(base.metrics["test"]["acc_gap"])
    assert np.isnan(blind.metrics["test"]["loss_low"])  # the final evaluation did read test

    def changed(rows: np.ndarray) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        noisy = x.clone()
        noisy[torch.from_numpy(rows)] = torch.randn(
            (len(rows), *x.shape[1:]), generator=torch.Generator().manual_seed(0)
        )
        return {"train": (noisy, y), "test": data["test"]}

    other_val = lh.fit_mpo(mlp(), changed(val), mask(), **KW)
    assert planes_equal(other_val.plane, base.plane)  # no training batch holds a validation row
    np.testing.assert_array_equal(
        other_val.history["loss"].to_numpy(), base.history["loss"].to_numpy()
    )
    assert not np.array_equal(
        other_val.history[CHECKS].to_numpy(), base.history[CHECKS].to_numpy()
    )  # the checks read the validation rows
    other_rest = lh.fit_mpo(mlp(), changed(rest), mask(), **KW)
    assert not planes_equal(other_rest.plane, base.plane)


def test_a_checkpoint_made_before_the_validation_split_is_refused_in_one_line(data, tmp_path):
    kwargs = {**KW, "checkpoint_every": 8, "early_stop": False}
    lh.fit_mpo(mlp(), data, mask(), out_dir=tmp_path, **{**kwargs, "steps": 8})
    path = tmp_path / "checkpoint.pt"
    # another val_samples is another job, named by the usual diff
    with pytest.raises(ValueError, match=r"val_samples: checkpoint has 30, this run 20"):
        lh.fit_mpo(mlp(), data, mask(), out_dir=tmp_path, **{**kwargs, "val_samples": 20})
    ck = torch.load(path, map_location="cpu", weights_only=True)
    fingerprint = json.loads(ck["fingerprint"])
    assert fingerprint["val_samples"] == KW["val_samples"]
    del fingerprint["val_samples"]  # as a checkpoint of a version before the key
    ck["fingerprint"] = json.dumps(fingerprint, sort_keys=True)
    torch.save(ck, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"was made before the validation split") as err:
        lh.fit_mpo(mlp(), data, mask(), out_dir=tmp_path, **{**kwargs, "steps": 16})
    assert "\n" not in str(err.value)
    assert path.read_bytes() == before
