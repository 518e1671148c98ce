"""directions.kind=hessian (landscape_hpc/directions/hessian.py): a surface along the top
Hessian eigenvectors, checked against the explicit Hessian; the eigenvalues in the file."""

import logging

import h5py
import numpy as np
import pytest
import torch

from landscape_hpc.cli import compose_config
from landscape_hpc.commands.surface import compute_surface
from landscape_hpc.config import DatasetConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.directions import hessian as hessian_directions
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.errors import UserError
from landscape_hpc.models import build_model

NET = ["model=mlp", "+model.kwargs.hidden=[8]", "dataset.max_samples=100", "plot=false"]


def _exact() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Eigenvalues (descending) and eigenvectors (P, P) columns of the explicit Hessian."""
    train = load_dataset(DatasetConfig(name="digits", max_samples=100))["train"]
    model = build_model(ModelConfig(name="mlp", kwargs={"hidden": [8]}), (1, 8, 8), 10)
    model = model.double().eval()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    keys = [k for k, _ in model.named_parameters()]
    loss, theta = flat_loss(model, state, keys, train.inputs.double(), train.labels)
    values, vectors = np.linalg.eigh(torch.func.hessian(loss)(theta).numpy())
    return values[::-1], vectors[:, ::-1], keys


def _directions(path) -> list[np.ndarray]:
    with h5py.File(path, "r") as f:
        axes = [a for a in ("x", "y") if a in f["directions"]]
        return [
            np.concatenate([f[f"directions/{a}/{k}"][()].reshape(-1) for k in keys_of(f, a)])
            for a in axes
        ]


def keys_of(f, axis) -> list[str]:
    order = [k for k, _ in build_model(ModelConfig(name="mlp", kwargs={"hidden": [8]}),
                                       (1, 8, 8), 10).named_parameters()]  # fmt: skip
    return [k for k in order if k in f[f"directions/{axis}"]]


def test_a_surface_along_the_top_two_eigenvectors_records_their_eigenvalues(tmp_path):
    values, vectors, _ = _exact()
    out = tmp_path / "s.h5"
    grid = ["grid.x=[-0.5,0.5,3]", "grid.y=[-0.5,0.5,3]", "directions.kind=hessian"]
    compute_surface(compose_config("surface", [f"out={out}", *NET, *grid]))
    with h5py.File(out, "r") as f:
        eigenvalues = np.asarray(f.attrs["directions_eigenvalues"])
        residuals = np.asarray(f.attrs["directions_residuals"])
        loss = f["train_loss"][()]
    np.testing.assert_allclose(eigenvalues, values[:2], rtol=1e-4)  # float32 products
    assert (residuals <= 1e-3 * values[0]).all()
    for axis, direction in enumerate(_directions(out)):
        assert np.linalg.norm(direction) == pytest.approx(1, rel=1e-5)
        assert abs(direction @ vectors[:, axis]) == pytest.approx(1, abs=1e-3)
    # the origin is a point of the grid; the centre of a curved axis lies below its ends
    assert loss[1, 1] < max(loss[1, 0], loss[1, 2])


def test_one_axis_is_the_top_eigenvector_and_same_dir_is_refused(tmp_path):
    values, vectors, _ = _exact()
    out = tmp_path / "line.h5"
    keys = [f"out={out}", *NET, "grid.x=[-0.5,0.5,3]", "grid.y=null", "directions.kind=hessian"]
    compute_surface(compose_config("surface", keys))
    (direction,) = _directions(out)
    assert abs(direction @ vectors[:, 0]) == pytest.approx(1, abs=1e-3)
    with pytest.raises(UserError, match="same_dir=true does not apply to directions.kind=hessian"):
        compute_surface(compose_config("surface", [*keys, "directions.same_dir=true"]))
    with pytest.raises(UserError, match="directions.params does not apply to directions.kind"):
        compute_surface(compose_config("surface", [*keys, "directions.params=[layers.1.*]"]))


def test_an_unconverged_run_warns_with_its_residual(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(hessian_directions, "STEPS", 3)
    keys = [f"out={tmp_path / 's.h5'}", *NET, "grid.x=[-0.5,0.5,2]", "grid.y=[-0.5,0.5,2]"]
    with caplog.at_level(logging.WARNING):
        compute_surface(compose_config("surface", [*keys, "directions.kind=hessian"]))
    assert "directions.kind=hessian: Lanczos did not converge in 3 steps" in caplog.text
    assert "worst residual" in caplog.text
