"""The first Linear layer of K points of a subspace as one product on their shared input.

Every point sees the same batch x, and its first layer's weight is affine in the coordinates:
W(c) = W₀ + Σⱼ cⱼ Dⱼ, b(c) = b₀ + Σⱼ cⱼ dⱼ. So W(c)x + b(c) = (W₀x + b₀) + Σⱼ cⱼ (Dⱼx + dⱼ):
one (B, in) × (in, (1 + d)·out) product per batch, whatever K, and then a (K, 1 + d) ×
(1 + d, B·out) product that mixes the d + 1 maps for every point, instead of K products of
(B, in) × (in, out). For an MLP on flattened images the first layer holds most of the
multiply-adds (the mlp on 8×8 digits: 46%; on 28×28 inputs: 91%). The rest of the network runs
vmapped over the points on these first activations (stacked.py).

The values differ from the per-point product by float32 rounding (the sum is reassociated).
Used where fx traces the model to a single tensor input that reaches a Linear called once
through nothing but nn.Flatten, and that Linear's weight moves; otherwise the model runs whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

from landscape_hpc.engine.graph import module_calls, trace
from landscape_hpc.engine.subspace import Subspace
from landscape_hpc.params import ParamDict

#: modules that may stand between the input and the first Linear (applied to the batch once)
PASS_THROUGH = (nn.Flatten,)


@dataclass
class FirstLinear:
    """A model cut after its first Linear: `before` (the pass-through modules on the input),
    the Linear's state keys, and `rest`: a GraphModule taking the Linear's output."""

    before: list[nn.Module]
    weight: str
    bias: str | None
    rest: fx.GraphModule

    def maps(self, subspace: Subspace, x: Tensor) -> Tensor:
        """(1 + d, B, out): W₀x + b₀, then Dⱼx + dⱼ for each direction j (0 where it does not
        move the layer), in the weight's dtype (a float64 direction is rounded to it, as the
        points' own weights are)."""
        for module in self.before:
            x = module(x)
        w0 = subspace.origin[self.weight]
        weights = [w0] + [d.get(self.weight, torch.zeros_like(w0)) for d in subspace.basis]
        out = x @ torch.cat(weights).to(w0.dtype).T  # (B, (1 + d)·out)
        out = out.view(x.shape[0], len(weights), w0.shape[0]).transpose(0, 1)
        if self.bias is not None:
            b0 = subspace.origin[self.bias]
            biases = [b0] + [d.get(self.bias, torch.zeros_like(b0)) for d in subspace.basis]
            out = out + torch.stack(biases).to(b0.dtype).unsqueeze(1)
        return out

    def outputs(self, subspace: Subspace, coords: Tensor, x: Tensor) -> Tensor:
        """The first layer's output at each of the K points coords (K, d): (K, B, out)."""
        maps = self.maps(subspace, x)
        mix = torch.cat([torch.ones_like(coords[:, :1]), coords], dim=1).to(maps.dtype)
        return (mix @ maps.flatten(1)).view(coords.shape[0], *maps.shape[1:])

    def rest_weights(self, state: ParamDict) -> ParamDict:
        """The entries of a state the rest of the network holds."""
        return {k: v for k, v in state.items() if k in self._rest_keys}

    def __post_init__(self) -> None:
        self._rest_keys = set(self.rest.state_dict(keep_vars=True))


def first_linear(model: nn.Module, subspace: Subspace) -> FirstLinear | None:
    """The model cut after its first Linear where that applies (module docstring), else None."""
    moving = {k for d in subspace.basis for k in d}
    graph_module = trace(model)
    if graph_module is None:
        return None
    graph = graph_module.graph
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return None
    modules = dict(graph_module.named_modules())
    calls = module_calls(graph_module)
    chain, node = [], inputs[0]
    while True:
        if len(node.users) != 1:
            return None
        (user,) = node.users
        if (
            user.op != "call_module"
            or user.args != (node,)
            or user.kwargs
            or calls[user.target] != 1
        ):
            return None
        module = modules[user.target]
        if isinstance(module, PASS_THROUGH):
            chain.append(user)
            node = user
            continue
        if type(module) is not nn.Linear or f"{user.target}.weight" not in moving:
            return None
        break
    linear = user
    with graph.inserting_before(inputs[0]):
        first = graph.placeholder("first")
    linear.replace_all_uses_with(first)
    for dead in [linear, *reversed(chain), inputs[0]]:
        graph.erase_node(dead)
    graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    bias = f"{linear.target}.bias" if modules[linear.target].bias is not None else None
    before = [modules[n.target] for n in chain]
    return FirstLinear(before, f"{linear.target}.weight", bias, graph_module)
