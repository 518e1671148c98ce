"""Data splits: shapes, counts, seeds, normalisation, and the errors a user sees."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape_hpc import data as data_module
from landscape_hpc.config import DatasetConfig
from landscape_hpc.data import DATASET_NAMES, Split, dataset_attrs, load_dataset, num_classes
from landscape_hpc.engine.data import Streamed
from landscape_hpc.errors import UserError


def _rows_of(part: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """For each sample of `part`, whether an identical sample occurs in `whole`."""
    part, whole = part.flatten(1), whole.flatten(1)
    return (part[:, None, :] == whole[None, :, :]).all(dim=2).any(dim=1)  # (len(part),)


# --- digits ---


def test_digits_shapes_counts_and_dtypes() -> None:
    splits = load_dataset(DatasetConfig(name="digits"))
    assert set(splits) == {"train", "test"}
    train, test = splits["train"], splits["test"]
    assert isinstance(train, Split)
    assert train.inputs.shape == (1437, 1, 8, 8) and test.inputs.shape == (360, 1, 8, 8)
    assert train.inputs.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert train.labels.shape == (1437,) and test.labels.shape == (360,)
    assert set(train.labels.tolist()) == set(range(10))
    # held-out images are not in the training split (digits has a few exact duplicates)
    assert _rows_of(test.inputs, train.inputs).float().mean() < 0.05


def test_digits_standardised_with_train_statistics() -> None:
    train, test = load_dataset(DatasetConfig(name="digits")).values()
    assert abs(train.inputs.mean().item()) < 1e-5
    assert train.inputs.std().item() == pytest.approx(1.0, abs=1e-5)
    # the test split uses the train statistics, so it is close to but not exactly standard
    assert abs(test.inputs.mean().item()) < 0.1
    assert test.inputs.std().item() == pytest.approx(1.0, abs=0.1)


def test_digits_split_is_fixed_by_seed_and_test_fraction() -> None:
    first = load_dataset(DatasetConfig(name="digits", seed=3))
    again = load_dataset(DatasetConfig(name="digits", seed=3))
    other = load_dataset(DatasetConfig(name="digits", seed=4))
    assert torch.equal(first["test"].inputs, again["test"].inputs)
    assert torch.equal(first["train"].labels, again["train"].labels)
    assert not torch.equal(first["test"].labels, other["test"].labels)
    half = load_dataset(DatasetConfig(name="digits", test_fraction=0.5))
    assert len(half["train"].labels) == 898 and len(half["test"].labels) == 899


def test_digits_bad_test_fraction() -> None:
    with pytest.raises(UserError, match="dataset.test_fraction"):
        load_dataset(DatasetConfig(name="digits", test_fraction=1.0))


def test_dataset_attrs_name_and_counts() -> None:
    cfg = DatasetConfig(name="digits")
    attrs = dataset_attrs(cfg, load_dataset(cfg))
    assert attrs == {"dataset": "digits", "n_train": 1437, "n_test": 360}


# --- max_samples ---


def test_max_samples_is_a_fixed_seeded_subset() -> None:
    full = load_dataset(DatasetConfig(name="digits"))
    cfg = DatasetConfig(name="digits", max_samples=100)
    first, again = load_dataset(cfg), load_dataset(cfg)
    reseeded = load_dataset(DatasetConfig(name="digits", max_samples=100, seed=1))
    for name in ("train", "test"):
        assert first[name].inputs.shape == (100, 1, 8, 8)
        assert torch.equal(first[name].inputs, again[name].inputs)
        assert torch.equal(first[name].labels, again[name].labels)
        assert _rows_of(first[name].inputs, full[name].inputs).all()
    # a different seed draws another subset (of another train/test split too)
    assert not torch.equal(first["train"].inputs, reseeded["train"].inputs)
    # more than the split holds: the whole split
    big = load_dataset(DatasetConfig(name="digits", max_samples=10_000))
    assert torch.equal(big["test"].inputs, full["test"].inputs)
    assert dataset_attrs(cfg, first)["n_train"] == 100


def test_max_samples_must_be_positive() -> None:
    with pytest.raises(UserError, match="dataset.max_samples"):
        load_dataset(DatasetConfig(name="digits", max_samples=0))


# --- synthetic ---


def test_synthetic_shapes_labels_and_seed() -> None:
    cfg = DatasetConfig(name="synthetic", shape=[3, 4, 4], num_classes=5, num_train=64, num_test=16)
    splits = load_dataset(cfg)
    assert splits["train"].inputs.shape == (64, 3, 4, 4)
    assert splits["test"].inputs.shape == (16, 3, 4, 4)
    assert splits["train"].inputs.dtype == torch.float32
    assert splits["train"].labels.dtype == torch.int64
    labels = torch.cat([splits["train"].labels, splits["test"].labels])
    assert labels.min() >= 0 and labels.max() < 5 and len(labels.unique()) >= 3
    assert num_classes(cfg, splits) == 5
    again = load_dataset(cfg)
    assert torch.equal(splits["train"].inputs, again["train"].inputs)
    assert torch.equal(splits["test"].labels, again["test"].labels)
    other = load_dataset(DatasetConfig(name="synthetic", shape=[3, 4, 4], num_classes=5, seed=1))
    assert not torch.equal(splits["train"].inputs, other["train"].inputs[:64])


def test_synthetic_labels_are_a_linear_function_of_the_inputs() -> None:
    # the same teacher labels both splits: a linear classifier fitted on train predicts test
    from sklearn.linear_model import LogisticRegression

    cfg = DatasetConfig(name="synthetic", shape=[8], num_classes=3, num_train=600, num_test=200)
    train, test = load_dataset(cfg).values()
    classifier = LogisticRegression(C=100.0, max_iter=2000).fit(train.inputs, train.labels)
    assert classifier.score(test.inputs, test.labels) > 0.9


def test_synthetic_test_split_does_not_depend_on_num_train() -> None:
    small = load_dataset(DatasetConfig(name="synthetic", shape=[6], num_train=10))
    large = load_dataset(DatasetConfig(name="synthetic", shape=[6], num_train=50))
    assert torch.equal(small["test"].inputs, large["test"].inputs)
    assert torch.equal(small["test"].labels, large["test"].labels)


# --- custom ---


def test_custom_target_with_tensors_and_arrays() -> None:
    cfg = DatasetConfig(
        name="custom", target="custom_objects.tensor_splits", kwargs={"n_train": 7, "n_test": 3}
    )
    splits = load_dataset(cfg)
    train, test = splits["train"], splits["test"]
    assert train.inputs.shape == (7, 3) and train.inputs.dtype == torch.float32
    assert torch.equal(train.inputs[1], torch.tensor([3.0, 4.0, 5.0]))
    assert train.labels.tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert test.inputs.shape == (3, 3) and test.labels.dtype == torch.int64
    assert dataset_attrs(cfg, splits)["dataset_target"] == "custom_objects.tensor_splits"


def test_custom_target_with_torch_datasets() -> None:
    cfg = DatasetConfig(name="custom", target="custom_objects.dataset_splits", kwargs={"size": 4})
    splits = load_dataset(cfg)
    train = splits["train"]
    assert torch.equal(train.inputs, torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 4.0], [3.0, 9.0]]))
    assert train.labels.tolist() == [0, 1, 2, 0] and train.labels.dtype == torch.int64
    assert len(splits["test"].labels) == 2
    assert num_classes(cfg, splits) == 3


def test_custom_integer_inputs_stay_integers() -> None:
    cfg = DatasetConfig(name="custom", target="custom_objects.token_splits")
    train = load_dataset(cfg)["train"]
    assert train.inputs.dtype == torch.int64 and train.inputs.shape == (6, 4)
    assert torch.equal(train.inputs[1], torch.tensor([4, 5, 6, 0]))


def test_custom_dataloader_splits_are_streamed_where_allowed() -> None:
    cfg = DatasetConfig(name="custom", target="custom_objects.loader_splits")
    splits = load_dataset(cfg, streamed=True)
    assert isinstance(splits["train"], Streamed) and isinstance(splits["test"], Split)
    assert [b.n for b in splits["train"].batches()] == [16, 16, 8]
    assert dataset_attrs(cfg, splits)["n_train"] == 40
    assert num_classes(cfg, splits) == 10  # from the resident split's labels
    with pytest.raises(UserError, match="split 'train' is streamed.*only the surface command"):
        load_dataset(cfg)
    with pytest.raises(UserError, match="dataset.max_samples=5 cannot cut the streamed split"):
        load_dataset(replace(cfg, max_samples=5), streamed=True)


def test_a_custom_dataset_over_the_budget_is_streamed(monkeypatch) -> None:
    monkeypatch.setattr(data_module, "RESIDENT_MB", 0)
    cfg = DatasetConfig(name="custom", target="custom_objects.dataset_splits", kwargs={"size": 4})
    train = load_dataset(cfg, streamed=True)["train"]
    assert isinstance(train, Streamed)
    (batch,) = list(train.batches())
    assert torch.equal(batch.inputs, torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 4.0], [3.0, 9.0]]))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (None, "dataset.target"),
        ("custom_objects.train_split_only", "test"),
        ("custom_objects.broken_splits", "labels.csv"),
        ("custom_objects.no_such_function", "no callable no_such_function"),
        ("no_such_module.splits", "cannot import"),
        ("splits", "package.module.callable"),
    ],
)
def test_custom_target_errors_name_the_key(target: str | None, message: str) -> None:
    with pytest.raises(UserError, match="dataset.target") as caught:
        load_dataset(DatasetConfig(name="custom", target=target))
    assert message in str(caught.value)


# --- torchvision data sets ---


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed idx file: magic (0, 0, type 0x08 = uint8, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_idx_files_through_torchvision(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train_images = np.zeros((6, 28, 28), dtype=np.uint8)
    train_images[:, 0, 0] = 255  # one white pixel per image
    _write_idx(raw / "train-images-idx3-ubyte", train_images)
    _write_idx(raw / "train-labels-idx1-ubyte", np.array([5, 0, 4, 1, 9, 2]))
    _write_idx(raw / "t10k-images-idx3-ubyte", np.full((2, 28, 28), 255))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.array([7, 2]))

    cfg = DatasetConfig(name="mnist", root=str(tmp_path))
    splits = load_dataset(cfg)
    train, test = splits["train"], splits["test"]
    assert train.inputs.shape == (6, 1, 28, 28) and train.inputs.dtype == torch.float32
    assert train.labels.tolist() == [5, 0, 4, 1, 9, 2] and train.labels.dtype == torch.int64
    black, white = (0.0 - 0.1307) / 0.3081, (1.0 - 0.1307) / 0.3081
    assert train.inputs[:, 0, 0, 0].tolist() == pytest.approx([white] * 6, rel=1e-5)
    assert train.inputs[:, 0, 1:, :].unique().tolist() == pytest.approx([black], rel=1e-5)
    assert test.labels.tolist() == [7, 2]
    assert test.inputs.unique().tolist() == pytest.approx([white], rel=1e-5)
    assert dataset_attrs(cfg, splits) == {"dataset": "mnist", "n_train": 6, "n_test": 2}


def test_missing_cifar10_without_download_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path / "data"), download=False))
    message = str(caught.value)
    assert "cifar10" in message and str(tmp_path / "data") in message
    assert "dataset.download=true" in message and "dataset.root=" in message


def test_torchvision_dataset_needs_a_root() -> None:
    with pytest.raises(UserError, match="dataset.root"):
        load_dataset(DatasetConfig(name="fashion_mnist"))


def test_unknown_dataset_lists_the_names() -> None:
    with pytest.raises(UserError) as caught:
        load_dataset(DatasetConfig(name="imagenet"))
    assert "dataset.name" in str(caught.value)
    assert all(name in str(caught.value) for name in DATASET_NAMES)
