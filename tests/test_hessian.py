"""Hessian-vector products and eigenvalues against exact references."""

import pytest
import torch
from torch import nn

from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.hessian import (
    extreme_eigenvalues,
    hutchinson_trace,
    hvp,
    lanczos,
    lanczos_run,
)


def _tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    keys = list(state)
    return flat_loss(model, state, keys, x, y, batch_size=7)


def test_hvp_matches_the_exact_hessian_and_finite_differences():
    loss, theta = _tiny()
    exact = torch.autograd.functional.hessian(loss, theta)  # (P, P)
    v = torch.randn(theta.numel(), dtype=torch.float64)
    hv = hvp(loss, theta, v)
    torch.testing.assert_close(hv, exact @ v, rtol=1e-9, atol=1e-10)
    grad = torch.func.grad(loss)
    eps = 1e-5
    fd = (grad(theta + eps * v) - grad(theta - eps * v)) / (2 * eps)
    torch.testing.assert_close(hv, fd, rtol=1e-5, atol=1e-7)


def test_lanczos_extremes_match_the_exact_spectrum_of_a_tiny_net():
    loss, theta = _tiny()
    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, theta))
    lo, hi = extreme_eigenvalues(loss, theta, steps=theta.numel())
    assert lo == pytest.approx(float(eig[0]), rel=1e-6, abs=1e-9)
    assert hi == pytest.approx(float(eig[-1]), rel=1e-6)


def test_quadratic_model_eigenvalues_and_trace_are_exact():
    diag = torch.tensor([-2.0, 0.5, 1.0, 3.0, 7.0], dtype=torch.float64)
    q = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))[0]
    a = q @ torch.diag(diag) @ q.T

    def loss(theta):
        return 0.5 * theta @ a @ theta

    theta = torch.randn(5, dtype=torch.float64)
    lo, hi = extreme_eigenvalues(loss, theta, steps=5)
    assert lo == pytest.approx(-2.0, abs=1e-9) and hi == pytest.approx(7.0, abs=1e-9)
    est = hutchinson_trace(loss, theta, samples=2000)
    assert est == pytest.approx(float(diag.sum()), rel=0.05)


def test_flat_loss_takes_the_engine_losses():
    torch.manual_seed(1)
    model = nn.Linear(3, 4).double()
    x, y = torch.randn(9, 3, dtype=torch.float64), torch.randint(0, 4, (9,))
    state = {k: v.detach() for k, v in model.state_dict().items()}
    mse, theta = flat_loss(model, state, list(state), x, y, batch_size=4, loss="mse")
    target = nn.functional.one_hot(y, 4).double()
    ref = (torch.softmax(model(x), -1) - target).pow(2).mean()
    torch.testing.assert_close(mse(theta), ref.detach())
    ce, _ = flat_loss(model, state, list(state), x, y, batch_size=4)
    torch.testing.assert_close(ce(theta), nn.functional.cross_entropy(model(x), y).detach())


def test_hvp_of_a_linear_loss_is_zero():
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    theta, v = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    assert torch.equal(hvp(lambda t: t @ w, theta, v), torch.zeros(3, dtype=torch.float64))
    with torch.no_grad():  # callers may hold no_grad (the engine does)
        hv = hvp(lambda t: (t**2).sum(), theta, v)
    torch.testing.assert_close(hv, 2 * v)


def _gapped(dim: int = 300, seed: int = 0):
    """A symmetric matrix with a known spectrum: extremes 10 and -4, well separated from a
    bulk in [-1, 2]."""
    g = torch.Generator().manual_seed(seed)
    bulk = torch.rand(dim - 2, generator=g, dtype=torch.float64) * 3 - 1
    spectrum = torch.cat([torch.tensor([10.0, -4.0], dtype=torch.float64), bulk])
    q = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0]
    return q @ torch.diag(spectrum) @ q.T


def test_lanczos_stops_once_converged_and_agrees_with_scipy_eigsh():
    eigsh = pytest.importorskip("scipy.sparse.linalg").eigsh
    a = _gapped()
    (hi,) = eigsh(a.numpy(), k=1, which="LA", return_eigenvectors=False)
    (lo,) = eigsh(a.numpy(), k=1, which="SA", return_eigenvectors=False)
    assert hi == pytest.approx(10.0) and lo == pytest.approx(-4.0)
    run = lanczos_run(lambda v: a @ v, a.shape[0], steps=200, tol=1e-10)
    assert run.converged and run.steps < 200
    assert float(run.ritz[-1]) == pytest.approx(hi, rel=1e-8)
    assert float(run.ritz[0]) == pytest.approx(lo, rel=1e-8)
    assert run.change < 1e-10 and run.residual < 1e-3
    # a loose tolerance stops earlier, still close
    loose = lanczos_run(lambda v: a @ v, a.shape[0], steps=200, tol=1e-3)
    assert loose.converged and loose.steps < run.steps
    assert float(loose.ritz[-1]) == pytest.approx(hi, rel=1e-2)


def test_lanczos_without_tolerance_runs_every_step_and_reports_no_convergence():
    a = _gapped()
    run = lanczos_run(lambda v: a @ v, a.shape[0], steps=5, tol=0.0)
    assert run.steps == 5 and not run.converged and len(run.ritz) == 5
    torch.testing.assert_close(lanczos(lambda v: a @ v, a.shape[0], steps=5), run.ritz)
    # an exhausted Krylov space is exact: converged whatever the tolerance
    small = lanczos_run(lambda v: a[:4, :4] @ v, 4, steps=10)
    assert small.converged and small.steps == 4
