"""Train a network and save the checkpoints that surfaces and PCA trajectories start from.

    python -m landscape_hpc.train                     # mpo_cnn on digits, ~97% test acc in seconds
    python -m landscape_hpc.train model=mpo_cnn_bn dataset=digits epochs=20 lr=0.05
    python -m landscape_hpc.train model=resnet56 dataset=cifar10 dataset.root=~/data \
        epochs=300 lr=0.1 lr_drops=[150,225,275] batch_size=128 device=cuda
    python -m landscape_hpc.train ... hydra.run.dir=runs/mpo_cnn   # choose the output folder

Writes `checkpoints/epoch_XXXX.pt` every `save_every` epochs (epoch 0 = the initial weights, where
a PCA trajectory starts) and `model.pt` at the end, each a dict loadable with
`torch.load(path, weights_only=True)`:
{"state_dict", "epoch", "lr", "model", "train_acc", "test_acc", "<split>_loss" for every split}
(accuracies in percent; a language model's are token accuracies, its losses per token).

    python -m landscape_hpc.train model=gpt_tiny dataset=text optimizer=adam lr=3e-3 \
        weight_decay=0 epochs=3 batch_size=32 dataset.max_documents=40   # ~minutes on 2 cores

The loss is `loss=auto` (the model's own, engine/losses.py `default_loss`: lm for gpt_tiny
and HF causal LMs, else ce); loss=ce|mse|lm|lm_aligned pins it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from landscape_hpc.cli import hydra_command
from landscape_hpc.config import TrainConfig
from landscape_hpc.data import Split
from landscape_hpc.devices import resolve_device
from landscape_hpc.engine.data import Batch
from landscape_hpc.engine.losses import (
    LOSSES,
    default_loss,
    is_loss_output,
    resolve_loss,
    unwrap_output,
)
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.files.checkpoint import write_checkpoint
from landscape_hpc.files.hdf5 import OutputLock
from landscape_hpc.paths import check_no_alias
from landscape_hpc.problem import load_problem

log = logging.getLogger(__name__)

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
#: the lock file a run holds inside its out_dir while it trains
TRAIN_LOCK = "train.lock"
#: samples per forward pass when measuring accuracy (no gradients, so larger than training)
EVAL_BATCH_SIZE = 1024


def train(model: nn.Module, splits: dict[str, Split], cfg: TrainConfig, out_dir: Path) -> Path:
    """Trains `model` in place on `splits["train"]` and returns the path of `out_dir/model.pt`.

    The data are tensors already on the model's device; batches are slices of them in an order
    drawn from a torch.Generator seeded by `cfg.seed`, so the same seed gives bitwise the same
    checkpoints on CPU.
    """
    check_config(cfg)
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)  # dropout and any other global randomness in the model
    shuffle_generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.lr_drops), gamma=cfg.lr_gamma
    )
    train_split, test_split = splits["train"], splits["test"]
    checkpoint_dir = out_dir / "checkpoints"
    if cfg.save_every > 0:
        save_checkpoint(model, splits, cfg, 0, cfg.lr, checkpoint_dir / "epoch_0000.pt")

    progress = tqdm(range(1, cfg.epochs + 1), desc=f"train {cfg.model.name}", unit="epoch")
    for epoch in progress:
        lr = optimizer.param_groups[0]["lr"]  # the rate used during this epoch
        loss, acc = train_epoch(
            model, train_split, optimizer, cfg.batch_size, shuffle_generator, cfg.loss
        )
        _check_finite(model, loss, epoch, lr)
        scheduler.step()
        held_out = splits.get("validation", test_split)
        held_loss, held_acc = evaluate(model, held_out, cfg.loss)
        progress.set_postfix(
            loss=f"{loss:.4f}", acc=f"{acc:.1f}", held_loss=f"{held_loss:.4f}",
            held_acc=f"{held_acc:.1f}",
        )  # fmt: skip
        log.info(
            "epoch %d: train loss %.4f, %s loss %.4f, %s acc %.2f%%", epoch, loss,
            "validation" if "validation" in splits else "test", held_loss,
            "validation" if "validation" in splits else "test", held_acc,
        )  # fmt: skip
        if cfg.save_every > 0 and epoch % cfg.save_every == 0:
            save_checkpoint(model, splits, cfg, epoch, lr, checkpoint_dir / f"epoch_{epoch:04d}.pt")
        if reached_target(model, train_split, cfg, epoch):
            break

    model_path = out_dir / "model.pt"
    train_acc, test_acc = save_checkpoint(model, splits, cfg, epoch, lr, model_path)
    log.info("train acc %.2f%%, test acc %.2f%%, model: %s", train_acc, test_acc, model_path)
    return model_path


def reached_target(model: nn.Module, split: Split, cfg: TrainConfig, epoch: int) -> bool:
    """Whether training stops after `epoch`: its train loss over the whole split, in eval mode,
    is at most cfg.target_train_loss (never without one)."""
    if cfg.target_train_loss is None:
        return False
    loss, _ = evaluate(model, split, cfg.loss)
    if loss <= cfg.target_train_loss:
        log.info("epoch %d: train loss %.5f <= target %g: stop", epoch, loss, cfg.target_train_loss)
        return True
    return False


def _check_finite(model: nn.Module, loss: float, epoch: int, lr: float) -> None:
    """A UserError when training diverged (a non-finite loss or weight): nothing more is saved."""
    finite = math.isfinite(loss) and all(bool(p.isfinite().all()) for p in model.parameters())
    if not finite:
        raise UserError(
            f"training diverged in epoch {epoch} (loss {loss:g}, lr {lr:g}): the weights are no "
            "longer finite, so no model.pt is written; lower lr (or raise batch_size)"
        )


def check_config(cfg: TrainConfig) -> None:
    """Raises a UserError naming the key for a value training cannot use."""
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    check_choice("loss", cfg.loss, (*LOSSES, "auto"))
    if cfg.epochs < 1:
        raise UserError(f"epochs={cfg.epochs} must be at least 1")
    if cfg.batch_size < 1:
        raise UserError(f"batch_size={cfg.batch_size} must be at least 1")
    if not cfg.lr > 0:
        raise UserError(f"lr={cfg.lr} must be positive")
    if cfg.weight_decay < 0:
        raise UserError(f"weight_decay={cfg.weight_decay} must be zero or positive")
    if not cfg.lr_gamma > 0:
        raise UserError(f"lr_gamma={cfg.lr_gamma} must be positive")
    if cfg.target_train_loss is not None and not cfg.target_train_loss > 0:
        raise UserError(
            f"target_train_loss={cfg.target_train_loss} must be positive (or null: all epochs)"
        )
    if cfg.save_every < 0:
        raise UserError(f"save_every={cfg.save_every} must be 0 (final model only) or positive")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over the model's parameters, with L2 weight decay."""
    check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_epoch(
    model: nn.Module,
    split: Split,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    loss: str = "ce",
) -> tuple[float, float]:
    """One pass over `split` in a shuffled order; returns the running mean loss and accuracy (%),
    each weighted by what it counts (samples, or tokens for lm)."""
    model.train()
    n = len(split.labels)
    order = torch.randperm(n, generator=generator).to(split.labels.device)
    sums = torch.zeros(4, device=split.labels.device)  # loss, its count, correct, their count
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        inputs, labels = split.inputs[batch], split.labels[batch]
        mean, correct, count, acc_count = batch_loss(
            model, unwrap_output(model(inputs)), labels, loss
        )
        optimizer.zero_grad(set_to_none=True)
        mean.backward()
        optimizer.step()
        # accumulated on the device: no host sync per step
        sums += torch.stack([mean.detach() * count, count, correct, acc_count]).float()
    loss_sum, loss_count, correct, acc_count = sums.tolist()
    return loss_sum / loss_count, 100.0 * correct / acc_count if acc_count else float("nan")


def batch_loss(
    model: nn.Module, outputs: Tensor, labels: Tensor, loss: str = "ce"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The mean loss of a batch (differentiable), its count of correct predictions, and what
    each counts (samples; tokens for lm). `loss`: ce, mse, lm, lm_aligned or auto (the model's
    default, engine/losses.py); ce is torch's cross_entropy. A `loss_output` model (the wedge):
    the mean output, and no accuracy (count 0)."""
    n = outputs.new_tensor(float(len(labels))).detach()
    if is_loss_output(model):
        return outputs.mean(), n * 0, n, n * 0
    name = default_loss(model) if loss == "auto" else loss
    if name == "ce" and outputs.dim() == 2:
        correct = (outputs.argmax(dim=1) == labels).sum().float()
        return F.cross_entropy(outputs, labels), correct, n, n
    loss_fn = resolve_loss(name, model)
    batch = Batch(None, labels, len(labels))  # type: ignore[arg-type]
    total, count = loss_fn.terms(outputs.unsqueeze(0), batch)  # (1,) each
    correct, acc_count = loss_fn.accuracy(outputs.unsqueeze(0), batch)
    as_float = lambda v: torch.as_tensor(v, device=outputs.device).reshape(-1)[0].float()  # noqa: E731
    count = as_float(count)
    return total[0] / count, as_float(correct).detach(), count.detach(), as_float(acc_count)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, loss: str = "ce") -> tuple[float, float]:
    """Mean loss and accuracy (%) of `model` in eval mode over the whole split (weighted by
    what they count: samples, or tokens for lm)."""
    was_training = model.training
    model.eval()
    n = len(split.labels)
    sums = [0.0, 0.0, 0.0, 0.0]  # loss, its count, correct, their count
    for start in range(0, n, EVAL_BATCH_SIZE):
        inputs = split.inputs[start : start + EVAL_BATCH_SIZE]
        labels = split.labels[start : start + EVAL_BATCH_SIZE]
        mean, correct, count, acc_count = batch_loss(
            model, unwrap_output(model(inputs)), labels, loss
        )
        for i, value in enumerate((mean * count, count, correct, acc_count)):
            sums[i] += float(value)
    model.train(was_training)
    acc = 100.0 * sums[2] / sums[3] if sums[3] else float("nan")
    return sums[0] / sums[1], acc


def save_checkpoint(
    model: nn.Module,
    splits: dict[str, Split],
    cfg: TrainConfig,
    epoch: int,
    lr: float,
    path: Path,
) -> tuple[float, float]:
    """Measures train and test accuracy and writes a weights_only-loadable checkpoint to `path`.

    `lr` is the learning rate of the epoch that produced these weights. Returns the accuracies.
    """
    measured = {name: evaluate(model, split, cfg.loss) for name, split in splits.items()}
    train_acc, test_acc = measured["train"][1], measured["test"][1]
    meta = {
        **{f"{name}_loss": float(m[0]) for name, m in measured.items()},
        "epoch": int(epoch),
        "lr": float(lr),
        "model": str(cfg.model.name),
        "train_acc": float(train_acc),
        "test_acc": float(test_acc),
    }
    write_checkpoint(path, model, meta)
    return train_acc, test_acc


def check_outputs(cfg: TrainConfig) -> None:
    """No file this run writes (model.pt, checkpoints/epoch_XXXX.pt) is the checkpoint it
    starts from: a refusal, not a silent loss of the input."""
    out_dir = Path(cfg.out_dir)
    epochs = range(0, cfg.epochs + 1, cfg.save_every) if cfg.save_every > 0 else []
    outputs = [out_dir / "model.pt", *(out_dir / f"checkpoints/epoch_{e:04d}.pt" for e in epochs)]
    inputs = {"model.checkpoint": cfg.model.checkpoint}
    for path in outputs:
        check_no_alias({"out_dir": path}, inputs)


def _command(cfg: TrainConfig, comm: Any) -> None:
    check_config(cfg)  # before loading data, so a typo fails at once
    check_outputs(cfg)
    out_dir = Path(cfg.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"out_dir={out_dir} is a file, not a folder; choose another out_dir=")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create out_dir={out_dir} ({err.strerror}); choose another"
        ) from None
    # two runs into one folder would interleave one checkpoints/: the second is refused (the
    # lock is keyed on the resolved folder, so a symlink to it shares it)
    with OutputLock(out_dir, "out_dir", inside=TRAIN_LOCK):
        problem = load_problem(cfg.model, cfg.dataset, resolve_device(cfg.device))
        train(problem.model, problem.splits, cfg, out_dir)


main = hydra_command("train", _command)

if __name__ == "__main__":
    main()
