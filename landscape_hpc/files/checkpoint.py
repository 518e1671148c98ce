"""Checkpoints: write a model's state_dict with its metadata, read one back and load it into a
model, with actionable messages.

Files are read with `weights_only=True` unless the user says they trust the file: a checkpoint
is a pickle, and unpickling an untrusted file can run arbitrary code. Layouts accepted are the
ones the field writes: a plain state_dict, a dict holding it under "state_dict"
(tomgoldstein/loss-landscape `cifar10/main.py`) or "model" (many training scripts), a whole
pickled `nn.Module` (trusted files only), each with or without DataParallel's "module." prefix.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape_hpc.errors import UserError
from landscape_hpc.files.finite import check_finite
from landscape_hpc.params import OPTIONAL_SUFFIXES, layout_diff
from landscape_hpc.paths import require_regular

#: keys under which training scripts nest the state_dict, tried in this order
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model")

#: DataParallel / DistributedDataParallel prefix on every key
DATA_PARALLEL_PREFIX = "module."

#: how many keys of each kind a mismatch message lists before giving a count
MAX_LISTED_KEYS = 10


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (stored with every surface to pin the origin)."""
    require_regular(path)  # a FIFO would block the read forever
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_state_dict_file(
    path: str, trust: bool = False, key: str = "model.checkpoint"
) -> dict[str, Tensor]:
    """Reads the state_dict held in checkpoint `path`, on the CPU.

    `trust=False` loads with `weights_only=True` (tensors and plain containers only); a file
    that needs more is refused with a UserError telling how to allow it. Raises UserError naming
    the path and `model.checkpoint` for a missing or unreadable file or one that holds no
    state_dict. `key`: the config key that named the file (directions.model2, optima, ...).
    """
    require_regular(path, key)  # a FIFO, device or directory: refused before any open
    if not os.path.isfile(path):
        raise UserError(
            f"{key}={path!r}: no such file; give the path of a saved state_dict "
            "(relative paths are taken from the current directory)"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not trust)
    # A damaged file can fail anywhere in the unpickler (IndexError, KeyError, EOFError, ...) and
    # a trusted one may name classes that no longer import: every failure is the file's.
    except Exception as err:
        if not trust and _refused_by_weights_only(err):
            raise _needs_trust(path, err, key) from err
        raise _unreadable(path, err, key) from err
    state = _strip_data_parallel_prefix(_find_state_dict(loaded, path, key))
    check_finite(
        state,
        f"{key}={path!r}",
        "a net with NaN/inf weights has no loss surface: pass "
        "the checkpoint of a run that did not diverge",
    )
    return state


def load_into(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Loads `state` into `model` strictly (every key, every shape), casting to the model's dtype.

    On a mismatch nothing is loaded and the UserError lists the missing keys, the unexpected
    keys and the shape mismatches: the usual cause is a checkpoint made for another
    architecture. `source` names where the state came from (a path) in the message.
    BatchNorm's `num_batches_tracked` counter may be absent: checkpoints from PyTorch < 0.4 (as
    loss-landscape's published nets) do not have it, and PyTorch fills it in.
    """
    missing, unexpected, shapes = layout_diff(model.state_dict(), state, OPTIONAL_SUFFIXES)
    mismatched = [f"{k}: checkpoint {got} vs model {want}" for k, want, got in shapes]
    if missing or unexpected or mismatched:
        parts = [
            _listing("missing keys", missing),
            _listing("unexpected keys", unexpected),
            _listing("shape mismatches", mismatched),
        ]
        raise UserError(
            f"checkpoint {source!r} does not fit model {type(model).__name__}: it was made for "
            "another architecture (or other model.kwargs / input shape / number of classes); "
            "check model=... and model.kwargs.\n" + "\n".join(part for part in parts if part)
        )
    model.load_state_dict(dict(state), strict=True)


def _find_state_dict(
    loaded: Any, path: str, config_key: str = "model.checkpoint"
) -> dict[str, Tensor]:
    """The state_dict inside a loaded checkpoint object, whatever the layout."""
    if isinstance(loaded, nn.Module):
        return loaded.state_dict()
    if isinstance(loaded, Mapping) and not _is_state_dict(loaded):
        for key in WRAPPER_KEYS:
            inner = loaded.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
            if isinstance(inner, Mapping) and _is_state_dict(inner):
                return dict(inner)
    if isinstance(loaded, Mapping) and _is_state_dict(loaded) and loaded:
        return dict(loaded)
    raise UserError(
        f"{config_key}={path!r} holds no state_dict: expected a dict of tensors, or a dict "
        f"holding one under {' or '.join(repr(key) for key in WRAPPER_KEYS)}; found "
        f"{_describe(loaded)}. Save the weights with torch.save(model.state_dict(), path)"
    )


def _is_state_dict(candidate: Mapping[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, Tensor) for k, v in candidate.items())


def _strip_data_parallel_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drops the "module." that nn.DataParallel puts on every key (only when all keys have it)."""
    if state and all(key.startswith(DATA_PARALLEL_PREFIX) for key in state):
        return {key[len(DATA_PARALLEL_PREFIX) :]: value for key, value in state.items()}
    return state


def _refused_by_weights_only(err: Exception) -> bool:
    message = str(err)
    return isinstance(err, (pickle.UnpicklingError, RuntimeError)) and (
        "weights only" in message.lower() or "weights_only" in message
    )


def _needs_trust(path: str, err: Exception, key: str) -> UserError:
    return UserError(
        f"{key}={path!r} cannot be read with weights_only=True "
        f"({_torch_reason(err)}): the file needs unpickling of arbitrary Python objects, not "
        "only tensors (or it is not a checkpoint at all). Unpickling can run code stored in the "
        "file: pass model.trust_checkpoint=true only for files you trust, or re-save the weights "
        "with torch.save(model.state_dict(), path)"
    )


def _unreadable(path: str, err: Exception, key: str) -> UserError:
    return UserError(
        f"{key}={path!r} could not be read as a PyTorch checkpoint "
        f"({type(err).__name__}: {_torch_reason(err)}); check that it is a complete file "
        "written by torch.save (a trusted pickle also needs the classes it names to import)"
    )


def _torch_reason(err: Exception) -> str:
    """The gist of torch's error: its weights_only refusals bury the reason in a long text."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    marker = "WeightsUnpickler error:"
    for index, line in enumerate(lines):
        if marker in line:
            reason = line.split(marker, 1)[1].strip()
            if not reason and index + 1 < len(lines):
                reason = lines[index + 1]
            return reason.split(". ")[0]
    return lines[0].split(". ")[0] if lines else type(err).__name__


def _describe(loaded: Any) -> str:
    if isinstance(loaded, Mapping):
        keys = list(loaded)[:MAX_LISTED_KEYS]
        types = sorted({type(v).__name__ for v in loaded.values()})
        return f"a dict with keys {keys} and values of type {', '.join(types) or 'none'}"
    return f"an object of type {type(loaded).__name__}"


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:MAX_LISTED_KEYS])
    more = f" ... and {len(items) - MAX_LISTED_KEYS} more" if len(items) > MAX_LISTED_KEYS else ""
    return f"  {title} ({len(items)}): {shown}{more}"


def write_checkpoint(path: Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """A checkpoint `torch.load(path, weights_only=True)` reads back: {"state_dict": the model's
    tensors on the CPU, **meta} (train: epoch, lr, model, train_acc, test_acc)."""
    state_dict = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state_dict, **meta}, path)
