"""Training: seeded reproducibility, checkpoint layout, learning, and the Hydra command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from landscape_hpc.config import DatasetConfig, ModelConfig, TrainConfig
from landscape_hpc.data import Split, load_dataset
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model
from landscape_hpc.train import check_config, evaluate, train

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def digits() -> dict[str, Split]:
    return load_dataset(DatasetConfig(name="digits"))


@pytest.fixture(scope="module")
def small_digits() -> dict[str, Split]:
    return load_dataset(DatasetConfig(name="digits", max_samples=200))


def _config(**overrides: object) -> TrainConfig:
    values: dict = {"model": ModelConfig(name="mpo_cnn"), "dataset": DatasetConfig(name="digits")}
    values |= {"lr": 0.05, "batch_size": 32, "epochs": 2, "save_every": 0, "device": "cpu"}
    return TrainConfig(**(values | overrides))


def _fresh_model() -> torch.nn.Module:
    return build_model(ModelConfig(name="mpo_cnn", init_seed=0), (1, 8, 8), 10)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_same_seed_gives_identical_checkpoints(
    small_digits: dict[str, Split], tmp_path: Path
) -> None:
    first = train(_fresh_model(), small_digits, _config(seed=7), tmp_path / "a")
    again = train(_fresh_model(), small_digits, _config(seed=7), tmp_path / "b")
    other = train(_fresh_model(), small_digits, _config(seed=8), tmp_path / "c")
    first_state, again_state = _load(first)["state_dict"], _load(again)["state_dict"]
    assert first_state.keys() == again_state.keys()
    assert all(torch.equal(first_state[key], again_state[key]) for key in first_state)
    # another shuffling seed from the same initial weights ends elsewhere
    other_state = _load(other)["state_dict"]
    assert not all(torch.equal(first_state[key], other_state[key]) for key in first_state)


def test_checkpoints_at_the_expected_epochs(small_digits: dict[str, Split], tmp_path: Path) -> None:
    model = _fresh_model()
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    cfg = _config(epochs=5, save_every=2, lr_drops=[2], lr_gamma=0.5)
    model_path = train(model, small_digits, cfg, tmp_path)

    assert model_path == tmp_path / "model.pt"
    names = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch_0000.pt", "epoch_0002.pt", "epoch_0004.pt"]
    start = _load(tmp_path / "checkpoints" / "epoch_0000.pt")
    assert set(start) == {
        "state_dict",
        "epoch",
        "lr",
        "model",
        "train_acc",
        "test_acc",
        "train_loss",
        "test_loss",
    }
    assert start["epoch"] == 0 and start["model"] == "mpo_cnn"
    assert all(torch.equal(start["state_dict"][key], initial[key]) for key in initial)
    # lr of the epoch that produced the weights: 0.05 up to epoch 2, then halved
    assert _load(tmp_path / "checkpoints" / "epoch_0002.pt")["lr"] == pytest.approx(0.05)
    assert _load(tmp_path / "checkpoints" / "epoch_0004.pt")["lr"] == pytest.approx(0.025)

    final = _load(model_path)
    assert final["epoch"] == 5 and isinstance(final["test_acc"], float)
    assert all(
        torch.equal(final["state_dict"][key], value) for key, value in model.state_dict().items()
    )
    _, test_acc = evaluate(model, small_digits["test"])
    assert final["test_acc"] == pytest.approx(test_acc)


def test_save_every_zero_writes_only_the_final_model(
    small_digits: dict[str, Split], tmp_path: Path
) -> None:
    train(_fresh_model(), small_digits, _config(epochs=1, save_every=0), tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.pt"]


def test_training_improves_accuracy(digits: dict[str, Split], tmp_path: Path) -> None:
    model_path = train(_fresh_model(), digits, _config(epochs=3, save_every=3), tmp_path)
    start = _load(tmp_path / "checkpoints" / "epoch_0000.pt")
    final = _load(model_path)
    assert start["test_acc"] < 30.0  # about chance (10%) for a fresh net
    assert final["test_acc"] > 85.0
    assert final["train_acc"] > start["train_acc"] + 50.0


def test_adam_trains_too(digits: dict[str, Split], tmp_path: Path) -> None:
    cfg = _config(optimizer="adam", lr=3e-3, epochs=3, save_every=3)
    final = _load(train(_fresh_model(), digits, cfg, tmp_path))
    start = _load(tmp_path / "checkpoints" / "epoch_0000.pt")
    assert final["epoch"] == 3 and start["test_acc"] < 30.0
    assert final["test_acc"] > 80.0  # a net that did not train stays near chance (10%)


def test_a_target_train_loss_stops_at_the_first_epoch_that_reaches_it(
    digits: dict[str, Split], tmp_path: Path
) -> None:
    # the reference: the same seed for all 8 epochs, each epoch's train loss recorded
    full = train(_fresh_model(), digits, _config(epochs=8, save_every=1), tmp_path / "full")
    checkpoints = [tmp_path / f"full/checkpoints/epoch_{e:04d}.pt" for e in range(9)]
    losses = [_load(path)["train_loss"] for path in checkpoints]
    target = (losses[3] + losses[4]) / 2  # first reached after epoch 4 (losses fall here)
    assert losses[4] < target < losses[3] and _load(full)["epoch"] == 8
    stopped = _load(train(_fresh_model(), digits, _config(epochs=8, target_train_loss=target),
                          tmp_path / "stopped"))  # fmt: skip
    assert stopped["epoch"] == 4 and stopped["train_loss"] <= target
    assert stopped["train_loss"] == pytest.approx(losses[4], rel=1e-6)  # bitwise the same run
    # a target never reached runs every epoch
    never = _load(train(_fresh_model(), digits, _config(epochs=2, target_train_loss=1e-9),
                        tmp_path / "never"))  # fmt: skip
    assert never["epoch"] == 2


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"target_train_loss": 0.0}, "target_train_loss"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"save_every": -1}, "save_every"),
    ],
)
def test_bad_values_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(UserError, match=rf"^{key}="):
        check_config(_config(**overrides))


def _run_command(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "landscape_hpc.train", *overrides, f"hydra.run.dir={tmp_path}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}  # as one_torch_thread
    return subprocess.run(
        command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_hydra_command_writes_the_model(tmp_path: Path) -> None:
    result = _run_command(
        tmp_path, "model=mpo_cnn", "dataset=digits", "dataset.max_samples=300", "epochs=2", "seed=3"
    )
    assert result.returncode == 0, result.stderr
    final = _load(tmp_path / "model.pt")
    assert final["epoch"] == 2 and final["model"] == "mpo_cnn"
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == [
        "epoch_0000.pt",
        "epoch_0001.pt",
        "epoch_0002.pt",
    ]
    assert str(tmp_path / "model.pt") in result.stdout + result.stderr
    # seed=3 also seeds the initial weights (conf/train.yaml: model.init_seed=${seed})
    start = _load(tmp_path / "checkpoints" / "epoch_0000.pt")["state_dict"]
    seeded = build_model(ModelConfig(name="mpo_cnn", init_seed=3), (1, 8, 8), 10).state_dict()
    assert all(torch.equal(start[key], seeded[key]) for key in seeded)


def test_hydra_command_bad_value_exits_2_without_traceback(tmp_path: Path) -> None:
    result = _run_command(tmp_path, "optimizer=rmsprop")
    assert result.returncode == 2
    assert "error: optimizer='rmsprop'" in result.stderr and "sgd, adam" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "model.pt").exists()


def test_a_loss_output_model_trains_on_its_own_loss(tmp_path: Path) -> None:
    """The wedge's output is its loss: training descends it towards a wedge; no accuracy."""
    from landscape_hpc.models.nwedge import wedge_distance

    data = load_dataset(DatasetConfig(name="synthetic", shape=[2], num_train=64, num_test=16))
    model = build_model(ModelConfig(name="wedge", kwargs={"dim": 6, "n": 2}), (2,), 10)
    start = float(wedge_distance(model.theta.detach(), 2))
    cfg = _config(model=ModelConfig(name="wedge"), lr=0.05, weight_decay=0.0, epochs=5)
    final = _load(train(model, data, cfg, tmp_path))
    end = float(wedge_distance(final["state_dict"]["theta"], 2))
    assert end < 0.5 * start, (start, end)
    assert final["test_acc"] != final["test_acc"]  # NaN: a loss has no accuracy
