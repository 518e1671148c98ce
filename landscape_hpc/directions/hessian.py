"""Hessian directions for a surface (`directions.kind=hessian`): the top eigenvectors of the
Hessian of the mean training loss at the origin as the grid's axes, as PyHessian's tutorial and
loss-landscape-3d plot them: x = v_1 and y = v_2 in 2D, x = v_1 in 1D. The vectors have unit norm
over the parameters (buffers zero), so a grid coordinate is a distance in weight space: PyHessian's
tutorial spans [-0.5, 0.5]. Lanczos (spectrum.top_eigenpairs, full re-orthogonalisation) on the
kept-graph products; a run that did not reach its tolerance is warned about with its residual,
never used silently."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

from torch import Tensor, nn

from landscape_hpc import params
from landscape_hpc.engine.flat import flat_loss
from landscape_hpc.engine.precision import precision
from landscape_hpc.hessian import PointHessian
from landscape_hpc.params import ParamDict
from landscape_hpc.spectrum import top_eigenpairs

log = logging.getLogger(__name__)

#: Lanczos settings of the axes: steps, and residual ≤ TOL·|λ_1| (as the hessian command's k)
STEPS, TOL = 100, 1e-3


@dataclass
class HessianAxes:
    basis: list[ParamDict]  # ndim unit eigenvectors keyed like the state_dict's parameters
    eigenvalues: list[float]  # their eigenvalues, descending
    residuals: list[float]  # ‖Hv − λv‖ of each
    converged: bool


def hessian_axes(
    model: nn.Module,
    origin: ParamDict,
    inputs: Tensor,
    labels: Tensor,
    ndim: int,
    *,
    loss: str = "ce",
    seed: int = 0,
    arithmetic: str = "fp32",
    batch_size: int = 1024,
) -> HessianAxes:
    """The top `ndim` Hessian eigenvectors of the mean `loss` over (inputs, labels) at `origin`
    (the model in eval mode, a copy), on the origin's devices and dtypes; the same bits on every
    rank (the Lanczos start vector is drawn on the CPU from `seed`)."""
    template = copy.deepcopy(model).eval()
    keys = [name for name, _ in template.named_parameters()]
    fn, theta = flat_loss(template, origin, keys, inputs, labels, batch_size, loss)
    with precision(arithmetic, theta.device):
        op = PointHessian(fn, theta)
        pairs = top_eigenpairs(op.matvec, theta.numel(), ndim, STEPS, TOL, seed, theta.device)
    like = {k: origin[k] for k in keys}
    basis = [params.unflatten(v.to(theta.dtype), like, keys) for v in pairs.vectors]
    values = [float(v) for v in pairs.values]
    residuals = [float(r) for r in pairs.residuals]
    if not pairs.converged:
        worst = max(residuals) / max(abs(values[0]), 1e-30)
        log.warning(
            "directions.kind=hessian: Lanczos did not converge in %d steps (worst residual "
            "%.2g·|λ_1| > %g): the axes are loose eigenvectors; check the model and data",
            STEPS, worst, TOL,
        )  # fmt: skip
    return HessianAxes(basis, values, residuals, pairs.converged)
