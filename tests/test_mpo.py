"""MPO maths: the plane (eq. 1–2, BN re-parametrisation), patterns, the objective (eq. 3)
batched vs per cell, evaluation consistent with training, resume."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.func import functional_call

from landscape_hpc.cli import compose_config
from landscape_hpc.config import DatasetConfig, EngineConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.evaluate import evaluate_points
from landscape_hpc.engine.losses import per_sample_loss
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model
from landscape_hpc.mpo.command import fingerprint
from landscape_hpc.mpo.fit import FitOptions, fit_plane
from landscape_hpc.mpo.objective import objective_batched, objective_loop, training_template
from landscape_hpc.mpo.patterns import (
    BUILTINS,
    builtin_mask,
    image_mask,
    random_mask,
    trainable_cells,
)
from landscape_hpc.mpo.plane import Plane, cell_alpha_beta, dot

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetConfig(name="digits", max_samples=300), "cpu")


def make_plane(
    name: str, scale: float = 0.1, first_seed: int = 0, **kwargs
) -> tuple[Plane, torch.nn.Module]:
    models = [
        build_model(ModelConfig(name=name, init_seed=first_seed + i, kwargs=kwargs), SHAPE, 10)
        for i in range(3)
    ]
    return Plane.init(tuple(models), scale), models[0]


def cosine_and_ratio(plane: Plane) -> tuple[float, float]:
    right = plane.right()
    with torch.no_grad():
        uu, rr, ur = dot(plane.up, plane.up), dot(right, right), dot(plane.up, right)
    return float(ur / (uu.sqrt() * rr.sqrt())), float(rr.sqrt() / uu.sqrt())


def test_right_stays_orthogonal_to_up_with_equal_norm_after_many_steps():
    plane, _ = make_plane("mlp", hidden=[32])
    g = torch.Generator().manual_seed(0)
    targets = {k: torch.randn(v.shape, generator=g) for k, v in plane.origin.items()}
    opt = torch.optim.Adam(plane.parameters(), lr=0.05)
    cos0, _ = cosine_and_ratio(plane)
    phi0 = {k: v.detach().clone() for k, v in plane.phi_right.items()}
    for _ in range(300):
        # pulls right towards a fixed random direction: Gram–Schmidt must keep it ⊥ up
        opt.zero_grad()
        loss = -dot(plane.right(), targets) + dot(plane.up, plane.up) * 0.01
        loss.backward()
        opt.step()
    cos, ratio = cosine_and_ratio(plane)
    moved = sum(float((plane.phi_right[k].detach() - phi0[k]).abs().sum()) for k in phi0)
    assert moved > 1.0  # the optimiser really moved φ_right
    assert abs(cos) < 1e-5 and abs(cos0) < 1e-5
    assert ratio == pytest.approx(1.0, abs=1e-5)


def test_gradients_reach_phi_right_and_scale(digits):
    plane, model = make_plane("mpo_cnn")
    x, y = digits["train"].inputs[:32], digits["train"].labels[:32]
    low = cell_alpha_beta((5, 5), torch.tensor([0, 2]), torch.tensor([1, 4]))
    high = cell_alpha_beta((5, 5), torch.tensor([4, 3]), torch.tensor([0, 3]))
    objective_batched(plane, training_template(model), low, high, x, y, 2.5, chunk_cells=10)
    for name in ("phi_right", "up", "origin"):
        grads = [t.grad for t in getattr(plane, name).values()]
        assert all(gr is not None for gr in grads)
        assert sum(float(gr.abs().sum()) for gr in grads) > 0
    assert plane.scale.grad is not None and float(plane.scale.grad.abs()) > 0


@pytest.mark.parametrize("name", ["mpo_cnn", "mpo_cnn_bn"])
def test_batched_objective_equals_the_per_cell_loop(digits, name):
    plane, model = make_plane(name, scale=0.3)
    template = training_template(model)
    x, y = digits["train"].inputs[:48], digits["train"].labels[:48]
    low = cell_alpha_beta((6, 6), torch.tensor([0, 1, 5]), torch.tensor([2, 5, 0]))
    high = cell_alpha_beta((6, 6), torch.tensor([3, 4]), torch.tensor([3, 1]))
    # a low threshold so some high cells are clamped (zero gradient) and others are not
    threshold = 2.31

    def grads() -> list[torch.Tensor]:
        out = [t.grad.clone() for t in plane.parameters()]
        for t in plane.parameters():
            t.grad = None
        return out

    batched = objective_batched(plane, template, low, high, x, y, threshold, chunk_cells=2)
    g_batched = grads()
    loop = objective_loop(plane, template, low, high, x, y, threshold)
    g_loop = grads()
    assert batched.loss == pytest.approx(loop.loss, rel=1e-5, abs=1e-6)
    assert batched.acc_low == loop.acc_low and batched.acc_high == loop.acc_high
    for a, b in zip(g_batched, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("threshold", [0.5, 50.0])  # the high cell clamped, and not
def test_objective_equals_eq3_computed_by_hand_away_from_the_origin(digits, threshold):
    """Eq. 3 for one low-loss and one high-loss cell, written out without the objective's code:
    θ(α, β) = origin + s·(α·right + β·up), right = φ_right made orthogonal to up with |up|'s
    norm, loss = CE(low) − min(CE(high), τ)."""
    plane, model = make_plane("mlp", scale=0.7, hidden=[16])
    x, y = digits["train"].inputs[:64], digits["train"].labels[:64]
    with torch.no_grad():
        origin, up, phi = (
            {k: v.detach().double() for k, v in d.items()}
            for d in (plane.origin, plane.up, plane.phi_right)
        )
        along = sum((phi[k] * up[k]).sum() for k in up) / sum((v * v).sum() for v in up.values())
        ortho = {k: phi[k] - along * up[k] for k in up}
        norm = lambda d: torch.sqrt(sum((v * v).sum() for v in d.values()))  # noqa: E731
        right = {k: v * norm(up) / norm(ortho) for k, v in ortho.items()}
        s = float(plane.scale.detach())

        def ce_at(alpha: float, beta: float) -> float:
            net = build_model(ModelConfig(name="mlp", kwargs={"hidden": [16]}), SHAPE, 10)
            state = {k: origin[k] + s * (alpha * right[k] + beta * up[k]) for k in origin}
            net.load_state_dict({k: v.float() for k, v in state.items()})
            with torch.no_grad():
                return float(torch.nn.functional.cross_entropy(net(x), y))

        expected = ce_at(1.5, -0.5) - min(ce_at(-1.0, 2.0), threshold)
    low, high = torch.tensor([[1.5, -0.5]]), torch.tensor([[-1.0, 2.0]])
    stats = objective_batched(
        plane, training_template(model), low, high, x, y, threshold, chunk_cells=2, backward=False
    )
    assert stats.loss == pytest.approx(expected, rel=1e-5)
    assert (ce_at(-1.0, 2.0) > threshold) == (threshold == 0.5)  # the case the id says


def test_bn_reparametrisation_keeps_a_fresh_models_forward(digits):
    plane, model = make_plane("mpo_cnn_bn")
    assert plane.bn_keys and all(
        float(plane.origin[k].detach().abs().max()) == 0 for k in plane.bn_keys
    )
    x = digits["test"].inputs[:20]
    expected_eval = model.eval()(x)
    state = plane.state_origin()
    torch.testing.assert_close(functional_call(model, state, (x,)), expected_eval)
    # the training path (batch statistics) at the origin cell equals the fresh model in train mode
    weights = plane.cell_weights(torch.zeros(1, 2))
    template = training_template(model)
    got = functional_call(template, {k: v[0] for k, v in weights.items()}, (x,))
    torch.testing.assert_close(got, training_template(model)(x))


def test_evaluation_of_a_bn_plane_matches_training_statistics(digits):
    """engine.bn=recompute (running statistics from the whole train split) gives the loss that
    training's batch statistics give on a batch of that same split."""
    plane, model = make_plane("mpo_cnn_bn", scale=0.3)
    train = digits["train"]
    coords = torch.tensor([[0.0, 0.0], [2.0, -1.0], [-3.0, 2.5]])
    metrics = evaluate_points(
        model,
        plane.to_subspace(),
        coords,
        {"train": (train.inputs, train.labels)},
        EngineConfig(bn="recompute", batch_size=100),
        train.inputs,
    )
    template = training_template(model)
    with torch.no_grad():
        for i, c in enumerate(coords):
            weights = {k: v[0] for k, v in plane.cell_weights(c[None]).items()}
            logits = functional_call(template, weights, (train.inputs,))  # whole split, one batch
            ce = float(per_sample_loss(logits, train.labels, "ce").mean())
            assert metrics["train"].loss[i] == pytest.approx(ce, rel=2e-3)


def test_random_masks_depend_only_on_size_fill_prob_and_seed():
    a = random_mask(100, 0.3, seed=4)
    assert np.array_equal(a, random_mask(100, 0.3, seed=4))
    assert not np.array_equal(a, random_mask(100, 0.3, seed=5))
    assert a.shape == (100, 100) and abs(a.mean() - 0.3) < 0.02
    assert abs(random_mask([40, 60], 0.8, seed=0).mean() - 0.8) < 0.03
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(UserError, match="fill_prob"):
            random_mask(10, bad, seed=0)


def test_builtin_shapes_hold_both_classes_and_interior_cells_are_skipped():
    for name in BUILTINS:
        mask = builtin_mask(name, 20)
        assert mask.shape == (20, 20) and 0 < mask.sum() < mask.size, name
    square = builtin_mask("square", 10)  # low-loss block in the middle
    border = trainable_cells(square)
    assert border[5, 5] == (not square[4:7, 4:7].all())
    assert not border[0, 0]  # a corner far from the block: all neighbours high-loss
    assert border.sum() < square.size
    assert trainable_cells(square, skip_interior=False).all()
    with pytest.raises(UserError, match="mask.name"):
        builtin_mask("nope")


def test_image_masks_dark_and_alpha_pixels_are_low_loss(tmp_path):
    gray = np.full((40, 60), 255, np.uint8)
    gray[:20, :30] = 0  # dark top-left quarter
    Image.fromarray(gray).save(tmp_path / "g.png")
    mask = image_mask(str(tmp_path / "g.png"), [4, 6])
    expected = np.zeros((4, 6), bool)
    expected[:2, :3] = True
    assert np.array_equal(mask, expected)
    assert np.array_equal(image_mask(str(tmp_path / "g.png"), [4, 6], invert=True), ~expected)
    rgba = np.zeros((40, 60, 4), np.uint8)  # transparent everywhere but an opaque black block
    rgba[20:, 30:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(image_mask(str(tmp_path / "a.png"), [4, 6]), expected[::-1, ::-1])
    with pytest.raises(UserError, match="mask.path"):
        image_mask(str(tmp_path / "missing.png"))
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(UserError, match="mask.path"):
        image_mask(str(tmp_path / "bad.png"))


def test_resumed_fit_equals_an_uninterrupted_one(digits, tmp_path):
    mask = builtin_mask("square", 6)
    opts = FitOptions(steps=6, batch_size=32, cells_per_step=3, lr=1e-3, checkpoint_every=2)
    plane_a, model = make_plane("mlp", hidden=[16])
    straight = fit_plane(plane_a, model, mask, digits["train"], opts, progress=False)
    plane_b, _ = make_plane("mlp", hidden=[16])
    short = FitOptions(**{**opts.__dict__, "steps": 3})
    fit_plane(plane_b, model, mask, digits["train"], short, tmp_path, {"job": 1}, progress=False)
    # a plane from other seeds: only the checkpoint can bring it back onto the first fit's path
    plane_c, _ = make_plane("mlp", first_seed=10, hidden=[16])
    resumed = fit_plane(plane_c, model, mask, digits["train"], opts, tmp_path, {"job": 1})
    assert resumed.steps == 6
    for a, b in zip(straight.plane.parameters(), resumed.plane.parameters()):
        torch.testing.assert_close(a, b)
    plane_d, _ = make_plane("mlp", first_seed=10, hidden=[16])
    scratch = fit_plane(plane_d, model, mask, digits["train"], opts, progress=False)
    moved = [
        not torch.allclose(a, b)
        for a, b in zip(straight.plane.parameters(), scratch.plane.parameters())
    ]
    assert any(moved)  # without the checkpoint the fit ends elsewhere
    with pytest.raises(UserError, match="another MPO job"):
        fit_plane(plane_c, model, mask, digits["train"], opts, tmp_path, {"job": 2})


@pytest.mark.parametrize("name", ["mpo_cnn", "mpo_cnn_bn"])
def test_a_fit_by_the_cell_loop_equals_the_fit_by_vmap(digits, name):
    """strategy=loop (faster for conv nets on 28x28 inputs on a CPU) trains the plane vmap does: the
    two differ by float rounding only, which Adam's sign-like steps on near-zero gradients carry
    into the weights, so the difference is measured against how far the fit moved the plane.
    Measured (AMD EPYC, torch 2.14.1, mpo_cnn_bn): the whole plane's difference is 5e-5, 6e-4 and
    2.5e-3 of its motion after 1, 2 and 4 steps (BN on batches of 16 amplifies it step by step),
    with single 8-channel tensors up to 1.2% at step 4: the plane is compared as one vector, and
    its first step, still at rounding level, more tightly."""
    mask = builtin_mask("square", 6)
    opts = FitOptions(steps=4, batch_size=16, cells_per_step=3, lr=1e-3, checkpoint_every=0)
    start = [p.detach().clone() for p in make_plane(name)[0].parameters()]
    fits = {}
    for strategy in ("vmap", "loop"):
        plane, model = make_plane(name)
        options = FitOptions(**{**opts.__dict__, "strategy": strategy})
        fits[strategy] = fit_plane(plane, model, mask, digits["train"], options, progress=False)

    def motion_and_difference(fits):  # the plane as one vector
        pairs = zip(start, fits["vmap"].plane.parameters(), fits["loop"].plane.parameters())
        moved, diff = zip(*((a.detach() - a0, (a - b).detach()) for a0, a, b in pairs))
        return float(torch.cat([m.flatten() for m in moved]).norm()), float(
            torch.cat([d.flatten() for d in diff]).norm()
        )

    moved, diff = motion_and_difference(fits)
    assert moved > 0 and diff < 1e-2 * moved
    assert fits["loop"].last.loss == pytest.approx(fits["vmap"].last.loss, rel=1e-4)
    first = {}
    for strategy in ("vmap", "loop"):
        plane, model = make_plane(name)
        options = FitOptions(**{**opts.__dict__, "strategy": strategy, "steps": 1})
        first[strategy] = fit_plane(plane, model, mask, digits["train"], options, progress=False)
    moved, diff = motion_and_difference(first)
    assert moved > 0 and diff < 1e-3 * moved
    with pytest.raises(UserError, match="strategy='grouped' is not known"):
        fit_plane(plane, model, mask, digits["train"], FitOptions(strategy="grouped"))


def test_grad_clip_bounds_the_gradient_the_optimiser_sees(digits):
    """grad_clip scales the plane's whole gradient down to that norm before each Adam step: at a
    norm far below Adam's epsilon the plane barely moves, unclipped it moves by ~lr per step."""
    mask = builtin_mask("square", 6)
    moved = {}
    for clip in (None, 1e-12):
        plane, model = make_plane("mlp", hidden=[16])
        start = [p.detach().clone() for p in plane.parameters()]
        opts = FitOptions(steps=5, batch_size=32, cells_per_step=3, lr=1e-2, grad_clip=clip)
        fit_plane(plane, model, mask, digits["train"], opts, progress=False)
        moved[clip] = max(
            float((p.detach() - s).abs().max()) for p, s in zip(plane.parameters(), start)
        )
    assert moved[None] > 1e-3 and moved[1e-12] < 1e-3 * moved[None]


def test_a_bf16_fit_step_is_within_the_rounding_bound_and_its_jobs_are_told_apart(digits):
    # bound as tests/test_precision.py's: 2u·L relative, u = 2^-8, L = 4 convs and linears of
    # mpo_cnn (3.1e-2), on each of the objective's cross-entropies (the objective itself, a
    # difference of two of them, has no relative bound)
    mask = builtin_mask("square", 6)
    opts = FitOptions(steps=1, batch_size=32, cells_per_step=3, checkpoint_every=0)
    opts.early_stop = False
    last = {}
    for name in ("fp32", "bf16"):
        plane, model = make_plane("mpo_cnn")
        fit = fit_plane(plane, model, mask, digits["train"], opts, progress=False, precision=name)
        last[name] = fit.last
    for term in ("ce_low", "ce_high"):
        want, got = getattr(last["fp32"], term), getattr(last["bf16"], term)
        assert 0 < abs(got - want) < 2 * 2.0**-8 * 4 * want, term

    def job(*overrides: str) -> dict:
        return fingerprint(compose_config("mpo", ["out_dir=unused", *overrides]), mask, {})

    # a checkpoint or surface of a bf16 fit is another job's; fp32 adds no key, so checkpoints
    # made before the key resume at fp32
    assert job("engine.precision=bf16") == {**job(), "precision": "bf16"}
    assert "precision" not in job()
