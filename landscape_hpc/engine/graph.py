"""The engine's private model copies traced by torch.fx, to be rewritten into faster forms with
the same values (bnfold.py folds conv → BN pairs in the graph), and the rewrite that gives the
same bits: a ReLU runs in place where its input is a new tensor nothing else reads.

In-place ReLUs save an allocation and a pass over memory per activation: ResNet-20's forward
takes ~18% less time on a 2-core CPU (docs/benchmarks.md). A model fx cannot trace
(data-dependent control flow, ...) runs as it is.
"""

from __future__ import annotations

import operator
from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx, nn

#: modules and functions whose output is a tensor of its own (never an alias of an input)
FRESH_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.modules.batchnorm._BatchNorm)
FRESH_FUNCTIONS = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul}
RELU_FUNCTIONS = {F.relu, torch.relu}


def trace(net: nn.Module) -> fx.GraphModule | None:
    """`net` as a GraphModule (it shares net's submodules), or None where fx cannot trace it."""
    try:
        return fx.symbolic_trace(net)
    except Exception:  # fx cannot trace every Python forward: such a model runs as it is
        return None


def module_calls(graph_module: fx.GraphModule) -> Counter[str]:
    """How many times the graph calls each submodule, by name."""
    return Counter(n.target for n in graph_module.graph.nodes if n.op == "call_module")


def relus_in_place(graph_module: fx.GraphModule) -> int:
    """Every ReLU (F.relu, torch.relu, or an nn.ReLU called once) whose input is a fresh tensor
    read by nothing else made in place; how many (recompile the graph module afterwards)."""
    modules = dict(graph_module.named_modules())
    calls = module_calls(graph_module)

    def fresh(node: object) -> bool:
        if not (isinstance(node, fx.Node) and len(node.users) == 1):
            return False
        if node.op == "call_module":
            return isinstance(modules[node.target], FRESH_MODULES)
        return node.op == "call_function" and node.target in FRESH_FUNCTIONS

    done = 0
    for node in graph_module.graph.nodes:
        if len(node.args) != 1 or node.kwargs.get("inplace") or not fresh(node.args[0]):
            continue
        if node.op == "call_function" and node.target in RELU_FUNCTIONS:
            node.target, node.kwargs = torch.relu_, {}
            done += 1
        elif (
            node.op == "call_module"
            and type(modules[node.target]) is nn.ReLU
            and calls[node.target] == 1
        ):
            modules[node.target].inplace = True
            done += 1
    return done
