"""PCA directions of a trajectory: a known dominant direction and its variance ratio."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from landscape_hpc.directions import pca
from landscape_hpc.errors import UserError

KEYS = ["a.weight", "b.weight"]


def _trajectory(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    final = {"a.weight": torch.randn(6, 5, generator=g), "b.weight": torch.randn(4, 3, generator=g)}
    p = 30 + 12
    u = torch.randn(p, generator=g)
    u /= u.norm()
    v = torch.randn(p, generator=g)
    v -= (v @ u) * u
    v /= v.norm()
    a = torch.linspace(3.0, 0.0, n)  # the dominant, decaying path
    b = 0.3 * torch.sin(torch.arange(n, dtype=torch.float32))
    ac, b = a - a.mean(), b - b.mean()
    b = b - (b @ ac) / (ac @ ac) * ac  # uncorrelated with a, so the axes are exactly u and v
    noise = 1e-3 * torch.randn(n, p, generator=g)
    rows = a[:, None] * u + b[:, None] * v + noise
    states = []
    for r in rows:
        flat = pca.params.flatten(final, KEYS) + r
        states.append(pca.params.unflatten(flat, final, KEYS))
    return final, states, u, v


def test_recovers_the_dominant_direction_and_matches_sklearn():
    final, states, u, v = _trajectory()
    traj = pca.Trajectory([], states, list(range(len(states))), [0.1] * len(states))
    basis, ratios, m = pca.pca_basis(traj, final, KEYS)
    pc1 = pca.params.flatten(basis[0], KEYS)
    pc2 = pca.params.flatten(basis[1], KEYS)
    assert abs(float(pc1 @ u)) > 0.999 and abs(float(pc2 @ v)) > 0.99
    assert abs(float(pc1 @ pc2)) < 1e-5 and float(pc1.norm()) == pytest.approx(1, abs=1e-5)
    ref = PCA(n_components=2).fit(m.double().numpy())
    np.testing.assert_allclose(ratios, ref.explained_variance_ratio_, rtol=1e-6)
    assert ratios[0] > 0.9
    # scikit-learn's signs: the largest entry of each axis is positive
    np.testing.assert_allclose(torch.stack([pc1, pc2]).numpy(), ref.components_, atol=1e-6)


def test_blocks_of_columns_give_the_same_axes_and_coordinates(monkeypatch):
    final, states, *_ = _trajectory()
    m = pca.difference_matrix(states, final, KEYS)
    axes, ratios = pca.principal_directions(m)
    coords = {p: pca.project(m, axes, p) for p in pca.PROJECTIONS}
    monkeypatch.setattr(pca, "_BLOCK_ENTRIES", 12 * 5)  # 1024-column blocks: 1 for 42 columns
    m_wide = torch.cat([m, torch.zeros(m.shape[0], 3000)], dim=1)  # 3 blocks, extra all zero
    axes_wide, ratios_wide = pca.principal_directions(m_wide)
    np.testing.assert_allclose(axes_wide[:, :42].numpy(), axes.numpy(), atol=1e-6)
    assert float(axes_wide[:, 42:].abs().max()) == 0
    np.testing.assert_allclose(ratios_wide, ratios, rtol=1e-10)
    for p in pca.PROJECTIONS:
        np.testing.assert_allclose(pca.project(m_wide, axes_wide, p), coords[p], atol=1e-5)


def test_projected_trajectory_keeps_pc1_and_its_digest_sees_every_number():
    final, states, *_ = _trajectory()
    traj = pca.Trajectory([], states, list(range(12)), [0.1] * 6 + [0.01] * 6)
    basis, projected = pca.trajectory_directions(traj, final, KEYS, ndim=1, projection="lstsq")
    assert len(basis) == 1 and projected.coords.shape == (12, 1)
    assert list(projected.datasets()) == ["x", "epoch", "lr"]
    other = pca.ProjectedTrajectory(
        projected.coords, projected.epochs, projected.lrs * 2, projected.explained_variance_ratio
    )
    assert other.sha256() != projected.sha256()


def test_checkpoints_of_another_architecture_are_named():
    final, states, *_ = _trajectory(n=4)
    states[2] = {"a.weight": torch.zeros(6, 4), "b.weight": states[2]["b.weight"]}
    traj = pca.Trajectory([Path(f"ck{i}.pt") for i in range(4)], states, [0, 1, 2, 3], [0.1] * 4)
    with pytest.raises(UserError, match=r"ck2\.pt does not have the architecture.*\(6, 4\)"):
        pca.check_architecture(traj, final)
    pca.check_architecture(pca.Trajectory(traj.paths[:2], states[:2], [0, 1], [0.1] * 2), final)


def test_projections_agree_on_orthonormal_axes_and_differ_on_skewed_ones():
    final, states, u, v = _trajectory()
    m = pca.difference_matrix(states, final, KEYS)
    axes, _ = pca.principal_directions(m)
    np.testing.assert_allclose(
        pca.project(m, axes, "cos"), pca.project(m, axes, "lstsq"), atol=1e-5
    )
    skew = torch.stack([u, (u + v) / (u + v).norm()])
    coords = pca.project(m, skew, "lstsq")
    np.testing.assert_allclose(
        (torch.from_numpy(coords) @ skew.double()).numpy(), m.double().numpy(), atol=2e-2
    )
    assert not np.allclose(pca.project(m, skew, "cos"), coords, atol=1e-2)


def test_bad_trajectories(tmp_path):
    with pytest.raises(UserError, match="holds no checkpoints"):
        pca.find_checkpoints(str(tmp_path))
    final, states, *_ = _trajectory(n=2)
    with pytest.raises(UserError, match="at least 3 checkpoints"):
        pca.principal_directions(pca.difference_matrix(states, final, KEYS))


def test_finds_train_checkpoints_in_epoch_order(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for e in (10, 2, 1):
        torch.save(
            {"state_dict": {"w": torch.zeros(2, 2) + e}, "epoch": e, "lr": 0.1},
            tmp_path / "checkpoints" / f"epoch_{e}.pt",
        )
    traj = pca.load_trajectory(str(tmp_path))
    assert traj.epochs == [1, 2, 10]
    assert float(traj.states[2]["w"][0, 0]) == 10
