"""A fully connected classifier: flatten → (Linear → ReLU [→ dropout]) per hidden layer → Linear.

The smallest net of the registry: quick surfaces on the embedded digits data, and tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from landscape_hpc.errors import UserError

DEFAULT_HIDDEN: tuple[int, ...] = (64, 64)


class MLP(nn.Module):
    """Flattens each sample, then hidden Linear + ReLU layers and a Linear to the classes."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int], dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features
        for width in hidden:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
        layers.append(nn.Linear(previous, num_classes))
        self.layers = nn.Sequential(*layers)
        # applied after every ReLU; outside `layers`, so the state_dict keys (and checkpoints)
        # are the same with and without dropout
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                x = self.dropout(x)
        return x  # (B, classes)


def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    dropout: float = 0.0,
) -> MLP:
    """An MLP for inputs of any shape (flattened); `hidden` lists the hidden layer widths,
    `dropout` the probability of zeroing a hidden unit while training (0 = none)."""
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise UserError(f"model.kwargs.dropout={dropout!r}: give a probability in [0, 1)")
    widths_ok = isinstance(hidden, Sequence) and not isinstance(hidden, str)
    if not widths_ok or not all(_is_positive_int(width) for width in hidden):
        raise UserError(
            f"model.kwargs.hidden={hidden!r}: give a list of positive layer widths, "
            "e.g. model.kwargs.hidden=[64,64]"
        )
    return MLP(math.prod(input_shape), num_classes, hidden, float(dropout))


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
