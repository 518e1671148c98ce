"""The embedded text corpus (corpus.py, dataset=text) and gpt_tiny (models/gpt.py): the split by
document, the windows and their padding, the causal transformer's per-token loss against a
hand-written cross-entropy through every engine strategy, and a short training run."""

import signal
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from mpi_helpers import (
    OutputWatch,
    assert_same_surface,
    check_ok,
    progress,
    read_surface,
    run_surface,
    surface_argv,
    surface_env,
)

import landscape_hpc as lh
from landscape_hpc.config import DatasetConfig, EngineConfig, ModelConfig, TrainConfig
from landscape_hpc.corpus import (
    IGNORE_INDEX,
    PAD,
    VOCAB,
    corpus_files,
    split_documents,
    unigram_entropy,
    windows,
)
from landscape_hpc.data import load_dataset, num_classes
from landscape_hpc.engine.evaluate import evaluate_points, evaluate_points_loop
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model
from landscape_hpc.train import evaluate, train

T = 16
TEXT = DatasetConfig(name="text", context=T, max_documents=6, max_samples=60)
TINY = {"depth": 1, "width": 32, "heads": 2}


@pytest.fixture(scope="module")
def text():
    return load_dataset(TEXT)


def tiny_gpt(seed: int = 0):
    cfg = ModelConfig(name="gpt_tiny", kwargs=dict(TINY), init_seed=seed)
    return build_model(cfg, (T,), VOCAB)


def test_windows_pad_the_tail_and_ignore_it():
    inputs, labels = windows(b"abcdefghij", 4)  # 10 bytes: windows of 4, 4, 2 (+ 2 pads)
    assert inputs.shape == (3, 4) and inputs.dtype == torch.int64
    assert bytes(inputs[:2].flatten().tolist()) == b"abcdefgh"
    assert inputs[2].tolist() == [ord("i"), ord("j"), PAD, PAD]
    assert labels[2].tolist() == [ord("i"), ord("j"), IGNORE_INDEX, IGNORE_INDEX]
    assert torch.equal(labels[:2], inputs[:2])
    assert windows(b"abcde", 4)[0].shape == (1, 4)  # a one-byte tail predicts nothing: dropped


def test_the_split_is_by_document_seeded_and_partitions_the_documents():
    n = len(corpus_files())
    parts = split_documents(n, seed=0, test_fraction=0.2, max_documents=None)
    docs = [set(v) for v in parts.values()]
    assert sum(map(len, docs)) == n and set().union(*docs) == set(range(n))
    assert len(parts["test"]) == len(parts["validation"]) == round(0.2 * n)
    assert split_documents(n, 0, 0.2, None) == parts  # the same every time
    assert split_documents(n, 1, 0.2, None)["test"] != parts["test"]


def test_each_split_holds_exactly_the_bytes_of_its_documents():
    files = corpus_files()
    parts = split_documents(len(files), 0, 0.2, 6)
    splits = load_dataset(DatasetConfig(name="text", context=T, max_documents=6))
    assert set(splits) == {"train", "validation", "test"}
    for name, picked in parts.items():
        labels = splits[name].labels
        tokens = labels[labels != IGNORE_INDEX].tolist()
        want = b"".join(windows_bytes(files[i].read_bytes()) for i in picked)
        assert bytes(tokens) == want
        assert splits[name].inputs.shape[1] == T


def windows_bytes(document: bytes) -> bytes:
    """The bytes windows() keeps: all, less a final one-byte window."""
    return document[:-1] if len(document) % T == 1 else document


def test_text_refuses_bad_sizes():
    for cfg, key in (
        (DatasetConfig(name="text", context=1), "dataset.context=1"),
        (DatasetConfig(name="text", max_documents=2), "dataset.max_documents=2"),
        (DatasetConfig(name="text", test_fraction=0.6), "dataset.test_fraction=0.6"),
    ):
        with pytest.raises(UserError, match=key):
            load_dataset(cfg)
    assert num_classes(TEXT, {}) == VOCAB


def test_gpt_tiny_is_causal_with_a_tied_head(text):
    model = tiny_gpt()
    keys = list(model.state_dict())
    assert not any("head" in k for k in keys)  # the head is the token embedding
    ids = text["train"].inputs[:3]
    changed = ids.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 256
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert a.shape == (3, T, VOCAB)
    torch.testing.assert_close(a[:, :9], b[:, :9])  # no position sees a later token
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_gpt_tiny_refuses_bad_shapes():
    with pytest.raises(UserError, match="context=8"):
        build_model(ModelConfig(name="gpt_tiny", kwargs={"context": 8}), (T,), VOCAB)
    with pytest.raises(UserError, match="width=30"):
        build_model(ModelConfig(name="gpt_tiny", kwargs={"width": 30, "heads": 4}), (T,), 257)
    with pytest.raises(UserError, match="token ids of shape"):
        build_model(ModelConfig(name="gpt_tiny"), (1, 8, 8), 10)


def _hand_loss(model, state, ids, labels):
    """Per-token cross-entropy written out: logits[:, t] predicts labels[:, t+1], -100 skipped."""
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model(ids).double()[:, :-1]  # (B, T-1, V)
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    logp = torch.log_softmax(logits, -1)[keep]  # (n, V)
    y = target[keep]
    loss = -logp.gather(1, y[:, None]).mean()
    return float(loss), 100.0 * float((logp.argmax(-1) == y).double().mean())


@pytest.mark.parametrize("strategy", ["vmap", "sequential", "threads", "auto", "loop"])
def test_every_strategy_is_the_hand_written_lm_loss_on_gpt_tiny(text, strategy):
    model = tiny_gpt()
    origin = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    basis = [{k: 0.05 * torch.randn(v.shape, generator=g) for k, v in origin.items()}]
    sub = Subspace(origin, basis * 1)
    coords = torch.tensor([[0.0], [0.7], [-1.0]], dtype=torch.float64)
    split = text["validation"]
    padded = (split.labels == IGNORE_INDEX).any(1).nonzero()[:, 0]
    rows = torch.cat([padded[:4], torch.arange(20)])  # some windows end in padding
    ids, labels = split.inputs[rows], split.labels[rows]
    assert (labels == IGNORE_INDEX).any()  # padding is in play
    opts = EngineConfig(batch_size=10, strategy="vmap" if strategy == "loop" else strategy)
    run = evaluate_points_loop if strategy == "loop" else evaluate_points
    got = run(model, sub, coords, {"v": (ids, labels)}, opts, loss="auto")["v"]
    for i, c in enumerate(coords):
        want_loss, want_acc = _hand_loss(tiny_gpt(), sub.point(c), ids, labels)
        np.testing.assert_allclose(got.loss[i], want_loss, rtol=2e-5)
        np.testing.assert_allclose(got.acc[i], want_acc, atol=1e-6)


def test_training_on_text_with_the_lm_loss_lowers_the_validation_loss(text, tmp_path: Path):
    model = tiny_gpt()
    before, _ = evaluate(model, text["validation"], "auto")
    assert before > 5.0  # about log(257) = 5.55 at init
    cfg = TrainConfig(
        model=ModelConfig(name="gpt_tiny"),
        dataset=TEXT,
        optimizer="adam",
        lr=1e-2,
        weight_decay=0.0,
        epochs=4,
        batch_size=10,
        save_every=0,
    )
    path = train(model, text, cfg, tmp_path)
    after, acc = evaluate(model, text["validation"], "auto")
    meta = torch.load(path, weights_only=True)
    assert meta["validation_loss"] == pytest.approx(after)
    assert after < before - 1.0 and acc > 10.0
    ce_after, _ = evaluate(model, text["validation"], "lm")
    assert ce_after == after  # auto is lm for gpt_tiny
    with pytest.raises(UserError, match="loss="):
        evaluate(model, text["validation"], "ce")


def test_unigram_entropy_of_a_known_distribution():
    labels = torch.tensor([[0, 0, 1, 1, IGNORE_INDEX]])
    assert unigram_entropy(labels) == pytest.approx(np.log(2))


def test_save_and_load_round_trip_the_perplexity_of_an_lm_surface(text, tmp_path: Path):
    data = {"validation": (text["validation"].inputs[:20], text["validation"].labels[:20])}
    ds = lh.surface(
        tiny_gpt(), data, x=(-1, 1, 3), y=(-1, 1, 2), strategy="sequential", progress=False
    )
    assert ds.attrs["loss"] == "lm"
    ppl = ds["validation_ppl"].values  # (y, x)
    np.testing.assert_allclose(ppl, np.exp(ds["validation_loss"].values), rtol=1e-12)
    assert ppl.shape == (2, 3) and (ppl > 1).all() and len(np.unique(ppl)) == 6
    path = lh.save(ds, tmp_path / "s.h5")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["validation_ppl"][()], ppl)
        assert f["validation_ppl"].attrs["units"] == "1"
    back = lh.load(path)
    np.testing.assert_array_equal(back["validation_ppl"].values, ppl)
    assert back["validation_ppl"].attrs == ds["validation_ppl"].attrs
    lh.save(back, tmp_path / "again.h5")  # a loaded surface saves it again
    np.testing.assert_array_equal(lh.load(tmp_path / "again.h5")["validation_ppl"].values, ppl)


# A gpt_tiny surface on text through the command, one process, one point per chunk: 121 points
# of 800 windows each, a few seconds here; killed once a tenth of them is done.
LM_SURFACE = [
    "model=gpt_tiny",
    "+model.kwargs.depth=1",
    "+model.kwargs.width=16",
    "+model.kwargs.heads=2",
    "+model.kwargs.context=16",
    "dataset=text",
    "dataset.context=16",
    "dataset.max_documents=10",
    "dataset.max_samples=800",
    "splits=[validation]",
    "grid.x=[-1,1,11]",
    "grid.y=[-1,1,11]",
    "chunk_points=1",
    "engine.strategy=sequential",
]
LM_POINTS, LM_KILL_AFTER = 121, 12


def test_a_killed_lm_surface_resumes_to_the_uninterrupted_one(tmp_path: Path):
    from landscape_hpc.cli import compose_config
    from landscape_hpc.commands.surface import _command
    from landscape_hpc.parallel import world_if_none

    ref_out = tmp_path / "reference.h5"
    _command(
        compose_config("surface", [*LM_SURFACE, "plot=false", f"out={ref_out}"]),
        world_if_none(None),
    )
    reference, _ = read_surface(ref_out)
    assert "validation_ppl" in reference

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(  # no `timeout` wrapper: proc.pid is the python process itself
        surface_argv(None, run_dir, LM_SURFACE),
        env=surface_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output = OutputWatch(proc)
        started = output.wait_for(lambda text: progress(text) >= LM_KILL_AFTER, timeout_s=240)
        assert started, f"no progress to {LM_KILL_AFTER} points:\n{output.text}"
        proc.send_signal(signal.SIGKILL)
        status = proc.wait(timeout=60)
        output.finish()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert status == -signal.SIGKILL, status  # killed, not finished before the signal

    partial, _ = read_surface(run_dir / "surface.h5")
    done = partial["done"].astype(bool)
    assert LM_KILL_AFTER <= done.sum() < LM_POINTS, done.sum()
    assert "validation_ppl" not in partial  # the summary comes when the run completes
    rerun = run_surface(None, run_dir, LM_SURFACE, limit_s=240)
    check_ok(rerun)
    n_done, n_left = int(done.sum()), LM_POINTS - int(done.sum())
    assert f"{n_done} of {LM_POINTS} points already done, {n_left} to compute" in rerun.stdout
    assert f"{n_left}/{n_left} [" in rerun.stdout  # only the pending points were computed
    final, _ = read_surface(run_dir / "surface.h5")
    for name in ("validation_loss", "validation_acc"):
        np.testing.assert_array_equal(final[name][done], partial[name][done], err_msg=name)
    assert_same_surface(final, reference)  # as if never interrupted (bit for bit here)
