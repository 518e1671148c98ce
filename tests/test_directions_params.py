"""directions.params (directions/maths.py select_keys, restrict): surfaces and interpolations
move only the tensors the patterns pick; the others stay at the origin bit for bit."""

import h5py
import pytest
import torch

import landscape_hpc as lh
from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import ModelConfig
from landscape_hpc.directions.maths import select_keys
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
T = 8


def gpt(seed: int = 0):
    cfg = ModelConfig(name="gpt_tiny", kwargs={"depth": 2, "width": 16, "heads": 2}, init_seed=seed)
    return build_model(cfg, (T,), 257)


def tokens():
    ids = torch.randint(0, 256, (6, T), generator=torch.Generator().manual_seed(0))
    return {"train": (ids, ids)}


def test_select_keys_includes_excludes_and_refuses_a_pattern_matching_nothing():
    keys = ["tok.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.0.weight", "ln_f.bias"]
    assert select_keys(keys, ["blocks.*.attn.*"], "p") == ["blocks.0.attn.qkv.weight"]
    assert select_keys(keys, ["!tok.*", "!*.bias"], "p") == keys[1:3]
    assert select_keys(keys, ["blocks.*", "!*.mlp.*"], "p") == ["blocks.0.attn.qkv.weight"]
    assert select_keys(keys, [], "p") == keys
    with pytest.raises(UserError, match=r"params: the pattern 'attn\.\*' matches no tensor"):
        select_keys(keys, ["attn.*"], "params")


def test_a_surface_moves_only_the_matched_tensors():
    model = gpt()
    ds = lh.surface(
        model, tokens(), x=(-1, 1, 3), y=(-1, 1, 3), params=["blocks.*.attn.*"], progress=False
    )
    for direction in ds.attrs["basis"]:
        assert direction and all(".attn." in k for k in direction)
    # the point (1, 0) by hand: only the attention tensors moved, the rest the origin's bits
    moved = gpt()
    state = moved.state_dict()
    for k, d in ds.attrs["basis"][0].items():
        state[k] = state[k] + torch.as_tensor(d)
    moved.load_state_dict(state)
    with torch.no_grad():
        logits = moved(tokens()["train"][0])
    want = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 257), tokens()["train"][0][:, 1:].reshape(-1)
    )
    assert float(ds.train_loss.sel(x=1, y=0)) == pytest.approx(float(want), rel=1e-5)


def test_interpolate_with_params_moves_only_those_tensors():
    a, b = gpt(0), gpt(1)
    line = lh.interpolate(a, b, tokens(), t=(0, 1, 2), params=["!tok.*", "!pos.*"], progress=False)
    hybrid = gpt(0)
    state = hybrid.state_dict()
    for k, v in b.state_dict().items():
        if not k.startswith(("tok.", "pos.")):
            state[k] = v
    hybrid.load_state_dict(state)
    want = lh.surface(hybrid, tokens(), x=(0, 0, 1), y=None, progress=False)
    assert float(line.train_loss[1]) == pytest.approx(float(want.train_loss[0]), rel=1e-6)
    assert set(line.attrs["basis"][0]) == {k for k in state if not k.startswith(("tok.", "pos."))}


def test_the_command_writes_only_the_matched_directions(tmp_path):
    base = [
        "model=gpt_tiny", "+model.kwargs.depth=1", "+model.kwargs.width=16",
        "+model.kwargs.heads=2",
        "dataset=text", "dataset.context=8", "dataset.max_documents=4", "dataset.max_samples=20",
        "grid.x=[-1,1,3]", "grid.y=null", "plot=false", f"out={tmp_path / 's.h5'}",
    ]  # fmt: skip
    path = compute_surface(compose_config("surface", [*base, "directions.params=[*.mlp.*]"]))
    with h5py.File(path) as f:
        keys = list(f["directions/x"])
        assert keys and all(".mlp." in k for k in keys)
    with pytest.raises(UserError, match="directions.params: the pattern 'nothing'"):
        compute_surface(
            compose_config("surface", [*base, "directions.params=[nothing]", "overwrite=true"])
        )
