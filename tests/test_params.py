"""Parameter-dict maths against plain per-tensor references."""

import torch

from landscape_hpc import params
from landscape_hpc.engine.subspace import Subspace


def _dicts(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
    b = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g)}
    return a, b


def test_add_sub_scale_do_not_mutate_inputs():
    a, b = _dicts()
    a0 = {k: v.clone() for k, v in a.items()}
    s = params.add(a, b)
    d = params.sub(a, b)
    m = params.scale(a, 2.5)
    for k in a:
        assert torch.equal(a[k], a0[k])
        assert torch.equal(s[k], a0[k] + b[k])
        assert torch.equal(d[k], a0[k] - b[k])
        assert torch.equal(m[k], a0[k] * 2.5)


def test_add_missing_key_is_zero():
    a, b = _dicts()
    out = params.add({"w": a["w"]}, b)
    assert torch.equal(out["b"], b["b"])


def test_vdot_and_norm_match_flattened_reference():
    a, b = _dicts(1)
    keys = ["w", "b"]
    fa, fb = params.flatten(a, keys).double(), params.flatten(b, keys).double()
    assert torch.allclose(params.vdot(a, b), fa @ fb)
    assert torch.allclose(params.norm(a), fa.norm())


def test_flatten_unflatten_round_trip():
    a, _ = _dicts(2)
    keys = ["b", "w"]
    back = params.unflatten(params.flatten(a, keys), a, keys)
    assert all(torch.equal(back[k], a[k]) for k in keys)


def test_combine_batch_equals_combine_per_point():
    origin, d1 = _dicts(3)
    d2 = {"w": torch.randn(3, 4)}  # moves only w
    coords = torch.tensor([[0.0, 0.0], [1.0, -2.0], [0.25, 0.5]], dtype=torch.float64)
    moving, fixed = params.combine_batch(origin, [d1, d2], coords)
    assert set(moving) == {"w", "b"} and fixed == {}
    for i, c in enumerate(coords):
        single = params.combine(origin, [d1, d2], c)
        for k in moving:
            assert torch.equal(moving[k][i], single[k])


def test_subspace_points_keep_running_var_nonnegative():
    origin = {"bn.running_var": torch.ones(5), "w": torch.zeros(2)}
    basis = [{"bn.running_var": torch.ones(5)}]
    sub = Subspace(origin, basis)
    coords = torch.tensor([[-3.0], [0.0], [2.0]], dtype=torch.float64)
    moving, fixed = sub.points(coords)
    assert (moving["bn.running_var"] >= 0).all()
    assert torch.equal(moving["bn.running_var"][2], torch.full((5,), 3.0))
    assert (sub.point(coords[0])["bn.running_var"] == 0).all()
    assert "w" in fixed
