"""The engine's data protocol: data as the user has it, as splits of normalised batches.

A landscape evaluates one network at many points on the same data, so the data are best held
on the device once (`Resident`: batches are slices, today's fast path). Data too large for
that are `Streamed`: a re-iterable of batches (a DataLoader), each batch moved to the device
as it comes and dropped after use; the engine reads a streamed split once per pass of points
(every point of a pass runs on each batch), so the data are read `passes` times, not
`points` times.

`as_splits(data, device, batch_size)` takes

    Tensor                       one split "train", inputs only (no labels)
    (inputs, labels) tuple       one split "train": inputs a Tensor of any dtype (integer token ids
                                 stay integers) or a dict of Tensors sharing the leading dim N,
                                 labels a Tensor (N, ...) or None; numpy arrays are taken too
    {name: any form here}        a dict of splits (a Mapping at the top is always read as splits:
                                 keyword inputs go one level down, {"train": {"input_ids": ...}})
    {key: Tensor} (a split)      keyword inputs and labels by the batch rule, resident
    map-style Dataset            read once through a DataLoader at the engine's batch size and
                                 kept resident when len × the first item's bytes is at most
                                 RESIDENT_MB and its items stack; else streamed the same way
    IterableDataset              streamed through a DataLoader at the engine's batch size
    DataLoader, list of batches, streamed as it is (its own batch size, its own collate)
    any re-iterable of batches
    Resident, Streamed           as they are

A one-shot iterator or generator is refused: a surface reads its data many times.

The batch rule (the one place it is written): a batch that is

    a Tensor          -> inputs, no target;
    a tuple or list   -> (inputs, target) from its first two items (further items ignored; one
                         item: inputs only);
    a Mapping         -> target = the value of the first of LABEL_KEYS it holds ("labels",
                         "label", "target", "targets"), keyword inputs = every other key: the
                         model is called model(**inputs), so a HF model never sees the labels
                         (and computes no loss of its own);
    anything else     -> a UserTypeError naming the split.

The model is called model(inputs) for Tensor inputs, model(**inputs) for keyword inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from landscape_hpc.errors import UserError, UserTypeError

#: the keys of a Mapping batch read as its target, in this order (the first present wins)
LABEL_KEYS = ("labels", "label", "target", "targets")
#: a map-style Dataset is kept resident on the device up to this size (MiB), else streamed
RESIDENT_MB = 512

#: what a model takes: one Tensor, or keyword Tensors
Inputs = Union[Tensor, dict[str, Tensor]]


def batches(n: int, batch_size: int) -> list[slice]:
    """[0, n) in slices of at most batch_size."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def map_inputs(inputs: Inputs, fn: Callable[[Tensor], Tensor]) -> Inputs:
    """fn applied to the Tensor, or to every Tensor of keyword inputs."""
    if isinstance(inputs, Mapping):
        return {key: fn(value) for key, value in inputs.items()}
    return fn(inputs)


def leading_size(inputs: Inputs) -> int:
    """N, the leading dim every input tensor shares."""
    first = next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs
    return int(first.shape[0])


@dataclass(frozen=True)
class Batch:
    """A normalised batch: `inputs` for the model, `target` (None: no labels), `n` samples."""

    inputs: Inputs
    target: Tensor | None
    n: int

    def to(self, device: torch.device | None) -> Batch:
        if device is None:
            return self
        move = lambda t: t.to(device)  # noqa: E731
        target = None if self.target is None else move(self.target)
        return Batch(map_inputs(self.inputs, move), target, self.n)


def _tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic, int, float, list)):
        return torch.as_tensor(np.asarray(value))
    raise UserTypeError(f"{what} is a {type(value).__name__}; give a torch Tensor")


def normalise(raw: Any, split: str) -> Batch:
    """One batch as the user's data yield it -> Batch, by the batch rule (module docstring)."""
    where = f"split {split!r}"
    if isinstance(raw, Batch):  # normalised already (a probe's kept batches)
        return raw
    if isinstance(raw, Tensor):
        inputs, target = raw, None
    elif isinstance(raw, (tuple, list)):
        if not raw:
            raise UserTypeError(f"{where} yielded an empty {type(raw).__name__} as a batch")
        inputs, target = raw[0], (raw[1] if len(raw) > 1 else None)
    elif isinstance(raw, Mapping):
        key = next((k for k in LABEL_KEYS if k in raw), None)
        target = None if key is None else raw[key]
        inputs = {str(k): v for k, v in raw.items() if k != key}
        if not inputs:
            raise UserTypeError(f"{where}: a dict batch holds only its labels {key!r}, no inputs")
    else:
        raise UserTypeError(
            f"{where} yielded a {type(raw).__name__} as a batch; the engine reads a Tensor, an "
            f"(inputs, labels) tuple or a dict (labels under one of {', '.join(LABEL_KEYS)}): "
            "give the DataLoader a collate_fn that returns one of these"
        )
    if isinstance(inputs, Mapping):
        inputs = {str(k): _tensor(v, f"{where}: input {k!r}") for k, v in inputs.items()}
    else:
        inputs = _tensor(inputs, f"{where}: the inputs")
    target = None if target is None else _tensor(target, f"{where}: the labels")
    sizes = {leading_size({k: v}) if v.dim() else 0 for k, v in _named(inputs).items()}
    if target is not None:
        sizes.add(int(target.shape[0]) if target.dim() else 0)
    if len(sizes) != 1 or 0 in sizes:
        shapes = {k: tuple(v.shape) for k, v in _named(inputs).items()}
        if target is not None:
            shapes["labels"] = tuple(target.shape)
        raise UserError(
            f"{where}: inputs and labels must share the leading (batch) dim N; got shapes {shapes}"
        )
    return Batch(inputs, target, sizes.pop())


def _named(inputs: Inputs) -> dict[str, Tensor]:
    return dict(inputs) if isinstance(inputs, Mapping) else {"inputs": inputs}


def signature_of(batch: Batch) -> tuple:
    """Shapes and dtypes of a batch, without N: what decides the speed of a forward."""
    parts = [(k, tuple(v.shape[1:]), str(v.dtype)) for k, v in _named(batch.inputs).items()]
    if batch.target is not None:
        parts.append(("target", tuple(batch.target.shape[1:]), str(batch.target.dtype)))
    return tuple(parts)


class Resident:
    """A split held as tensors on one device; batches are slices of them (no copies). It unpacks
    as the (inputs, target) pair the commands have always passed: `inputs, labels = split`."""

    streamed = False

    def __init__(self, inputs: Inputs, target: Tensor | None = None, name: str = "train"):
        self.name = name
        whole = normalise((inputs, target), name)
        self.inputs, self.target, self.n = whole.inputs, whole.target, whole.n
        self._whole = whole

    def __iter__(self) -> Iterator[Inputs | Tensor | None]:
        return iter((self.inputs, self.target))

    def __getitem__(self, index: int) -> Inputs | Tensor | None:
        return (self.inputs, self.target)[index]

    @property
    def device(self) -> torch.device:
        return next(iter(_named(self.inputs).values())).device

    def to(self, device: torch.device | None) -> Resident:
        if device is None or device == self.device:
            return self
        whole = self._whole.to(device)
        return Resident(whole.inputs, whole.target, self.name)

    def batch(self, part: slice) -> Batch:
        target = None if self.target is None else self.target[part]
        inputs = map_inputs(self.inputs, lambda t: t[part])
        return Batch(inputs, target, len(range(*part.indices(self.n))))

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The split in slices of at most batch_size; one batch: the tensors themselves."""
        if self.n <= batch_size:
            yield self._whole
            return
        for part in batches(self.n, batch_size):
            yield self.batch(part)

    def sample(self) -> Inputs:
        """The inputs of one sample (no batch dim), for the memory probes."""
        return map_inputs(self.inputs, lambda t: t[0])

    def head(self, count: int, batch_size: int) -> Resident:
        """The first `count` batches of batch_size samples (autotune's probe)."""
        cut = slice(0, count * batch_size)
        part = self.batch(cut)
        return Resident(part.inputs, part.target, self.name)

    def map_inputs(self, fn: Callable[[Tensor], Tensor]) -> Resident:
        return Resident(map_inputs(self.inputs, fn), self.target, self.name)

    def signature(self) -> tuple:
        return ("resident", self.n, signature_of(self._whole))


class Streamed:
    """A split read batch after batch from a re-iterable (a DataLoader, a list of batches):
    each batch normalised, moved to `device` as it comes and dropped after use. The first
    batch is kept (one partial read) for what must be known before a pass: a sample for the
    memory probes, the shapes for autotune's fingerprint."""

    streamed = True

    def __init__(
        self,
        source: Iterable,
        device: torch.device | str | None = None,
        name: str = "train",
        transform: Callable[[Tensor], Tensor] | None = None,
    ):
        if isinstance(source, Iterator):
            raise UserError(
                f"split {name!r} is a one-shot {type(source).__name__}: the engine reads its data "
                "once per pass of points; give a DataLoader, a Dataset or a list of batches"
            )
        self.source, self.name, self.transform = source, name, transform
        self.device = None if device is None else torch.device(device)
        self._first: Batch | None = None

    def _prepare(self, raw: Any) -> Batch:
        batch = normalise(raw, self.name).to(self.device)
        if self.transform is not None:
            batch = Batch(map_inputs(batch.inputs, self.transform), batch.target, batch.n)
        return batch

    def batches(self, batch_size: int | None = None) -> Iterator[Batch]:
        """One read of the source (its own batch size; `batch_size` is not used)."""
        count = 0
        for raw in self.source:
            count += 1
            yield self._prepare(raw)
        if count == 0:
            raise UserError(
                f"split {self.name!r} yielded no batches (an empty DataLoader or list); give it "
                "data, or leave the split out"
            )

    def first(self) -> Batch:
        """The first batch (read once, kept)."""
        if self._first is None:
            self._first = next(iter(self.batches()))
        return self._first

    def sample(self) -> Inputs:
        return map_inputs(self.first().inputs, lambda t: t[0])

    def head(self, count: int, batch_size: int | None = None) -> Streamed:
        """The first `count` batches, kept in a list on the device (autotune's probe: timing
        never reads the whole stream)."""
        first = list(itertools.islice(self.batches(), count))
        return Streamed(first, None, self.name)

    def map_inputs(self, fn: Callable[[Tensor], Tensor]) -> Streamed:
        before = self.transform
        chained = fn if before is None else (lambda t: fn(before(t)))
        return Streamed(self.source, self.device, self.name, chained)

    def signature(self) -> tuple:
        return ("streamed", signature_of(self.first()))

    def to(self, device: torch.device | None) -> Streamed:
        if device is None or (self.device is not None and torch.device(device) == self.device):
            return self
        return Streamed(self.source, device, self.name, self.transform)


#: a split of the engine: tensors on the device, or a stream of batches
Split = Union[Resident, Streamed]


def _item_bytes(item: Any, name: str) -> int:
    batch = normalise(default_collate([item]), name)
    tensors = list(_named(batch.inputs).values()) + ([] if batch.target is None else [batch.target])
    return sum(t.numel() * t.element_size() for t in tensors)


def _concat(parts: Sequence[Batch], name: str) -> Resident | None:
    """Batches joined into one resident split; None where their shapes do not stack."""
    try:
        if isinstance(parts[0].inputs, Mapping):
            inputs: Inputs = {k: torch.cat([p.inputs[k] for p in parts]) for k in parts[0].inputs}
        else:
            inputs = torch.cat([p.inputs for p in parts])
        target = None if parts[0].target is None else torch.cat([p.target for p in parts])
    except (RuntimeError, TypeError, KeyError):
        return None
    return Resident(inputs, target, name)


def _from_dataset(ds: Dataset, device: torch.device | None, batch_size: int, name: str) -> Split:
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    if isinstance(ds, IterableDataset) or not hasattr(ds, "__len__"):
        return Streamed(loader, device, name)
    n = len(ds)  # type: ignore[arg-type]
    if n == 0:
        raise UserError(f"split {name!r} is an empty Dataset; give it data, or leave it out")
    if n * _item_bytes(ds[0], name) > RESIDENT_MB * 2**20:
        return Streamed(loader, device, name)
    stream = Streamed(loader, device, name)
    return _concat(list(stream.batches()), name) or stream


def as_split(
    value: Any, device: torch.device | str | None, batch_size: int, name: str = "train"
) -> Split:
    """One split from any form the module docstring lists."""
    device = None if device is None else torch.device(device)
    if isinstance(value, (Resident, Streamed)):
        return value.to(device)
    if isinstance(value, (Tensor, np.ndarray)):
        return Resident(_tensor(value, f"split {name!r}"), None, name).to(device)
    if isinstance(value, tuple):
        if len(value) != 2:
            raise UserError(
                f"split {name!r} is a tuple of {len(value)} items; give (inputs, labels) "
                "(labels may be None), or a list of batches"
            )
        return Resident(*value, name=name).to(device)
    if isinstance(value, Mapping):
        whole = normalise(value, name)
        return Resident(whole.inputs, whole.target, name).to(device)
    if isinstance(value, Dataset):  # items are samples: batched by a DataLoader
        return _from_dataset(value, device, batch_size, name)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return Streamed(value, device, name)
    raise UserTypeError(
        f"split {name!r} is a {type(value).__name__}; give a Tensor, an (inputs, labels) tuple, "
        "a dict of Tensors, a torch Dataset or a DataLoader (any re-iterable of batches)"
    )


def as_splits(
    data: Any,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    names: Sequence[str] | None = None,
) -> dict[str, Split]:
    """{split: Split} from data as the user has it (module docstring); `names`: only these
    splits, in this order (a UserError naming a missing one)."""
    if isinstance(data, Mapping):
        splits = {str(k): as_split(v, device, batch_size, str(k)) for k, v in data.items()}
    else:
        splits = {"train": as_split(data, device, batch_size, "train")}
    if not splits:
        raise UserError("data holds no splits; give e.g. {'train': (inputs, labels)}")
    if names is None:
        return splits
    missing = [n for n in names if n not in splits]
    if missing:
        raise UserError(
            f"split {missing[0]!r} is not in the data (it holds {', '.join(splits)}); ask for "
            "one of those, or add it to the data"
        )
    return {n: splits[n] for n in names}
