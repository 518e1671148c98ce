"""The pictures net as the authors' code builds it (models/mpo_cnn.py mpo_cnn_pool): a 2×2
max-pool after each conv, the head on the flattened map; its shapes, and an MPO objective
through it that is the same batched over cells and cell by cell."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape_hpc.config import ModelConfig
from landscape_hpc.errors import UserError
from landscape_hpc.models import MODEL_NAMES, build_model
from landscape_hpc.mpo.objective import objective_batched, objective_loop, training_template
from landscape_hpc.mpo.plane import Plane, cell_alpha_beta


def pool_net(shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    return build_model(ModelConfig(name="mpo_cnn_pool", init_seed=seed), shape, 10)


@pytest.mark.parametrize(
    "shape, head", [((1, 28, 28), 64 * 3 * 3), ((1, 8, 8), 64), ((3, 20, 20), 64 * 2 * 2)]
)
def test_the_max_pooled_net_has_the_authors_layers_and_head(shape, head):
    net = pool_net(shape)
    assert "mpo_cnn_pool" in MODEL_NAMES
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "ReLU", "MaxPool2d"] * 3  # a max-pool after each conv
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 32, 64] and convs[0].in_channels == shape[0]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in net.modules())
    linears = [m for m in net.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(head, 128), (128, 10)]
    x = torch.randn(5, *shape)
    maps = net.features(x)
    assert maps.shape == (5, 64, shape[1] // 8, shape[2] // 8)
    assert net(x).shape == (5, 10)
    # the same conv weights as mpo_cnn: only the pooling and the head differ
    plain = build_model(ModelConfig(name="mpo_cnn"), shape, 10)
    plain_convs = [m for m in plain.features if isinstance(m, nn.Conv2d)]
    assert [c.weight.shape for c in convs] == [c.weight.shape for c in plain_convs]


def test_a_too_small_image_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"mpo_cnn_pool .* needs at least 8×8 pixels, got 6×6"):
        pool_net((1, 6, 6))


def test_the_objective_through_the_max_pooled_net_is_the_same_batched_and_cell_by_cell():
    shape = (1, 8, 8)
    models = tuple(pool_net(shape, seed) for seed in range(3))
    plane = Plane.init(models)
    template = training_template(models[0])
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, *shape, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    low = cell_alpha_beta((4, 4), torch.tensor([0, 1]), torch.tensor([0, 2]))
    high = cell_alpha_beta((4, 4), torch.tensor([3, 2]), torch.tensor([3, 1]))
    grads = []
    for run in ("loop", "batched"):
        for p in plane.parameters():
            p.grad = None
        if run == "loop":
            stats = objective_loop(plane, template, low, high, x, y, 2.0)
        else:
            stats = objective_batched(plane, template, low, high, x, y, 2.0, 4)
        grads.append((stats.loss, [p.grad.clone() for p in plane.parameters()]))
    (loss_a, grad_a), (loss_b, grad_b) = grads
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for a, b in zip(grad_a, grad_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
