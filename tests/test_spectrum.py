"""Top-k eigenpairs, stochastic Lanczos quadrature and the kept-graph products
(landscape_hpc/spectrum.py, hessian.PointHessian) against the explicit Hessian of a small net on
digits, and against pyhessian 0.1 on the same net and data."""

import numpy as np
import pytest
import torch
from torch import nn

from landscape_hpc.config import DatasetConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.hessian import PointHessian, hutchinson_probes, hutchinson_trace, hvp
from landscape_hpc.spectrum import Quadrature, rademacher, slq, top_eigenpairs


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def problem():
    """A 1,210-parameter net on 200 digits, its loss(θ), θ and the exact (P, P) Hessian."""
    split = load_dataset(DatasetConfig(name="digits", max_samples=200))["train"]
    model = _net().double()
    inputs, labels = split.inputs.double(), split.labels
    state = {k: v.detach() for k, v in model.state_dict().items()}
    loss, theta = flat_loss(model, state, list(state), inputs, labels)
    exact = torch.func.hessian(loss)(theta)  # (P, P)
    return model, inputs, labels, loss, theta, exact


def test_kept_graph_products_equal_the_plain_hvp(problem):
    _, _, _, loss, theta, exact = problem
    op = PointHessian(loss, theta)
    g = torch.Generator().manual_seed(1)
    vs = torch.randn(5, theta.numel(), generator=g, dtype=torch.float64)  # (5, P)
    plain = torch.stack([hvp(loss, theta, v) for v in vs])
    for v, reference in zip(vs, plain):  # the same graph, product after product
        torch.testing.assert_close(op.matvec(v), reference, rtol=1e-12, atol=1e-14)
    assert not op.batched  # on the CPU: a loop by default
    batched = PointHessian(loss, theta, batched=True)
    torch.testing.assert_close(batched.matmat(vs), plain, rtol=1e-10, atol=1e-13)  # the vmap
    assert batched.batched
    looped = PointHessian(loss, theta, batched=False).matmat(vs)
    torch.testing.assert_close(looped, plain, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(plain, vs @ exact, rtol=1e-8, atol=1e-12)


def test_kept_graph_of_a_linear_loss_is_zero():
    op = PointHessian(lambda t: 3.0 * t.sum(), torch.ones(4, dtype=torch.float64))
    assert op.linear and op.matvec(torch.ones(4)).abs().sum() == 0
    assert op.matmat(torch.ones(2, 4)).shape == (2, 4)


def test_top_k_eigenpairs_equal_numpy_eigh(problem):
    *_, loss, theta, exact = problem
    values, vectors = np.linalg.eigh(exact.numpy())  # ascending
    op = PointHessian(loss, theta)
    pairs = top_eigenpairs(op.matvec, theta.numel(), k=5, steps=300, tol=1e-9)
    assert pairs.converged and pairs.steps < 300
    np.testing.assert_allclose(pairs.values.numpy(), values[::-1][:5], rtol=1e-8)
    assert list(pairs.values) == sorted(pairs.values, reverse=True)
    overlap = np.abs(np.sum(pairs.vectors.numpy() * vectors[:, ::-1][:, :5].T, axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)  # the same eigenvectors up to sign
    true = (pairs.vectors @ exact - pairs.values[:, None] * pairs.vectors).norm(dim=1)
    np.testing.assert_allclose(pairs.residuals.numpy(), true.numpy(), rtol=0.05, atol=1e-12)
    assert float(pairs.residuals.max()) <= 1e-9 * abs(values[-1])


def test_top_k_stops_at_its_tolerance_with_honest_residuals(problem):
    *_, loss, theta, exact = problem
    values = np.linalg.eigvalsh(exact.numpy())[::-1]
    op = PointHessian(loss, theta)
    pairs = top_eigenpairs(op.matvec, theta.numel(), k=3, steps=300, tol=1e-3)
    assert pairs.converged
    # a residual r bounds the error of its eigenvalue (Ritz values lie below the top ones)
    error = values[:3] - pairs.values.numpy()
    assert np.all(error >= -1e-12) and np.all(error <= pairs.residuals.numpy() + 1e-12)
    short = top_eigenpairs(op.matvec, theta.numel(), k=3, steps=4, tol=1e-9)
    assert not short.converged and short.steps == 4
    assert float(short.residuals.max()) > 1e-9 * values[0]


def test_slq_is_exact_gauss_quadrature_for_each_probe(problem):
    *_, loss, theta, exact = problem
    op = PointHessian(loss, theta)
    steps = 6
    quad = slq(op.matmat, theta.numel(), n_probes=3, steps=steps, seed=2)
    assert quad.nodes.shape == (3, steps)
    np.testing.assert_allclose(quad.weights.sum(1), 1.0, rtol=1e-12)
    starts = rademacher(3, theta.numel(), 2) / theta.numel() ** 0.5  # (3, P): slq's probes
    power = torch.eye(theta.numel(), dtype=torch.float64)
    for p in range(1, 2 * steps):  # vᵀHᵖv exact for degrees < 2·steps
        power = power @ exact
        expected = torch.einsum("bp,pq,bq->b", starts, power, starts).numpy()
        got = np.sum(quad.weights * quad.nodes**p, axis=1)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12 * abs(expected).max())


def test_slq_moments_and_density_match_the_exact_spectrum(problem):
    *_, loss, theta, exact = problem
    eigenvalues = np.linalg.eigvalsh(exact.numpy())
    op = PointHessian(loss, theta)
    quad = slq(op.matmat, theta.numel(), n_probes=16, steps=40, seed=0)
    split = slq(op.matmat, theta.numel(), n_probes=16, steps=40, seed=0, probes=slice(5, 9))
    np.testing.assert_allclose(split.nodes, quad.nodes[5:9], rtol=1e-10, atol=1e-14)
    for p in (1, 2, 3):
        # each probe's vᵀHᵖv/‖v‖² is exact; their mean estimates tr(Hᵖ)/P within a few std errors
        exact_moment = float(np.mean(eigenvalues**p))
        per_probe = np.sum(quad.weights * quad.nodes**p, axis=1)
        error = per_probe.std(ddof=1) / np.sqrt(len(per_probe))
        assert quad.moment(p) == pytest.approx(exact_moment, abs=4 * error + 1e-12)
    sigma = quad.default_sigma(0.01)
    grid, density = quad.density(sigma)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-6)
    # the broadened exact ESD: the same grid, the eigenvalues as nodes of weight 1/P each
    reference = Quadrature(eigenvalues[None], np.full((1, len(eigenvalues)), 1 / len(eigenvalues)),
                           len(eigenvalues)).density(sigma, grid=grid)[1]  # fmt: skip
    mass = 0.5 * np.trapezoid(np.abs(density - reference), grid)
    assert mass < 0.35  # total variation: SLQ's ESD is close to the exact one ...
    coarse = slq(op.matmat, theta.numel(), n_probes=16, steps=3, seed=0)
    far = 0.5 * np.trapezoid(np.abs(coarse.density(sigma, grid=grid)[1] - reference), grid)
    assert far > mass  # ... and closer than a 3-step quadrature
    assert 0 <= quad.halves_change(sigma) < 0.5
    assert np.isnan(Quadrature(quad.nodes[:1], quad.weights[:1], quad.dim).halves_change(sigma))


def test_hutchinson_probes_give_the_trace_and_block_traces(problem):
    *_, loss, theta, exact = problem
    op = PointHessian(loss, theta)
    n = theta.numel()
    blocks = [torch.arange(n), torch.arange(0, 1040), torch.arange(1040, n)]
    terms = hutchinson_probes(op.matmat, n, 60, seed=3, group=7, blocks=blocks)  # (60, 3)
    assert terms.shape == (60, 3)
    assert float(terms[:, 0].mean()) == pytest.approx(hutchinson_trace(loss, theta, 60, 3))
    torch.testing.assert_close(terms[:, 1] + terms[:, 2], terms[:, 0])
    diagonal = torch.diagonal(exact)
    for column, index in zip(terms.T, blocks):
        error = float(column.std() / len(column) ** 0.5)
        assert float(column.mean()) == pytest.approx(float(diagonal[index].sum()), abs=4 * error)


def _torch_eig(a, eigenvectors=False):
    """torch.eig as pyhessian 0.1's density calls it (removed from torch since 1.9): its T is
    symmetric, so eigh, the eigenvalues as (n, 2) real and imaginary parts."""
    values, vectors = torch.linalg.eigh(a)
    return torch.stack([values, torch.zeros_like(values)], 1), vectors


def test_top_k_and_density_agree_with_pyhessian(problem, monkeypatch):
    pyhessian = pytest.importorskip("pyhessian", reason="pyhessian (the bench extra) is absent")
    monkeypatch.setattr(torch, "eig", _torch_eig, raising=False)
    model, inputs, labels, loss, theta, exact = problem
    values = np.linalg.eigvalsh(exact.numpy())[::-1]
    torch.manual_seed(0)
    peer = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(inputs, labels), cuda=False)
    top, _ = peer.eigenvalues(top_n=3, maxIter=300, tol=1e-8)
    op = PointHessian(loss, theta)
    ours = top_eigenpairs(op.matvec, theta.numel(), k=3, steps=300, tol=1e-9).values.numpy()
    np.testing.assert_allclose(ours, values[:3], rtol=1e-8)
    # PyHessian's power iteration finds the largest |λ| (a negative one may come third); ours the
    # largest λ: they agree where those coincide, each within 1e-3 of the exact spectrum
    by_magnitude = values[np.argsort(-np.abs(values))][:3]
    np.testing.assert_allclose(top, by_magnitude, rtol=1e-3)
    np.testing.assert_allclose(top[:2], ours[:2], rtol=1e-3)
    # (not its trace: pyhessian 0.1 stops Hutchinson early whenever the running mean is negative,
    # abs(Δ) / (mean + 1e-6) < tol; scripts/bench_hessian.py compares traces on trained nets)
    nodes, weights = peer.density(iter=30, n_v=4)
    peer_quad = Quadrature(np.array(nodes), np.array(weights), theta.numel())
    quad = slq(op.matmat, theta.numel(), n_probes=4, steps=30, seed=0)
    # both are Gauss quadratures of the same spectrum: their extreme nodes agree with λ_max
    assert peer_quad.nodes.max() == pytest.approx(values[0], rel=1e-3)
    assert quad.nodes.max() == pytest.approx(values[0], rel=1e-3)
    assert peer_quad.moment(2) == pytest.approx(quad.moment(2), rel=0.5)
