"""`lh.short_directions`: how many of N random directions at a net's weights make the loss rise
by `rise` within a short distance, counted with an exact binomial interval (Fort & Jastrzebski
2019's short directions, at scale: geometry/short_count.py).

    c = lh.short_directions(net, data, n=1000, r_max=20, short=10.0)          # a fixed radius
    c = lh.short_directions(net, data, n=1000, reference=midpoint_net)        # radius: median
    c.count, c.proportion.lo, c.proportion.hi, c.radius; print(c.summary())   #   at a reference
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from landscape_hpc.api.options import engine_options, model_device, on_device, splits_on
from landscape_hpc.api.surface import _state
from landscape_hpc.engine.evaluate import check_engine
from landscape_hpc.engine.losses import default_loss
from landscape_hpc.errors import UserError, check_seed
from landscape_hpc.geometry.short_count import (
    FixedRadius,
    ReferenceRadius,
    ShortCount,
    measure,
)


def _reference_state(reference: Any, template: nn.Module, device: torch.device) -> dict:
    """The reference point as a full state like the template's (an nn.Module or a state dict)."""
    state = reference.state_dict() if isinstance(reference, nn.Module) else reference
    if not isinstance(state, Mapping):
        raise UserError(
            f"reference is a {type(reference).__name__}: give a net of the model's architecture "
            "or its state dict"
        )
    want = template.state_dict()
    if set(state) != set(want) or any(state[k].shape != want[k].shape for k in want):
        raise UserError("reference does not match the model's state dict (keys or shapes)")
    return {k: v.detach().to(device=device, dtype=want[k].dtype).clone() for k, v in state.items()}


def short_directions(
    model: nn.Module,
    data: Any,
    n: int = 1000,
    r_max: float = 20.0,
    n_distances: int = 41,
    rise: float = 1.0,
    *,
    short: Optional[float] = None,
    reference: Any = None,
    quantile: float = 0.5,
    split: str = "train",
    seed: int = 0,
    confidence: float = 0.95,
    chunk: int = 32,
    loss: Union[str, Callable[..., Any]] = "auto",
    bn: str = "eval",
    bn_split: str = "train",
    batch_size: int = 256,
    strategy: str = "auto",
    memory_mb: float = 2048.0,
    precision: str = "fp32",
    device: Optional[Union[str, torch.device]] = None,
) -> ShortCount:
    """At the model's weights θ, the `split` loss along n random unit directions (isotropic
    Gaussian over the parameters, direction j from seed and j, as the tunnel's short_dirs and
    the width draw them) at n_distances distances 0..r_max; a direction's distance is where the
    loss first exceeds L(θ) + rise (interpolated), and it is short when that is below the radius.

    The radius is one rule, stated before looking: `short=r` (a fixed radius), or
    `reference=net` (a net or state dict of the same architecture, e.g. the linear path's
    midpoint): the `quantile` (default the median) of the same directions' distances there, each
    at its own level (its loss + rise). Returns a ShortCount: per direction `distance`,
    `crossed`, `short`; `count` of `n`, `proportion` (k, n, fraction and its Clopper–Pearson
    `confidence` interval lo, hi), `radius`, `level`, `rule`. The model is not modified.

    The directions go through the evaluation engine `chunk` at a time (one subspace and one
    batched call per chunk); loss, bn, bn_split, batch_size, strategy, memory_mb, precision,
    device: as lh.surface's.
    """
    check_seed(seed, "seed")
    if (short is None) == (reference is None):
        raise UserError(
            "give the radius rule once: short=<radius> (fixed) or reference=<net> (the quantile "
            "of the distances there), not both and not neither"
        )
    if n_distances < 2 or not r_max > 0:
        raise UserError(f"n_distances={n_distances}, r_max={r_max}: need ≥ 2 and > 0")
    options = engine_options(batch_size, memory_mb, bn, loss, strategy, True, precision)
    check_engine(options, key="")
    template = on_device(model, device)
    dev = model_device(template, None)
    chosen, bn_data = splits_on(data, dev, [split], bn_split if bn == "recompute" else None)
    if isinstance(loss, str) and loss == "auto":
        loss = default_loss(template)
    keys = [name for name, _ in template.named_parameters()]
    rule = FixedRadius(float(short)) if short is not None else ReferenceRadius(quantile)
    ref = None if reference is None else _reference_state(reference, template, dev)
    distances = np.linspace(0.0, r_max, n_distances)
    return measure(
        template, _state(template), keys, n, distances, rise, rule, chosen, split, ref,
        confidence, options=options, bn_data=bn_data, loss=loss, seed=seed, chunk=chunk,
    )  # fmt: skip
