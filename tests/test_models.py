"""Model registry, architectures and checkpoints (landscape_hpc.models)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.func import functional_call, vmap

from landscape_hpc.config import ModelConfig
from landscape_hpc.errors import UserError
from landscape_hpc.models import (
    MODEL_NAMES,
    build_model,
    file_sha256,
    load_into,
    load_state_dict_file,
)

REGISTRY = [name for name in MODEL_NAMES if name != "custom"]
RESNETS = [name for name in REGISTRY if name.startswith("resnet")]
# nets whose forward gives class logits; the wedge gives losses (tests/test_nwedge.py), the
# language models per-token logits (tests/test_text.py, tests/test_hf.py)
CLASSIFIERS = [name for name in REGISTRY if name not in ("wedge", "gpt_tiny", "hf")]
TESTS_DIR = Path(__file__).parent


def build(
    name: str, input_shape: tuple[int, ...] = (1, 8, 8), classes: int = 10, **cfg
) -> nn.Module:
    return build_model(ModelConfig(name=name, **cfg), input_shape, classes)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def states_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TrainingNote:
    """A non-tensor object some training scripts pickle next to the weights."""

    def __init__(self, text: str) -> None:
        self.text = text


# ---------------------------------------------------------------------------------------------
# architectures


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_logits_shape_on_small_images(name: str) -> None:
    model = build(name, (1, 8, 8), classes=10)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_logits_shape_on_cifar_images(name: str) -> None:
    model = build(name, (3, 32, 32), classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", ["vgg9", "mpo_cnn", "resnet20"])
def test_logits_shape_on_mnist_images(name: str) -> None:
    model = build(name, (1, 28, 28), classes=10)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_mlp_takes_vectors_and_hidden_widths() -> None:
    model = build("mlp", (64,), classes=10, kwargs={"hidden": [16, 8, 4]})
    widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert widths == [16, 8, 4, 10]
    assert model(torch.randn(5, 64)).shape == (5, 10)


def test_mlp_default_hidden_layers() -> None:
    model = build("mlp", (64,))
    # 64·64+64 + 64·64+64 + 64·10+10
    assert parameter_count(model) == 4160 + 4160 + 650


def test_mpo_cnn_layout_follows_appendix_b() -> None:
    plain = build("mpo_cnn", (1, 28, 28))
    with_bn = build("mpo_cnn_bn", (1, 28, 28))
    conv_widths = [m.out_channels for m in plain.modules() if isinstance(m, nn.Conv2d)]
    bn_conv_widths = [m.out_channels for m in with_bn.modules() if isinstance(m, nn.Conv2d)]
    assert conv_widths == [8, 32, 64]
    assert bn_conv_widths == [8, 8, 32, 32, 64, 64]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 6
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    linears = [(m.in_features, m.out_features) for m in plain.modules() if isinstance(m, nn.Linear)]
    assert linears == [(1024, 128), (128, 10)]


def test_vgg9_has_seven_convs_and_two_fc_layers() -> None:
    model = build("vgg9", (3, 32, 32))
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 7
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 2
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 1


def cifar_resnet_parameters(n: int, projection: bool) -> int:
    """He et al. 2016's CIFAR ResNet-(6n+2), counted layer by layer: 3×3 convs of 16, 32, 64
    channels in three stages of n basic blocks (two convs + two BNs each), a BN'd stem, a
    10-way head; projection shortcuts add a 1×1 conv + BN at each of the two downsamplings."""
    conv = lambda c_in, c_out: 9 * c_in * c_out  # noqa: E731
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 16) + bn(16) + 64 * 10 + 10
    for c_in, c in ((16, 16), (16, 32), (32, 64)):
        total += conv(c_in, c) + conv(c, c) + 2 * bn(c)  # the first block of the stage
        total += (n - 1) * (2 * conv(c, c) + 2 * bn(c))
    if projection:
        total += 16 * 32 + bn(32) + 32 * 64 + bn(64)
    return total


@pytest.mark.parametrize(("name", "n"), [("resnet20", 3), ("resnet56", 9), ("resnet110", 18)])
def test_resnet_parameter_counts(name: str, n: int) -> None:
    # 0.27M, 0.85M, 1.7M in He et al. 2016, table 6 (their shortcuts add no parameters)
    assert parameter_count(build(name, (3, 32, 32))) == cifar_resnet_parameters(n, True)
    noshort = f"{name}_noshort"
    if noshort in MODEL_NAMES:
        assert parameter_count(build(noshort, (3, 32, 32))) == cifar_resnet_parameters(n, False)


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_noshort_resnets_have_no_shortcut_parameters(depth: int) -> None:
    with_shortcuts = build(f"resnet{depth}", (3, 32, 32)).state_dict()
    without = build(f"resnet{depth}_noshort", (3, 32, 32)).state_dict()
    assert any("shortcut" in key for key in with_shortcuts)
    assert not any("shortcut" in key for key in without)
    # the two nets differ by the shortcuts only
    assert set(without) == {key for key in with_shortcuts if "shortcut" not in key}


def test_resnet_keys_follow_loss_landscape() -> None:
    keys = build("resnet20", (3, 32, 32)).state_dict().keys()
    for key in ["conv1.weight", "bn1.running_mean", "layer1.2.conv2.weight"]:
        assert key in keys
    for key in ["layer2.0.shortcut.0.weight", "layer3.0.shortcut.1.bias", "linear.weight"]:
        assert key in keys
    assert sum(key.endswith(("conv1.weight", "conv2.weight")) for key in keys) == 19


def test_noshort_differs_in_output_from_resnet_with_the_same_weights() -> None:
    # the shortcut must really be used in forward: copy the shared weights and compare
    with_shortcuts = build("resnet20", (1, 8, 8))
    without = build("resnet20_noshort", (1, 8, 8))
    shared = {k: v for k, v in with_shortcuts.state_dict().items() if "shortcut" not in k}
    without.load_state_dict(shared)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.allclose(with_shortcuts(x), without(x))


# ---------------------------------------------------------------------------------------------
# build_model: seeding, dtype, mode


@pytest.mark.parametrize("name", ["mpo_cnn_bn", "resnet20", "vgg9", "mlp"])
def test_init_seed_determines_the_weights(name: str) -> None:
    first = build(name, init_seed=3).state_dict()
    again = build(name, init_seed=3).state_dict()
    other = build(name, init_seed=4).state_dict()
    assert states_equal(first, again)
    assert not states_equal(first, other)


def test_build_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build("resnet20", init_seed=7)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", ["mpo_cnn_bn", "vgg9", "resnet20"])
def test_model_comes_back_in_eval_mode_on_cpu_float32(name: str) -> None:
    model = build(name)
    assert not any(m.training for m in model.modules())
    assert all(t.dtype == torch.float32 for t in model.parameters())
    assert all(t.device.type == "cpu" for t in model.state_dict().values())


def test_unknown_name_lists_the_valid_names() -> None:
    with pytest.raises(UserError, match="resnet56_noshort") as err:
        build("resnet57")
    assert "model.name" in str(err.value)


def test_unknown_kwarg_is_refused() -> None:
    with pytest.raises(UserError, match=r"model\.kwargs.*depth"):
        build("resnet20", kwargs={"depth": 32})


@pytest.mark.parametrize("hidden", [[64, 0], "64", 64, [32.5]])
def test_bad_mlp_hidden_widths_are_refused(hidden: object) -> None:
    with pytest.raises(UserError, match=r"model\.kwargs\.hidden"):
        build("mlp", kwargs={"hidden": hidden})


def test_image_net_on_vectors_is_refused() -> None:
    with pytest.raises(UserError, match=r"\(C, H, W\)"):
        build("vgg9", (64,))


def test_target_with_a_registry_name_is_refused() -> None:
    with pytest.raises(UserError, match=r"model\.target"):
        build("mlp", target="custom_objects.tiny_net")


def test_hydra_dictconfig_kwargs_are_accepted() -> None:
    cfg = OmegaConf.structured(ModelConfig(name="mlp", kwargs={"hidden": [16]}))
    model = build_model(cfg, (64,), 10)
    assert parameter_count(model) == 64 * 16 + 16 + 16 * 10 + 10


# ---------------------------------------------------------------------------------------------
# vmap over stacked weights (the evaluation engine's fast path)


def perturbed_copies(model: nn.Module, count: int) -> list[dict[str, Tensor]]:
    """`count` different states: weights and BN statistics moved by seeded noise."""
    generator = torch.Generator().manual_seed(0)
    copies = []
    for _ in range(count):
        state = {}
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                state[key] = value.clone()
            elif key.endswith("running_var"):
                # a variance must stay positive
                state[key] = value * (1 + 0.5 * torch.rand(value.shape, generator=generator))
            else:
                state[key] = value + 0.1 * torch.randn(value.shape, generator=generator)
        copies.append(state)
    return copies


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_vmap_over_stacked_weights_matches_separate_forwards(name: str) -> None:
    model = build(name, (1, 8, 8))
    copies = perturbed_copies(model, 3)
    stacked = {key: torch.stack([c[key] for c in copies]) for key in copies[0]}  # (3, ...)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def logits(state: dict[str, Tensor], inputs: Tensor) -> Tensor:
        return functional_call(model, state, (inputs,))

    batched = vmap(logits, in_dims=(0, None))(stacked, x)  # (3, 4, 10)

    separate = []
    for state in copies:
        single = copy.deepcopy(model)
        single.load_state_dict(state)
        separate.append(single(x))
    expected = torch.stack(separate)
    assert batched.shape == (3, 4, 10)
    assert not torch.allclose(expected[0], expected[1])
    scale = expected.abs().max().item()
    torch.testing.assert_close(batched, expected, rtol=1e-4, atol=1e-5 * scale)


# ---------------------------------------------------------------------------------------------
# checkpoints


def prefixed(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"module.{key}": value for key, value in state.items()}


LAYOUTS = {
    "plain": lambda state: state,
    "state_dict": lambda state: {"state_dict": state, "epoch": 300, "acc": 93.1},
    "model": lambda state: {"model": state, "optimizer": {"lr": torch.tensor(0.1)}},
    "module_prefix": prefixed,
    "state_dict_module_prefix": lambda state: {"state_dict": prefixed(state)},
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_checkpoint_layouts_load(tmp_path: Path, layout: str) -> None:
    trained = build("mpo_cnn_bn", init_seed=1).state_dict()
    path = tmp_path / "ck.pt"
    torch.save(LAYOUTS[layout](trained), path)

    assert states_equal(load_state_dict_file(str(path)), trained)
    loaded = build("mpo_cnn_bn", init_seed=0, checkpoint=str(path)).state_dict()
    assert states_equal(loaded, trained)
    assert not states_equal(loaded, build("mpo_cnn_bn", init_seed=0).state_dict())


def test_checkpoint_without_bn_counter_loads(tmp_path: Path) -> None:
    # PyTorch < 0.4 checkpoints (loss-landscape's published nets) have no num_batches_tracked
    trained = build("resnet20", init_seed=1).state_dict()
    old = {k: v for k, v in trained.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pt"
    torch.save({"state_dict": old}, path)
    loaded = build("resnet20", checkpoint=str(path)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in old.items())


def test_float64_checkpoint_gives_a_float32_model(tmp_path: Path) -> None:
    trained = build("mlp", init_seed=1).state_dict()
    path = tmp_path / "double.pt"
    torch.save({k: v.double() for k, v in trained.items()}, path)
    model = build("mlp", checkpoint=str(path))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert states_equal(model.state_dict(), trained)


def test_pickled_objects_need_trust(tmp_path: Path) -> None:
    trained = build("mlp", init_seed=1).state_dict()
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": trained, "note": TrainingNote("sgd, 300 epochs")}, path)

    with pytest.raises(UserError, match=r"model\.trust_checkpoint=true") as err:
        load_state_dict_file(str(path))
    assert str(path) in str(err.value)
    with pytest.raises(UserError, match=r"model\.trust_checkpoint=true"):
        build("mlp", checkpoint=str(path))

    assert states_equal(load_state_dict_file(str(path), trust=True), trained)
    model = build("mlp", checkpoint=str(path), trust_checkpoint=True)
    assert states_equal(model.state_dict(), trained)


def test_trusted_whole_pickled_module_loads(tmp_path: Path) -> None:
    trained = build("mlp", init_seed=1)
    path = tmp_path / "net.pt"
    torch.save(trained, path)
    with pytest.raises(UserError, match=r"model\.trust_checkpoint=true"):
        load_state_dict_file(str(path))
    assert states_equal(load_state_dict_file(str(path), trust=True), trained.state_dict())


def test_architecture_mismatch_lists_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet20.pt"
    torch.save(build("resnet20").state_dict(), path)
    with pytest.raises(UserError) as err:
        build("resnet56", checkpoint=str(path))
    message = str(err.value)
    assert "another architecture" in message and "model=" in message
    # 18 more blocks × (2 conv weights + 2 BN × 4 tensors); BN's step counter is not required
    assert "missing keys (180)" in message
    assert "layer1.3.conv1.weight" in message
    assert "... and 170 more" in message  # long lists are cut to 10 names


def test_shape_mismatch_and_unexpected_keys_are_listed() -> None:
    model = build("mlp", (64,), classes=10)
    state = build("mlp", (64,), classes=5).state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(UserError) as err:
        load_into(model, state, "ck.pt")
    message = str(err.value)
    assert "layers.5.weight: checkpoint (5, 64) vs model (10, 64)" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "missing keys" not in message
    assert "'ck.pt'" in message


def test_failed_load_leaves_the_model_unchanged() -> None:
    model = build("mlp", (64,), classes=10)
    before = copy.deepcopy(model.state_dict())
    state = build("mlp", (64,), classes=5, init_seed=9).state_dict()
    with pytest.raises(UserError):
        load_into(model, state, "ck.pt")
    assert states_equal(model.state_dict(), before)


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.pt")
    with pytest.raises(UserError, match=r"model\.checkpoint=.*nope\.pt.*no such file"):
        build("mlp", checkpoint=path)


@pytest.mark.parametrize(
    "content",
    [[torch.zeros(2)], {"step": 3, "lr": 0.1}, {}, {"state_dict": {"w": "not a tensor"}}],
    ids=["list", "no_tensors", "empty", "wrapped_non_tensor"],
)
def test_checkpoint_without_a_state_dict(tmp_path: Path, content: object) -> None:
    path = tmp_path / "odd.pt"
    torch.save(content, path)
    with pytest.raises(UserError, match=r"model\.checkpoint=.*holds no state_dict"):
        load_state_dict_file(str(path))


@pytest.mark.parametrize("trust", [False, True])
def test_unreadable_checkpoint(tmp_path: Path, trust: bool) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(UserError, match=r"model\.checkpoint=.*garbage\.pt"):
        load_state_dict_file(str(path), trust=trust)


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 5000  # more than one 1 MiB block
    path.write_bytes(data)
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# model=custom


@pytest.fixture
def custom_objects_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))


@pytest.mark.usefixtures("custom_objects_importable")
def test_custom_target_is_built_with_its_kwargs(tmp_path: Path) -> None:
    model = build("custom", target="custom_objects.tiny_net", kwargs={"width": 3}, init_seed=5)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert model[0].out_channels == 3
    assert not model.training
    again = build("custom", target="custom_objects.tiny_net", kwargs={"width": 3}, init_seed=5)
    assert states_equal(model.state_dict(), again.state_dict())

    path = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), path)
    loaded = build(
        "custom", target="custom_objects.tiny_net", kwargs={"width": 3}, checkpoint=str(path)
    )
    assert states_equal(loaded.state_dict(), model.state_dict())


@pytest.mark.usefixtures("custom_objects_importable")
@pytest.mark.parametrize(
    ("target", "kwargs", "reason"),
    [
        (None, {}, "package.module.callable"),
        ("tiny_net", {}, "package.module.callable"),
        ("no_such_package_xyz.net", {}, "cannot import"),
        ("custom_objects.missing_net", {}, "no callable"),
        ("custom_objects.not_a_module", {}, "not a torch.nn.Module"),
        ("custom_objects.tiny_net", {"depth": 2}, "does not accept"),
    ],
)
def test_bad_custom_target(target: str | None, kwargs: dict, reason: str) -> None:
    with pytest.raises(UserError, match=reason) as err:
        build("custom", target=target, kwargs=kwargs)
    assert "model.target" in str(err.value)


def test_mlp_dropout_acts_in_training_only_and_keeps_the_checkpoint_keys():
    plain = build_model(ModelConfig(name="mlp"), (1, 8, 8), 10)
    dropped = build_model(ModelConfig(name="mlp", kwargs={"dropout": 0.5}), (1, 8, 8), 10)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    x = torch.randn(16, 1, 8, 8)
    torch.testing.assert_close(dropped.eval()(x), plain.eval()(x))  # same init, no dropout
    dropped.train()
    assert not torch.equal(dropped(x), dropped(x))
    with pytest.raises(UserError, match="model.kwargs.dropout"):
        build_model(ModelConfig(name="mlp", kwargs={"dropout": 1.0}), (1, 8, 8), 10)
