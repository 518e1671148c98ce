"""Model registry: `build_model(cfg, input_shape, num_classes)` gives the net every tool evaluates.

Registry names are the nets of the seed papers: `mpo_cnn` (pictures; `mpo_cnn_pool` with the
authors' code's max-pool after each conv) and the pair `mpo_cnn6` /
`mpo_cnn_bn` (the BN experiment) of Skorokhodov & Burtsev 2019, appendix B, `vgg9` (Li et al.
2018, appendix A.5), the CIFAR ResNets `resnet20/56/110` and
their `_noshort` twins (Li et al. 2018, sec. 6), `mlp`, and `wedge`, the n-wedge toy landscape
of Fort & Jastrzebski 2019, sec. 3 (models/nwedge.py; a `loss_output` model: its forward
returns the loss itself), `gpt_tiny`, a small causal transformer for token data (models/gpt.py;
its `default_loss` is `lm`), and `hf`, a HuggingFace model from the local folder model.path
(models/hf.py, never a download).
`custom` builds any net from `model.target="package.module.callable"`. Every registry net runs
under `torch.func.functional_call` + `torch.func.vmap` over stacked weights: no in-place
activations, no `.item()`, no data-dependent control flow.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from landscape_hpc.config import ModelConfig
from landscape_hpc.errors import UserError, check_choice
from landscape_hpc.files.checkpoint import file_sha256, load_into, load_state_dict_file
from landscape_hpc.models.gpt import gpt_tiny
from landscape_hpc.models.hf import check_vocabulary, load_hf
from landscape_hpc.models.mlp import mlp
from landscape_hpc.models.mpo_cnn import mpo_cnn, mpo_cnn6, mpo_cnn_bn, mpo_cnn_pool
from landscape_hpc.models.nwedge import WEDGE_KWARGS, wedge
from landscape_hpc.models.resnet import resnet_builder
from landscape_hpc.models.vgg import vgg9

__all__ = [
    "MODEL_KWARGS",
    "MODEL_NAMES",
    "build_model",
    "file_sha256",
    "load_into",
    "load_state_dict_file",
]

MODEL_NAMES: tuple[str, ...] = (
    "mlp",
    "mpo_cnn",
    "mpo_cnn_pool",
    "mpo_cnn6",
    "mpo_cnn_bn",
    "vgg9",
    "resnet20",
    "resnet56",
    "resnet110",
    "resnet20_noshort",
    "resnet56_noshort",
    "resnet110_noshort",
    "wedge",
    "gpt_tiny",
    "hf",
    "custom",
)

#: name -> builder(input_shape, num_classes, **kwargs)
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "mpo_cnn": mpo_cnn,
    "mpo_cnn_pool": mpo_cnn_pool,
    "mpo_cnn6": mpo_cnn6,
    "mpo_cnn_bn": mpo_cnn_bn,
    "vgg9": vgg9,
    "resnet20": resnet_builder(20),
    "resnet56": resnet_builder(56),
    "resnet110": resnet_builder(110),
    "resnet20_noshort": resnet_builder(20, shortcuts=False),
    "resnet56_noshort": resnet_builder(56, shortcuts=False),
    "resnet110_noshort": resnet_builder(110, shortcuts=False),
    "wedge": wedge,
    "gpt_tiny": gpt_tiny,
}

#: model.kwargs preset in the config node of model=<name> (the others start empty)
MODEL_KWARGS: dict[str, dict[str, Any]] = {"wedge": WEDGE_KWARGS}

#: registry nets that take images (C, H, W); the others take any shape
_IMAGE_MODELS = frozenset(_BUILDERS) - {"mlp", "wedge", "gpt_tiny"}

#: arguments every registry builder gets from the data, not from model.kwargs
_DATA_ARGUMENTS = ("input_shape", "num_classes")


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Builds the net `cfg` names for samples of shape `input_shape` and `num_classes` classes.

    `input_shape` is one sample: (C, H, W) for images, (features,) for vectors. The initial
    weights depend only on `cfg.init_seed` (the global RNG state is left as it was); then
    `cfg.checkpoint`, when set, replaces them. Returns the model on the CPU, float32, in eval mode.
    Raises UserError for an unknown name, wrong kwargs, a bad custom target or checkpoint.
    """
    check_choice("model.name", cfg.name, MODEL_NAMES)
    kwargs = _plain_kwargs(cfg.kwargs)
    input_shape = tuple(int(size) for size in input_shape)
    if cfg.name != "hf" and cfg.path is not None:
        raise UserError(
            f"model.path={cfg.path!r} is only used with model=hf, not model={cfg.name}; drop "
            "model.path or set model=hf"
        )
    if cfg.name != "custom" and cfg.target is not None:
        raise UserError(
            f"model.target={cfg.target!r} is only used with model=custom, not model={cfg.name}; "
            "drop model.target or set model=custom"
        )
    # Seed the CPU generator only: torch.manual_seed would also queue a seed for CUDA, applied
    # lazily at CUDA's first use, after fork_rng has restored the state.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(cfg.init_seed))
        if cfg.name == "custom":
            model = _build_custom(cfg.target, kwargs)
        elif cfg.name == "hf":
            if kwargs:
                raise UserError(f"model=hf takes no model.kwargs (got {sorted(kwargs)})")
            model = load_hf(cfg.path)
        else:
            model = _build_registered(cfg.name, input_shape, int(num_classes), kwargs)
    model = model.to(device="cpu", dtype=torch.float32)
    if cfg.name in ("gpt_tiny", "hf") and len(input_shape) == 1:
        check_vocabulary(model, int(num_classes), input_shape[0], f"model={cfg.name}")
    if cfg.checkpoint is not None:
        state = load_state_dict_file(cfg.checkpoint, trust=bool(cfg.trust_checkpoint))
        load_into(model, state, cfg.checkpoint)
    return model.eval()


def _build_registered(
    name: str, input_shape: tuple[int, ...], num_classes: int, kwargs: dict[str, Any]
) -> nn.Module:
    builder = _BUILDERS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p not in _DATA_ARGUMENTS]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UserError(
            f"model.kwargs {unknown} are not arguments of model={name}; it accepts: "
            f"{', '.join(accepted) or 'no kwargs'}"
        )
    if name in _IMAGE_MODELS and len(input_shape) != 3:
        raise UserError(
            f"model={name} needs image samples of shape (C, H, W), but the data set gives "
            f"samples of shape {input_shape}; use model=mlp or an image data set"
        )
    return builder(input_shape, num_classes, **kwargs)


def _build_custom(target: str | None, kwargs: dict[str, Any]) -> nn.Module:
    """Imports `target` = "package.module.callable" and calls it with `kwargs` only."""
    module_name, _, attribute = (target or "").rpartition(".")
    if not module_name or not attribute:
        raise UserError(
            f"model=custom needs model.target='package.module.callable' returning an nn.Module; "
            f"got model.target={target!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(
            f"model.target={target!r}: cannot import module {module_name!r} ({err}); check the "
            "spelling and that the package is installed or on PYTHONPATH"
        ) from err
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UserError(
            f"model.target={target!r}: module {module_name!r} has no callable {attribute!r}"
        )
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as err:
        raise UserError(
            f"model.target={target!r} does not accept model.kwargs {sorted(kwargs)}: {err}"
        ) from err
    except ValueError:
        pass  # no introspectable signature (a builtin): let the call decide
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(
            f"model.target={target!r} returned {type(model).__name__}, not a torch.nn.Module; "
            "point model.target at a function or class that builds the network"
        )
    return model


def _plain_kwargs(kwargs: Mapping[str, Any] | DictConfig | None) -> dict[str, Any]:
    """model.kwargs as plain Python values (Hydra passes DictConfig / ListConfig)."""
    if kwargs is None:
        return {}
    if isinstance(kwargs, DictConfig):
        return dict(OmegaConf.to_container(kwargs, resolve=True))  # type: ignore[arg-type]
    return dict(kwargs)
