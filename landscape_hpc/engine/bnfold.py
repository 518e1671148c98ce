"""BatchNorm folded into the convolution before it, point by point (the sequential and threads
strategies, bn=eval).

In eval mode a BatchNorm layer is an affine map per channel, so conv → BN is one convolution:

    BN(W * x + b) = (W · s) * x + (β + (b − μ) · s),   s = γ / sqrt(σ² + ε)

with μ, σ² the running statistics and γ, β the affine weights (1 and 0 without them). A point's
folded weight and bias are formed in float64 from its float64 weights and rounded once, so the
folded net differs from the unfolded one by float32 rounding alone (a relative 1e-7 on a loss);
`engine.fold_bn=false` runs every BN layer as it is. A small BN conv net's forward takes 15-20%
less time folded (docs/benchmarks.md).

The pairs are found in the graph torch.fx traces of the model (graph.py): a conv module whose
only use is the input of a BN module of as many channels with running statistics, each module
called once. A model fx cannot trace (data-dependent control flow, ...) is run unfolded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn

from landscape_hpc.engine.graph import module_calls

#: conv class -> the BN class that normalises its output
PAIRS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


@dataclass(frozen=True)
class Pair:
    """A conv → BN pair by qualified module names."""

    conv: str
    norm: str


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        type(norm) is PAIRS.get(type(conv))
        and norm.running_mean is not None  # without running statistics BN uses the batch's
        and norm.num_features == conv.out_channels
    )


def fold_graph(graph_module: fx.GraphModule) -> list[Pair]:
    """Every foldable conv → BN pair's BN taken out of the graph's forward; the pairs (recompile
    the graph module afterwards). The BN modules stay, unused, so every tensor keeps its name."""
    graph = graph_module.graph
    modules = dict(graph_module.named_modules())
    calls = module_calls(graph_module)
    pairs = []
    for node in list(graph.nodes):
        source = node.args[0] if node.op == "call_module" and len(node.args) == 1 else None
        if not (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and not node.kwargs
            and len(source.users) == 1
            and calls[node.target] == calls[source.target] == 1
            and _foldable(modules[source.target], modules[node.target])
        ):
            continue
        node.replace_all_uses_with(source)
        graph.erase_node(node)
        pairs.append(Pair(source.target, node.target))
    return pairs


class FoldedConv:
    """One pair's folded weight and bias: tensors the conv module reads, refilled per point."""

    def __init__(self, net: nn.Module, pair: Pair, fixed: Mapping[str, Tensor]):
        """`fixed`: the tensors that do not move, by key; the others come with each point."""
        conv, norm = net.get_submodule(pair.conv), net.get_submodule(pair.norm)
        affine = norm.weight is not None

        def key(module: str, name: str, present: bool = True) -> str | None:
            return f"{module}.{name}" if present else None

        self.keys = (
            key(pair.conv, "weight"),
            key(pair.conv, "bias", conv.bias is not None),
            key(pair.norm, "weight", affine),
            key(pair.norm, "bias", affine),
            key(pair.norm, "running_mean"),
            key(pair.norm, "running_var"),
        )
        self.fixed = {k: fixed[k].double() for k in self.keys if k in fixed}
        self.eps = norm.eps
        self.weight = torch.empty_like(conv.weight, requires_grad=False)  # keeps its layout
        self.bias = self.weight.new_empty(conv.out_channels)
        conv._parameters["weight"] = nn.Parameter(self.weight, requires_grad=False)
        conv._parameters["bias"] = nn.Parameter(self.bias, requires_grad=False)

    def load(self, moving: Callable[[str], Tensor]) -> None:
        """The folded weight and bias of a point whose moving tensors `moving` gives by key, in
        float64: formed in float64, rounded once."""

        def get(key: str | None) -> Tensor | None:
            if key is None:
                return None
            return self.fixed[key] if key in self.fixed else moving(key)

        w, b, gamma, beta, mean, var = map(get, self.keys)
        scale = torch.rsqrt(var.clamp_min(0) + self.eps)  # variances clamped as Subspace.point
        if gamma is not None:
            scale = scale * gamma
        bias = (-mean if b is None else b - mean) * scale
        if beta is not None:
            bias = bias + beta
        self.weight.copy_(w * scale.view(-1, *[1] * (w.dim() - 1)))
        self.bias.copy_(bias)
