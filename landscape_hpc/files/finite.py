"""Non-finite inputs are refused before any work (issue 33): a checkpoint or a directions file
holding NaN or inf computes a surface of NaN points that would be marked done, so every tensor
read from such a file is checked once, where it is read, and the refusal names the file and the
tensor.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from landscape_hpc.errors import UserError


def check_finite(tensors: Mapping[str, torch.Tensor], label: str, fix: str) -> None:
    """A UserError naming `label` (e.g. "model.checkpoint='ck.pt'") and the first tensor of
    `tensors` that holds a NaN or an inf, with `fix`; integer tensors (counters) are skipped."""
    for name, value in tensors.items():
        if not (value.is_floating_point() or value.is_complex()):
            continue
        bad = int((~torch.isfinite(value)).sum())  # () count of NaN/inf entries
        if bad:
            kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
            raise UserError(
                f"{label}: tensor {name!r} holds {bad} non-finite value(s) ({kind} among them) "
                f"of {value.numel()}; {fix}"
            )
