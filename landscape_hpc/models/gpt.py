"""`gpt_tiny`: a small causal transformer for the embedded text corpus (dataset=text).

GPT-2's layout (Radford et al. 2019) at toy size, in nanoGPT's spelling: token + learned position
embeddings, `depth` pre-LN blocks (x + attn(LN(x)), x + mlp(LN(x))) with causal self-attention
through `torch.nn.functional.scaled_dot_product_attention`, a final LayerNorm and a head tied to
the token embedding (logits = h · Eᵀ, no separate weight: the state_dict holds E once). Input
ids (B, T) -> logits (B, T, V); `default_loss = "lm"` (engine/losses.py: labels shifted by one).
No dropout, no in-place ops, no data-dependent control flow: it runs under functional_call + vmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape_hpc.errors import UserError


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)  # (B, T, C) each
        shape = (b, t, self.heads, c // self.heads)
        q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPTTiny(nn.Module):
    """Token ids (B, T), T <= context -> next-token logits (B, T, vocab_size)."""

    default_loss = "lm"

    def __init__(self, vocab_size: int, context: int, depth: int, width: int, heads: int):
        super().__init__()
        self.vocab_size, self.context = vocab_size, context
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(width)
        for name, p in self.named_parameters():  # GPT-2's init: N(0, 0.02), residual out scaled
            if p.dim() == 2:
                std = (
                    0.02 / (2 * depth) ** 0.5
                    if name.endswith(("proj.weight", "2.weight"))
                    else 0.02
                )
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, input_ids: Tensor) -> Tensor:
        t = input_ids.shape[-1]
        positions = torch.arange(t, device=input_ids.device)  # (T,)
        x = self.tok(input_ids) + self.pos(positions)  # (B, T, C)
        x = self.ln_f(self.blocks(x))
        return F.linear(x, self.tok.weight)  # (B, T, V): the head tied to the embedding


def gpt_tiny(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 64,
    heads: int = 4,
    context: int | None = None,
) -> GPTTiny:
    """gpt_tiny for windows of input_shape = (T,) token ids over a vocabulary of num_classes;
    `context` (default T) is the longest sequence its position table holds."""
    if len(input_shape) != 1:
        raise UserError(
            f"model=gpt_tiny takes token ids of shape (T,) per sample, but the data set gives "
            f"{tuple(input_shape)}; use dataset=text (or token data of your own)"
        )
    context = int(input_shape[0]) if context is None else int(context)
    for key, value in (("depth", depth), ("width", width), ("heads", heads)):
        if value < 1:
            raise UserError(f"model.kwargs.{key}={value} must be at least 1")
    if width % heads:
        raise UserError(f"model.kwargs.width={width} must be a multiple of heads={heads}")
    if input_shape[0] > context:
        raise UserError(
            f"model.kwargs.context={context} is shorter than the data's sequences of "
            f"{input_shape[0]} tokens; raise model.kwargs.context or lower dataset.context"
        )
    return GPTTiny(int(num_classes), context, int(depth), int(width), int(heads))
