"""HuggingFace models from a local folder (models/hf.py, model=hf model.path=DIR) and any
transformers model object through the library: a tiny GPT-2 built and saved by the test, never
a download; tied weights move once in every strategy; the bad folders and data it refuses."""

from pathlib import Path

import numpy as np
import pytest
import torch

import landscape_hpc as lh
from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import DatasetConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

T = 16
TEXT = {"name": "text", "context": T, "max_documents": 6, "max_samples": 24}


def tiny_gpt2(vocab: int = 257, positions: int = 32):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=vocab, n_positions=positions,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpt2")
    tiny_gpt2().save_pretrained(folder)
    return folder


def text_data():
    splits = load_dataset(DatasetConfig(**TEXT))
    return {name: (s.inputs, s.labels) for name, s in splits.items()}


def test_model_hf_loads_the_local_folder_as_saved(saved):
    model = build_model(ModelConfig(name="hf", path=str(saved)), (T,), 257)
    want = tiny_gpt2().state_dict()
    got = model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert not model.training and model.config.use_cache is False


def test_the_api_on_a_transformers_object_equals_the_command(saved, tmp_path):
    overrides = [
        "model=hf",
        f"model.path={saved}",
        *[f"dataset.{k}={v}" for k, v in TEXT.items() if k != "name"],
        "dataset=text",
        "grid.x=[-1,1,3]",
        "grid.y=null",
        "splits=[train,validation]",
        "engine.strategy=sequential",
        "plot=false",
        f"out={tmp_path / 'command.h5'}",
    ]
    path = compute_surface(compose_config("surface", overrides))
    ds = lh.surface(
        tiny_gpt2(), text_data(), x=(-1, 1, 3), y=None, splits=["train", "validation"],
        strategy="sequential", progress=False,
    )  # fmt: skip
    command = lh.load(path)
    assert "loss: lm" in command.attrs["config"]  # auto resolved to the causal LM's loss
    np.testing.assert_array_equal(ds.validation_loss.values, command.validation_loss.values)
    np.testing.assert_array_equal(ds.train_acc.values, command.train_acc.values)
    assert 5.0 < float(ds.validation_loss[1]) < 6.0  # ln(257) = 5.55 at a random init


def test_attention_masks_pass_through_and_equal_hfs_own_loss():
    model = tiny_gpt2()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 257, (6, T), generator=g)
    mask = torch.ones(6, T, dtype=torch.int64)
    mask[:3, 10:] = 0  # right padding
    labels = ids.masked_fill(mask == 0, -100)
    data = {"train": {"input_ids": ids, "attention_mask": mask, "labels": labels}}
    got = {}
    for strategy in ("vmap", "sequential", "threads"):
        ds = lh.surface(model, data, x=(0, 0, 1), y=None, strategy=strategy, progress=False)
        got[strategy] = float(ds.train_loss[0])
    with torch.no_grad():
        want = float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    for value in got.values():
        assert value == pytest.approx(want, rel=1e-5)


def test_a_tied_embedding_moves_once_in_every_strategy():
    model = tiny_gpt2()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 257, (4, T), generator=g)
    d = {"transformer.wte.weight": 0.5 * torch.randn(257, 32, generator=g)}
    moved = tiny_gpt2()
    with torch.no_grad():
        moved.transformer.wte.weight.add_(d["transformer.wte.weight"])  # lm_head moves with it
        want = float(moved(input_ids=ids, labels=ids).loss)
    for strategy in ("vmap", "sequential", "threads"):
        ds = lh.surface(
            model, (ids, ids), x=(1, 1, 1), y=None, directions=[d], strategy=strategy,
            progress=False,
        )  # fmt: skip
        assert float(ds.train_loss[0]) == pytest.approx(want, rel=1e-5), strategy


def test_bad_folders_and_data_are_one_line_errors(saved, tmp_path):
    cases = [
        (ModelConfig(name="hf"), "needs model.path"),
        (ModelConfig(name="hf", path=str(tmp_path / "nowhere")), "no such folder"),
        (ModelConfig(name="hf", path=str(tmp_path)), "no config.json"),
        (ModelConfig(name="mlp", path=str(saved)), "only used with model=hf"),
    ]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    cases.append((ModelConfig(name="hf", path=str(tmp_path / "broken")), "could not load"))
    for cfg, message in cases:
        with pytest.raises(UserError, match=message) as err:
            build_model(cfg, (T,), 257)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="vocabulary of 257 but the model has 100"):
        small = tmp_path / "small"
        tiny_gpt2(vocab=100).save_pretrained(small)
        build_model(ModelConfig(name="hf", path=str(small)), (T,), 257)
    with pytest.raises(UserError, match="longer than the model's context of 8"):
        short = tmp_path / "short"
        tiny_gpt2(positions=8).save_pretrained(short)
        build_model(ModelConfig(name="hf", path=str(short)), (T,), 257)
    ids = torch.randint(0, 257, (2, T))
    with pytest.raises(UserError, match=r"data\['train'\]: token ids run from"):
        lh.surface(tiny_gpt2(vocab=100), (ids, ids), x=(0, 0, 1), y=None, progress=False)
    with pytest.raises(UserError, match="longer than the model's context of 8"):
        lh.surface(tiny_gpt2(positions=8), (ids, ids), x=(0, 0, 1), y=None, progress=False)
