"""A model's mean loss as a function of one flat parameter vector θ (P,): the form every
flat-vector algorithm takes (Hessian-vector products, hyperplane and random-subspace training,
rays from an optimum), independent of the model's structure.

    loss, theta = flat_loss(model, state, keys, inputs, labels)
    loss(theta)          # a scalar tensor, differentiable in theta
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn
from torch.func import functional_call

from landscape_hpc import params
from landscape_hpc.engine.losses import is_loss_output, sample_losses

#: loss(θ) -> scalar, for a flat parameter vector θ (P,)
LossFn = Callable[[Tensor], Tensor]


def flat_loss(
    model: nn.Module,
    state: Mapping[str, Tensor],
    keys: list[str],
    inputs: Tensor,
    labels: Tensor,
    batch_size: int = 1024,
    loss: str = "ce",
) -> tuple[LossFn, Tensor]:
    """loss(θ): the mean per-sample loss over (inputs, labels) of the model whose tensors `keys`
    are θ (flattened) and whose other tensors are `state`; and θ at `state`.

    `loss` is ce or mse as in the evaluation engine; a `loss_output` model's own output is the
    per-sample loss (the n-wedge). The model runs as it is (call .eval() for BN statistics).
    """
    fixed = {k: v for k, v in state.items() if k not in keys}
    like = {k: state[k] for k in keys}
    n = inputs.shape[0]
    loss_output = is_loss_output(model)

    def mean_loss(theta: Tensor) -> Tensor:
        weights = {**fixed, **params.unflatten(theta, like, keys)}
        total = theta.new_zeros(())
        for i in range(0, n, batch_size):
            out = functional_call(model, weights, (inputs[i : i + batch_size],))
            total = total + sample_losses(out, labels[i : i + batch_size], loss, loss_output).sum()
        return total / n

    return mean_loss, params.flatten(state, keys).detach()
