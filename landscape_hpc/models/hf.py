"""HuggingFace `transformers` models from a local folder (`model=hf model.path=DIR`), and the
checks every token model gets against its data (vocabulary, context length).

Only `from_pretrained(path, local_files_only=True)` on a folder written by `save_pretrained`:
never a hub download, and nothing global is set (no HF_HUB_OFFLINE, no cache changes). A causal
LM (config.architectures naming *ForCausalLM / *LMHeadModel, or any AutoModelForCausalLM knows)
is loaded with its LM head; other models through AutoModel. `use_cache` is turned off (the
engine never generates). Its output is a ModelOutput: the engine reads `.logits` (the unwrap rule,
engine/losses.py). `transformers` is the optional `hf` extra (pip install landscape_hpc[hf]).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from torch import Tensor, nn

from landscape_hpc.errors import UserError


def load_hf(path: Optional[str]) -> nn.Module:
    """The model saved in the local folder `path` (model.path), in eval mode, float32."""
    if not path:
        raise UserError("model=hf needs model.path=DIR, a folder written by save_pretrained()")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"model.path={path}: no such folder; give a folder from save_pretrained()")
    if not (folder / "config.json").is_file():
        raise UserError(
            f"model.path={path} holds no config.json, so it is not a saved transformers model; "
            "point it at a folder written by model.save_pretrained(DIR)"
        )
    try:
        import transformers
    except ImportError as err:
        raise UserError(
            "model=hf needs the transformers package: pip install 'landscape_hpc[hf]'"
        ) from err
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or [])
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        model = auto.from_pretrained(str(folder), config=config, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"model.path={path}: transformers could not load a model from it ({first}); point "
            "it at a folder written by model.save_pretrained(DIR)"
        ) from err
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model.float().eval()


def token_limits(model: nn.Module) -> tuple[Optional[int], Optional[int]]:
    """(vocabulary size, longest sequence) a token model declares: gpt_tiny's attributes or a
    HF config's vocab_size and n_positions / max_position_embeddings; None where not declared."""
    config = getattr(model, "config", None)
    vocab = getattr(model, "vocab_size", None) or getattr(config, "vocab_size", None)
    context = getattr(model, "context", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        if context is None:
            context = getattr(config, key, None)
    as_int = lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None  # noqa: E731
    return as_int(vocab), as_int(context)


def _token_ids(inputs: Any) -> Optional[Tensor]:
    ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else inputs
    if isinstance(ids, Tensor) and ids.dim() == 2 and not ids.is_floating_point():
        return ids
    return None


def check_tokens(model: nn.Module, inputs: Any, where: str) -> None:
    """A UserError when token ids (B, T) (or inputs["input_ids"]) do not fit the model: an id
    outside its vocabulary, or T beyond its context. Non-token inputs are not checked."""
    vocab, context = token_limits(model)
    ids = _token_ids(inputs)
    if ids is None or ids.numel() == 0:
        return
    if vocab is not None:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab:
            raise UserError(
                f"{where}: token ids run from {low} to {high} but the model's vocabulary has "
                f"{vocab} entries (0..{vocab - 1}); use a tokenizer that matches the model"
            )
    if context is not None and ids.shape[1] > context:
        raise UserError(
            f"{where}: sequences of {ids.shape[1]} tokens are longer than the model's context of "
            f"{context}; cut them (dataset.context={context} or less)"
        )


def check_vocabulary(model: nn.Module, needed: int, length: int, where: str) -> None:
    """Data of `needed` token ids (0..needed-1) in sequences of `length` against the model."""
    vocab, context = token_limits(model)
    if vocab is not None and needed > vocab:
        raise UserError(
            f"{where}: the data's tokens need a vocabulary of {needed} but the model has "
            f"{vocab}; use a model (or tokenizer) whose vocab_size is at least {needed}"
        )
    if context is not None and length > context:
        raise UserError(
            f"{where}: sequences of {length} tokens are longer than the model's context of "
            f"{context}; lower dataset.context to {context} or less"
        )
