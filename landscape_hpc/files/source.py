"""What a surface file says about the run that made it (its grid, model, data set, engine loss
and checkpoint), for commands that rebuild that run (python -m landscape_hpc.geometry hessian
surface=...).

A surface file is data people download and share: nothing read from it may widen trust or name
code to import. Its `config` attribute is read as plain YAML (no interpolation), and a stored
model.trust_checkpoint or custom model/dataset target is refused unless the command line passes
the same (the command line's is then used).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf

from landscape_hpc.config import DatasetConfig, ModelConfig
from landscape_hpc.errors import UserError
from landscape_hpc.files import hdf5, stored_yaml
from landscape_hpc.files.checkpoint import file_sha256
from landscape_hpc.grid import Grid


@dataclass
class SurfaceSource:
    """What a surface file says about the run that made it: its grid, the model and data set
    (from its `config` attribute), the engine's loss and BN mode, and the checkpoint (the path
    and SHA-256 the file names; empty when the model was not loaded from one)."""

    path: Path
    grid: Grid
    model: ModelConfig
    dataset: DatasetConfig
    loss: str
    bn: str
    checkpoint: str
    checkpoint_sha256: str


def read_surface_source(
    path: Path, model: Optional[ModelConfig] = None, dataset: Optional[DatasetConfig] = None
) -> SurfaceSource:
    """The grid and the configs stored in the surface file `path` (config key `surface`); a
    UserError when it is missing, not HDF5, or not a surface file of ours.

    A surface file is data people share: what it stores never widens trust. `model` and
    `dataset` are the command line's: a stored model.trust_checkpoint or custom target is
    refused unless the command line passes the same (and then the command line's is used)."""
    hint = "make it with python -m landscape_hpc.surface"
    with hdf5.open_read(path, "surface", hint) as f:
        try:
            attrs = dict(f.attrs)
            if "config" not in attrs or "xcoordinates" not in f:
                raise UserError(
                    f"surface={path} has no `config` attribute or grid: only surface files "
                    "written by python -m landscape_hpc.surface say which model and data they "
                    "belong to"
                )
            x = hdf5.read_array(f, "xcoordinates", path)
            y = hdf5.read_array(f, "ycoordinates", path) if "ycoordinates" in f else None
            _check_grid(f, path, x, y)
        except UserError:  # a ValueError too, already naming the file
            raise
        except hdf5.DAMAGED as err:
            raise hdf5.damaged(f"surface={path}", "its grid and config", err) from None
    stored = _stored_config(path, attrs["config"])
    try:
        model_cfg: ModelConfig = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(ModelConfig), stored["model"])
        )
        dataset_cfg: DatasetConfig = OmegaConf.to_object(
            OmegaConf.merge(OmegaConf.structured(DatasetConfig), stored["dataset"])
        )
    except Exception as err:  # omegaconf's validation errors: the file's, not the user's
        raise UserError(
            f"surface={path}: its `config` attribute holds an invalid model or dataset "
            f"({type(err).__name__}: {str(err).splitlines()[0]}); remake the surface file"
        ) from None
    model_cfg, dataset_cfg = _command_line_trust(path, model_cfg, dataset_cfg, model, dataset)
    engine = stored["engine"] if isinstance(stored.get("engine"), dict) else {}
    return SurfaceSource(
        path,
        Grid(np.asarray(x, np.float64), None if y is None else np.asarray(y, np.float64)),
        model_cfg,
        dataset_cfg,
        str(engine.get("loss", "ce")),
        str(engine.get("bn", "eval")),
        str(attrs.get("checkpoint", "")),
        str(attrs.get("checkpoint_sha256", "")),
    )


def _check_grid(f: Any, path: Path, x: Any, y: Any) -> None:
    """The axes are 1D arrays of finite numbers and every grid dataset (metrics, done) has
    their shape (issue 33: a file is checked against what it claims; coordinates edited to
    10^4 × 10^4 over 5 × 5 metrics would start 10^8 Hessian points)."""
    axes = {"xcoordinates": x, **({} if y is None else {"ycoordinates": y})}
    for name, values in axes.items():
        values = np.asarray(values)
        if (
            values.ndim != 1
            or values.size == 0
            or not np.issubdtype(values.dtype, np.number)
            or not np.all(np.isfinite(values))
        ):
            raise UserError(
                f"surface={path}: {name} is not a 1D array of finite numbers (shape "
                f"{values.shape}, {values.dtype}); remake the surface file"
            )
    shape = (len(x),) if y is None else (len(y), len(x))
    for name in f:
        if name == "done" or name.endswith(("_loss", "_acc")):
            node = f[name]
            if getattr(node, "shape", shape) != shape:
                raise UserError(
                    f"surface={path}: {name} has shape {node.shape} but the coordinates make "
                    f"a grid of {shape}: the file was edited or damaged; remake the surface file"
                )


def locate_checkpoint(
    source: SurfaceSource, path: Path, checkpoint: Optional[str]
) -> SurfaceSource:
    """`source` with its model's checkpoint located: `checkpoint` (surface_checkpoint= on the
    command line) or the path the surface file stores, checked against the stored SHA-256."""
    sha = source.checkpoint_sha256
    if not sha:
        return source
    where = checkpoint or source.checkpoint or source.model.checkpoint
    if not where or not Path(where).is_file():
        raise UserError(
            f"the checkpoint of surface={path} is not at {where!r}; pass "
            f"surface_checkpoint=<file> (its SHA-256 must be {sha})"
        )
    if file_sha256(where) != sha:
        raise UserError(
            f"{where} is not the checkpoint surface={path} was made from (SHA-256 "
            f"{file_sha256(where)}, the file says {sha}); pass the right surface_checkpoint="
        )
    return dataclasses.replace(source, model=dataclasses.replace(source.model, checkpoint=where))


def _stored_config(path: Path, raw: Any) -> dict[str, Any]:
    """The `config` attribute as plain data: YAML with a `model` and a `dataset` mapping, no
    interpolation (`${...}` would let the file read the environment or call resolvers)."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    try:
        stored = stored_yaml.load_limited(text, f"surface={path}: its `config` attribute")
    except UserError as err:
        raise UserError(
            f"{err}; remake the surface file with python -m landscape_hpc.surface"
        ) from None
    if not isinstance(stored, dict) or not all(
        isinstance(stored.get(k), dict) for k in ("model", "dataset")
    ):
        raise UserError(
            f"surface={path}: its `config` attribute names no model and dataset mapping; remake "
            "the surface file with python -m landscape_hpc.surface"
        )
    if any("${" in v for k in ("model", "dataset", "engine") for v in _strings(stored.get(k))):
        raise UserError(
            f"surface={path}: its `config` attribute holds an interpolation (${{...}}), which a "
            "file may not use; remake the surface file with python -m landscape_hpc.surface"
        )
    return stored


def _strings(value: Any) -> list[str]:
    """Every string inside nested dicts and lists."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _command_line_trust(
    path: Path,
    model: ModelConfig,
    dataset: DatasetConfig,
    cli_model: Optional[ModelConfig],
    cli_dataset: Optional[DatasetConfig],
) -> tuple[ModelConfig, DatasetConfig]:
    """The stored configs with trust and code targets taken from the command line only: what
    the file asks for must be passed there too, or the file is refused."""
    trust = bool(cli_model is not None and cli_model.trust_checkpoint)
    if model.trust_checkpoint and not trust:
        raise UserError(
            f"surface={path} asks to unpickle its checkpoint fully (model.trust_checkpoint: true "
            "in its config), which a file may not decide: pass model.trust_checkpoint=true on "
            "the command line only if you trust that checkpoint"
        )
    model = dataclasses.replace(model, trust_checkpoint=trust)
    # nor may it make torchvision download into a folder it names
    download = bool(cli_dataset is not None and cli_dataset.download)
    dataset = dataclasses.replace(dataset, download=download)
    for key, stored, cli in (("model", model, cli_model), ("dataset", dataset, cli_dataset)):
        if stored.name != "custom" and stored.target is None:
            continue
        cli_target = cli.target if cli is not None and cli.name == "custom" else None
        if cli_target != stored.target or stored.name != "custom":
            raise UserError(
                f"surface={path} names code to import ({key}.name={stored.name}, "
                f"{key}.target={stored.target!r} in its config), which a file may not decide: "
                f"pass {key}=custom {key}.target={stored.target} on the command line if you "
                "trust that code"
            )
    return model, dataset
