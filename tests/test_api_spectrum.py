"""lh.hessian's spectrum (k, trace, density, blocks) and lh.save_directions / load_directions:
the command's numbers on the same problem, a net defined here, bad arguments, help."""

import inspect

import numpy as np
import pytest
import torch
from torch import nn

import landscape_hpc as lh
from landscape_hpc.config import DatasetConfig, HessianConfig, ModelConfig
from landscape_hpc.data import load_dataset
from landscape_hpc.geometry.curvature import run_point
from landscape_hpc.models import build_model

MODEL = ModelConfig(name="mlp", kwargs={"hidden": [8]})
DATA = DatasetConfig(name="digits", max_samples=120)
KEYS = dict(k=3, density=True, n_probes=4, density_steps=15, blocks=["layers"],
            trace_samples=10, lanczos_steps=8, double=True)  # fmt: skip


def test_hessian_spectrum_equals_the_command_bit_for_bit():
    command = run_point(HessianConfig(model=MODEL, dataset=DATA, device="cpu", **KEYS))
    train = load_dataset(DATA)["train"]
    model = build_model(MODEL, tuple(train.inputs.shape[1:]), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    result = lh.hessian(model, {"train": (train.inputs, train.labels)}, **KEYS)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    np.testing.assert_array_equal(result.eigenvalues, command.eigenvalues)
    np.testing.assert_array_equal(result.density.values, command.density.values)
    np.testing.assert_array_equal(result.density.nodes, command.density.nodes)
    assert result.trace == command.trace and result.max_eig == command.max_eig
    assert [b.max_eig for b in result.blocks] == [b.max_eig for b in command.blocks]
    assert [b.trace for b in result.blocks] == [b.trace for b in command.blocks]


def test_a_net_defined_here_its_eigenvectors_as_a_surface_and_a_directions_file(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    torch.manual_seed(0)
    net = Net().double()
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    result = lh.hessian(net, (x, y), k=2, trace=False, density=True, n_probes=2,
                        density_steps=10, double=True, lanczos_tol=1e-10)  # fmt: skip
    assert np.isnan(result.trace) and result.density.values.shape == (1000,)
    params = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    names = [k for k, _ in net.named_parameters()]

    def loss(theta):
        parts = torch.split(theta, [p.numel() for p in net.parameters()])
        state = {k: t.view_as(p) for k, t, p in zip(names, parts, net.parameters())}
        return nn.functional.cross_entropy(torch.func.functional_call(net, state, (x,)), y)

    exact = np.linalg.eigvalsh(torch.autograd.functional.hessian(loss, params).numpy())[::-1]
    np.testing.assert_allclose(result.eigenvalues, exact[:2], rtol=1e-8)
    ds = lh.surface(net, (x, y), x=(-0.1, 0.1, 3), y=(-0.1, 0.1, 3), directions=result.eigenvectors,
                    progress=False)  # fmt: skip
    assert ds.train_loss.shape == (3, 3)
    path = lh.save_directions(result.eigenvectors, tmp_path / "eig.h5",
                              eigenvalues=result.eigenvalues)  # fmt: skip
    back, attrs = lh.load_directions(path, net)
    assert attrs["eigenvalues"] == pytest.approx(list(result.eigenvalues))
    for got, want in zip(back, result.eigenvectors):
        for key in want:
            torch.testing.assert_close(got[key], want[key].float().double())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 10_000}, "k=10000 is larger than the model's"),
        ({"n_probes": 0, "density": True}, "n_probes=0 must be at least 1"),
        ({"density_steps": 0, "density": True}, "density_steps=0 must be at least 1"),
        ({"blocks": ["nothing*"]}, "blocks: pattern 'nothing\\*' matches no parameter"),
        ({"blocks": "layers"}, "blocks='layers' is a string; pass a list"),
        ({"precision": "fp16"}, "precision='fp16' is not known"),
    ],
)
def test_bad_arguments_are_one_clear_value_error(kwargs, message):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=message) as err:
        lh.hessian(net, (torch.randn(8, 3), torch.randint(0, 2, (8,))), **kwargs)
    assert isinstance(err.value, lh.UserError) and "\n" not in str(err.value)


def test_help_documents_every_argument():
    for fn in (lh.hessian, lh.save_directions, lh.load_directions):
        doc = inspect.getdoc(fn)
        for parameter in inspect.signature(fn).parameters:
            assert f"{parameter}:" in doc, (fn.__name__, parameter)
