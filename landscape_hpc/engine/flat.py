"""A model's mean loss as a function of one flat parameter vector θ (P,): the form every
flat-vector algorithm takes (Hessian-vector products, hyperplane and random-subspace training,
rays from an optimum), independent of the model's structure.

    loss, theta = flat_loss(model, state, keys, inputs, labels)
    loss(theta)          # a scalar tensor, differentiable in theta
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from landscape_hpc import params
from landscape_hpc.engine.data import Inputs, Resident
from landscape_hpc.engine.losses import Loss, resolve_loss, run_model

#: loss(θ) -> scalar, for a flat parameter vector θ (P,)
LossFn = Callable[[Tensor], Tensor]


def flat_loss(
    model: nn.Module,
    state: Mapping[str, Tensor],
    keys: list[str],
    inputs: Inputs,
    labels: Tensor | None,
    batch_size: int = 1024,
    loss: str | Callable | Loss = "ce",
) -> tuple[LossFn, Tensor]:
    """loss(θ): the mean loss over (inputs, labels) of the model whose tensors `keys` are θ
    (flattened) and whose other tensors are `state`; and θ at `state`.

    `loss` is any spec of the engine's loss protocol (engine/losses.py: ce, mse, lm, a metric
    callable), the mean weighted by what it counts (samples, tokens); a `loss_output` model's
    own output is the per-sample loss (the n-wedge). The model runs as it is (call .eval() for
    BN statistics).
    """
    fixed = {k: v for k, v in state.items() if k not in keys}
    like = {k: state[k] for k in keys}
    split = Resident(inputs, labels)
    loss_fn = resolve_loss(loss, model)

    def mean_loss(theta: Tensor) -> Tensor:
        weights = {**fixed, **params.unflatten(theta, like, keys)}
        total, count = theta.new_zeros(()), 0
        for batch in split.batches(batch_size):
            out = run_model(model, batch.inputs, weights).unsqueeze(0)  # (1, B, ...)
            summed, counted = loss_fn.terms(out, batch)
            total, count = total + summed[0], count + counted
        return total / (count if isinstance(count, int) else count[0])

    return mean_loss, params.flatten(state, keys).detach()
