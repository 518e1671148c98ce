"""The commands' data sets: splits as tensors resident on the device.

A landscape evaluates one network at many points, so the data are loaded once, as whole tensors
(`Split(inputs, labels)`), and batches are slices of them: no DataLoader, no per-sample
transforms. Every loader returns at least the "train" and "test" splits. Floating inputs are
float32; integer inputs (token ids) stay integers.

A custom target may also return, per split, a DataLoader (or any re-iterable of batches): it is
streamed (the engine's `Streamed`, engine/data.py), read once per pass of points, never held
whole; a Dataset too large for RESIDENT_MB is streamed through a DataLoader of STREAM_BATCH. Only
the surface command streams (load_dataset(streamed=True)); the others refuse a streamed split.

    digits         scikit-learn's bundled 8x8 digits (1,797 images, no download; the default)
    mnist          torchvision MNIST from dataset.root
    fashion_mnist  torchvision FashionMNIST from dataset.root
    cifar10        torchvision CIFAR-10 from dataset.root
    synthetic      seeded Gaussian inputs of any shape, labels from a fixed random linear map
    text           the Python standard library's own source as byte tokens, split by document
                   into train/validation/test windows of dataset.context tokens (corpus.py)
    custom         dataset.target="pkg.module.callable" returning {split: (inputs, labels),
                   a torch Dataset of (input, label) items, or a DataLoader}
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from landscape_hpc.config import DatasetConfig
from landscape_hpc.corpus import VOCAB, load_text
from landscape_hpc.engine.data import RESIDENT_MB, Streamed
from landscape_hpc.errors import UserError, check_at_most, check_choice

#: samples per batch of a custom Dataset too large to hold, streamed through a DataLoader
STREAM_BATCH = 256

DATASET_NAMES: tuple[str, ...] = (
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "synthetic",
    "text",
    "custom",
)

# Per-channel mean and std of the training images scaled to [0, 1] (the usual constants).
_TORCHVISION_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
#: the most memory a synthetic data set may take (issue 33, limits stated): it is drawn into
#: memory whole (float32 inputs, the labelling map, the logits that label them) before any work,
#: so a size past this would exhaust the machine's memory instead of running
MAX_SYNTHETIC_BYTES = 4 << 30
#: the most classes of a synthetic data set: its labels come from a features × classes map, and
#: the model's last layer has an output per class
MAX_SYNTHETIC_CLASSES = 100_000

_TORCHVISION_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}


class Split(NamedTuple):
    """One data split held as two tensors on the same device."""

    inputs: Tensor  # (N, *input_shape) float32, or integer (token ids)
    labels: Tensor  # (N,) int64 class indices (a custom target's: (N, ...))


#: a split of a data set: resident tensors, or (a custom target's DataLoader) streamed
AnySplit = Union[Split, Streamed]


def load_dataset(
    cfg: DatasetConfig, device: torch.device | str = "cpu", streamed: bool = False
) -> dict[str, AnySplit]:
    """Loads the splits named by `cfg` ("train", "test", and any a custom target adds).

    Inputs are normalised, floating ones float32, labels int64; with `cfg.max_samples` each
    split is cut to the same seeded random subset every time. The tensors are moved to
    `device`. `streamed`: a custom target's DataLoader splits are taken (streamed), else refused.
    """
    check_choice("dataset.name", cfg.name, DATASET_NAMES)
    if cfg.name == "digits":
        splits = _load_digits(cfg.seed, cfg.test_fraction)
    elif cfg.name == "synthetic":
        splits = _load_synthetic(cfg)
    elif cfg.name == "text":
        text = load_text(cfg.context, cfg.seed, cfg.test_fraction, cfg.max_documents)
        splits = {name: Split(*pair) for name, pair in text.items()}
    elif cfg.name == "custom":
        splits = _load_custom(cfg.target, dict(cfg.kwargs))
    else:
        splits = _load_torchvision(cfg.name, cfg.root, cfg.download)
    for name, split in splits.items():
        if isinstance(split, Streamed) and not streamed:
            raise UserError(
                f"dataset.target={cfg.target}: split {name!r} is streamed (a DataLoader, or a "
                f"Dataset over {RESIDENT_MB} MiB); only the surface command streams data: return "
                "(inputs, labels) tensors or a Dataset that fits for this command"
            )
        if isinstance(split, Streamed) and cfg.max_samples is not None:
            raise UserError(
                f"dataset.max_samples={cfg.max_samples} cannot cut the streamed split {name!r} "
                "(a DataLoader): cut it in the loader, or set dataset.max_samples=null"
            )
    if cfg.max_samples is not None:
        splits = {name: subset(split, cfg.max_samples, cfg.seed) for name, split in splits.items()}
    return {
        name: s.to(torch.device(device))
        if isinstance(s, Streamed)
        else Split(s.inputs.to(device), s.labels.to(device))
        for name, s in splits.items()
    }


def subset(split: Split, max_samples: int, seed: int) -> Split:
    """A seeded random subset of at most `max_samples` samples, kept in their original order."""
    if max_samples < 1:
        raise UserError(f"dataset.max_samples={max_samples} must be at least 1 (or null for all)")
    n = len(split.labels)
    if n <= max_samples:
        return split
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(n, generator=generator)[:max_samples].sort().values
    keep = keep.to(split.labels.device)
    return Split(split.inputs[keep], split.labels[keep])


def num_classes(cfg: DatasetConfig, splits: dict[str, AnySplit]) -> int:
    """Number of classes: known for the named data sets, else the largest label + 1 of the
    resident splits (dataset.num_classes where every split is streamed: a stream is not read
    to find it)."""
    if cfg.name == "synthetic":
        return cfg.num_classes
    if cfg.name in _TORCHVISION_CLASSES:
        return _TORCHVISION_CLASSES[cfg.name]
    if cfg.name == "text":
        return VOCAB  # the token ids a language model predicts
    labelled = [s.labels for s in splits.values() if isinstance(s, Split) and len(s.labels)]
    if not labelled:
        return cfg.num_classes
    return int(max(int(labels.max()) for labels in labelled)) + 1


def split_size(split: AnySplit) -> int | None:
    """Samples of a split; of a streamed one, its DataLoader's Dataset's length (None if not
    known before a full read)."""
    if isinstance(split, Split):
        return len(split.labels)
    dataset = getattr(split.source, "dataset", None)
    return len(dataset) if hasattr(dataset, "__len__") else None


def dataset_attrs(cfg: DatasetConfig, splits: dict[str, AnySplit]) -> dict[str, Any]:
    """Name and per-split sample counts (where known), for the attributes of result files.

    Example: {"dataset": "digits", "n_train": 1437, "n_test": 360}.
    """
    attrs: dict[str, Any] = {"dataset": cfg.name}
    if cfg.name == "custom":
        attrs["dataset_target"] = cfg.target
    if cfg.name == "text":
        attrs["dataset_context"] = cfg.context
    if cfg.max_samples is not None:
        attrs["dataset_max_samples"] = cfg.max_samples
    for name, split in splits.items():
        if split_size(split) is not None:
            attrs[f"n_{name}"] = split_size(split)
    return attrs


def _load_digits(seed: int, test_fraction: float) -> dict[str, Split]:
    """scikit-learn's digits: (N, 1, 8, 8) in [0, 1], standardised with the train split's stats."""
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"dataset.test_fraction={test_fraction} must lie strictly between 0 and 1")
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0  # (1797, 8, 8), 0..16
    images = images.unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    n = len(labels)
    n_test = math.ceil(test_fraction * n)  # as scikit-learn's train_test_split rounds
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    return {
        "train": Split(images[train_idx], labels[train_idx]),
        "test": Split(images[test_idx], labels[test_idx]),
    }


def _load_torchvision(name: str, root: str | None, download: bool) -> dict[str, Split]:
    """MNIST, FashionMNIST or CIFAR-10 built straight from the data sets' `.data` arrays."""
    import torchvision

    if root is None:
        raise UserError(
            f"dataset {name} needs a folder: set dataset.root=<folder> "
            f"(add dataset.download=true to fetch it there)"
        )
    dataset_class = {
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
    }[name]
    folder = Path(root).expanduser()
    mean, std = _TORCHVISION_STATS[name]
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    splits = {}
    for split, is_train in (("train", True), ("test", False)):
        try:
            dataset = dataset_class(str(folder), train=is_train, download=download)
        except (RuntimeError, OSError) as err:  # files missing or corrupt; download failed
            if download:
                raise UserError(
                    f"could not download dataset {name} into {folder.resolve()} "
                    f"({type(err).__name__}: {str(err).strip()}). Without network, copy the files "
                    f"there by hand (torchvision's layout) and point dataset.root=<folder> at it"
                ) from err
            raise UserError(
                f"dataset {name} ({split} split) not found or incomplete in {folder.resolve()}. "
                f"Point dataset.root=<folder> at the folder holding it (torchvision's layout), "
                f"or set dataset.download=true to fetch it there"
            ) from err
        images = torch.as_tensor(np.asarray(dataset.data))  # uint8 (N, H, W) or (N, H, W, C)
        if images.dim() == 3:
            images = images.unsqueeze(1)  # (N, 1, H, W)
        else:
            images = images.permute(0, 3, 1, 2)  # (N, C, H, W)
        inputs = (images.float() / 255.0 - mean_t) / std_t
        labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
        splits[split] = Split(inputs.contiguous(), labels)
    return splits


def _load_synthetic(cfg: DatasetConfig) -> dict[str, Split]:
    """Standard-normal inputs; label = argmax of a fixed random linear map, so it is learnable.

    The map, the train and the test inputs come from three independent streams of `cfg.seed`,
    so changing `num_train` leaves the test split unchanged.
    """
    shape = tuple(int(d) for d in cfg.shape)
    if not shape or min(shape) < 1:
        raise UserError(f"dataset.shape={list(shape)} must be a non-empty list of positive sizes")
    if cfg.num_classes < 2:
        raise UserError(f"dataset.num_classes={cfg.num_classes} must be at least 2")
    for key, count in (("num_train", cfg.num_train), ("num_test", cfg.num_test)):
        if count < 1:
            raise UserError(f"dataset.{key}={count} must be at least 1")
    check_at_most(
        "dataset.num_classes",
        cfg.num_classes,
        MAX_SYNTHETIC_CLASSES,
        "the labels come from a features × classes map and the model has an output per class",
    )
    features = math.prod(shape)
    n = cfg.num_train + cfg.num_test
    # float32 inputs, the (D, C) map, the largest split's (N, C) float32 logits, int64 labels
    need = 4 * (n * features + features * cfg.num_classes) + 12 * max(cfg.num_train, cfg.num_test)
    need += 4 * max(cfg.num_train, cfg.num_test) * cfg.num_classes
    if need > MAX_SYNTHETIC_BYTES:
        raise UserError(
            f"dataset=synthetic with dataset.shape={list(shape)} ({features} features), "
            f"dataset.num_train={cfg.num_train}, dataset.num_test={cfg.num_test} and "
            f"dataset.num_classes={cfg.num_classes} needs about {need / 2**30:.3g} GiB of memory "
            f"(float32 inputs, the labelling map, the logits), over the limit of "
            f"{MAX_SYNTHETIC_BYTES / 2**30:g} GiB: the data set is drawn into memory whole; "
            "give a smaller dataset.num_train, dataset.num_test or dataset.shape"
        )
    teacher = np.random.default_rng([cfg.seed, 0]).standard_normal(
        (features, cfg.num_classes), dtype=np.float32
    )  # (D, C)
    splits = {}
    for stream, (split, count) in enumerate((("train", cfg.num_train), ("test", cfg.num_test)), 1):
        rng = np.random.default_rng([cfg.seed, stream])
        inputs = rng.standard_normal((count, *shape), dtype=np.float32)  # (N, *shape)
        labels = (inputs.reshape(count, features) @ teacher).argmax(axis=1)  # (N,)
        splits[split] = Split(torch.from_numpy(inputs), torch.from_numpy(labels).long())
    return splits


def _load_custom(target: str | None, kwargs: dict[str, Any]) -> dict[str, AnySplit]:
    """Calls the user's `target(**kwargs)` and turns each returned split into tensors."""
    if not target:
        raise UserError('dataset=custom needs dataset.target="package.module.callable"')
    make_splits = _import_callable(target)
    try:
        returned = make_splits(**kwargs)
    except Exception as err:
        raise UserError(
            f"dataset.target={target} raised {type(err).__name__}: {err} (called with "
            f"dataset.kwargs={kwargs})"
        ) from err
    if not isinstance(returned, dict):
        raise UserError(
            f"dataset.target={target} returned {type(returned).__name__}; it must return a dict "
            f'{{"train": ..., "test": ...}} of (inputs, labels) pairs, torch Datasets or '
            "DataLoaders"
        )
    missing = [name for name in ("train", "test") if name not in returned]
    if missing:
        raise UserError(
            f"dataset.target={target} returned splits {sorted(returned)}; it must also return "
            f"{', '.join(missing)}"
        )
    return {str(name): _as_split(target, str(name), value) for name, value in returned.items()}


def _import_callable(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.rpartition(".")
    if not module_name:
        raise UserError(f'dataset.target={target} must read "package.module.callable"')
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(
            f"dataset.target={target}: cannot import module {module_name} ({err}); is it on "
            f"PYTHONPATH?"
        ) from err
    found = getattr(module, attr, None)
    if not callable(found):
        raise UserError(f"dataset.target={target}: module {module_name} has no callable {attr}")
    return found


def _as_split(target: str, name: str, value: Any) -> AnySplit:
    """(inputs, labels) arrays or tensors, or a torch Dataset of (input, label) items -> Split;
    a DataLoader (any re-iterable of batches), or a Dataset over RESIDENT_MB -> Streamed."""
    where = f"dataset.target={target}: split {name!r}"
    if isinstance(value, Dataset) and _too_large(value):
        return Streamed(DataLoader(value, batch_size=STREAM_BATCH), None, name)
    streams = not isinstance(value, (Dataset, tuple, list, np.ndarray, Tensor, dict))
    if streams and isinstance(value, Iterable):
        return Streamed(value, None, name)  # refuses a one-shot iterator
    try:
        if isinstance(value, Dataset):
            items = [value[i] for i in range(len(value))]  # type: ignore[arg-type]
            inputs = torch.stack([torch.as_tensor(x) for x, _ in items])
            labels = torch.stack([torch.as_tensor(y) for _, y in items])
        else:
            inputs, labels = value
            inputs, labels = torch.as_tensor(inputs), torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as err:
        raise UserError(
            f"{where} must be an (inputs, labels) pair, a torch Dataset of (input, label) items "
            f"or a DataLoader ({type(err).__name__}: {err})"
        ) from err
    if labels.dim() < 1 or len(labels) != len(inputs):
        raise UserError(
            f"{where} has inputs of shape {tuple(inputs.shape)} and labels of shape "
            f"{tuple(labels.shape)}; labels must be (N, ...) with N = len(inputs)"
        )
    if inputs.is_floating_point():  # integer inputs (token ids) stay integers
        inputs = inputs.float()
    labels = labels.float() if labels.is_floating_point() else labels.long()
    return Split(inputs.contiguous(), labels)


def _too_large(dataset: Dataset) -> bool:
    """Whether a map-style Dataset's items, stacked, would pass RESIDENT_MB (its first item's
    bytes times its length); an iterable one is always streamed."""
    if not hasattr(dataset, "__len__"):
        return True
    if len(dataset) == 0:  # type: ignore[arg-type]
        return False
    first = dataset[0]
    parts = first if isinstance(first, (tuple, list)) else (first,)
    size = 0
    for part in parts:
        try:
            t = torch.as_tensor(part)
        except (TypeError, ValueError, RuntimeError):
            return False  # the stacking reports it
        size += t.numel() * t.element_size()
    return size * len(dataset) > RESIDENT_MB * 2**20  # type: ignore[arg-type]
