"""The embedded text corpus (`dataset=text`): the Python standard library's own source, as bytes.

Nothing is downloaded: the documents are the top-level `*.py` files of the running Python's
standard library (`sysconfig.get_paths()["stdlib"]`, not recursive, so no test suites or
packages), sorted by file name. The same Python version gives the same corpus on every machine
(CPython 3.11.7: 168 files, 4.7 MB); `corpus_sha256` names the exact bytes.

Tokens are bytes (ids 0..255, UTF-8 as stored) plus PAD = 256, so VOCAB = 257 and no tokenizer is
needed. The split is by document, seeded: the documents are shuffled by `seed`, then the first
`test_fraction` of them are the test split, the next as many the validation split, the rest
train; so no window of a held-out file was seen in training. Each document is cut into
consecutive windows of `context` tokens; the last, shorter window of a document is padded with
PAD and its padded positions get label IGNORE_INDEX (-100), so the `lm` loss skips them. A split
is (inputs (N, context) int64, labels (N, context) int64): labels = inputs except -100 at the
padding; the `lm` loss shifts them (logits[:, t] predicts token t+1).
"""

from __future__ import annotations

import hashlib
import math
import sysconfig
from pathlib import Path

import torch
from torch import Tensor

from landscape_hpc.errors import UserError

#: byte tokens 0..255 and the padding id
PAD = 256
VOCAB = 257
IGNORE_INDEX = -100


def corpus_files() -> list[Path]:
    """The documents: the standard library's top-level .py files, sorted by name."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"), key=lambda p: p.name)
    if not files:
        raise UserError(f"dataset=text: no *.py files under {root} (this Python's stdlib)")
    return files


def corpus_sha256(files: list[Path]) -> str:
    """SHA-256 over the names and bytes of the documents (which corpus a run saw)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def windows(document: bytes, context: int) -> tuple[Tensor, Tensor]:
    """One document as (inputs, labels) windows of `context` tokens, (n, context) each; the last
    window padded with PAD (label -100). A one-byte tail is dropped: it predicts nothing."""
    ids = torch.frombuffer(bytearray(document), dtype=torch.uint8).long()  # (L,)
    n = math.ceil(len(ids) / context)
    if n and len(ids) - (n - 1) * context < 2:
        n -= 1  # the tail would be one token: no next token to predict
    padded = torch.full((n * context,), PAD, dtype=torch.int64)
    padded[: min(len(ids), n * context)] = ids[: n * context]
    inputs = padded.view(n, context)  # (n, T)
    labels = inputs.masked_fill(inputs == PAD, IGNORE_INDEX)
    return inputs, labels


def split_documents(
    n_files: int, seed: int, test_fraction: float, max_documents: int | None
) -> dict[str, list[int]]:
    """Which documents (indices into corpus_files(), ascending) each split holds."""
    order = torch.randperm(n_files, generator=torch.Generator().manual_seed(seed)).tolist()
    if max_documents is not None:
        if max_documents < 3:
            raise UserError(
                f"dataset.max_documents={max_documents} must be at least 3 (one per split), or "
                "null for all"
            )
        order = order[:max_documents]
    n_held = max(1, round(test_fraction * len(order)))
    return {
        "train": sorted(order[2 * n_held :]),
        "validation": sorted(order[n_held : 2 * n_held]),
        "test": sorted(order[:n_held]),
    }


def load_text(
    context: int, seed: int, test_fraction: float, max_documents: int | None
) -> dict[str, tuple[Tensor, Tensor]]:
    """The train/validation/test splits of the corpus (module docstring) as (inputs, labels)."""
    if context < 2:
        raise UserError(f"dataset.context={context} must be at least 2 tokens")
    if not 0.0 < test_fraction < 0.5:
        raise UserError(
            f"dataset.test_fraction={test_fraction} must lie strictly between 0 and 0.5 for "
            "dataset=text (that fraction of documents each for test and validation)"
        )
    files = corpus_files()
    splits = {}
    for name, picked in split_documents(len(files), seed, test_fraction, max_documents).items():
        pieces = [windows(files[i].read_bytes(), context) for i in picked]
        splits[name] = (
            torch.cat([p[0] for p in pieces]),  # (N, T)
            torch.cat([p[1] for p in pieces]),  # (N, T)
        )
    return splits


def unigram_entropy(labels: Tensor) -> float:
    """Entropy (nats per token) of the byte frequencies of `labels` (-100 skipped): the loss of
    the best model that ignores context, the bar a language model must clear."""
    counted = labels[labels != IGNORE_INDEX]
    p = torch.bincount(counted, minlength=VOCAB).double() / len(counted)
    p = p[p > 0]
    return float(-(p * p.log()).sum())
