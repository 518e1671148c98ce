"""Structured configs: one dataclass per concern, one comment per field.

YAML files in `conf/` only select and override; the defaults, the types and the meaning of every
key live here, once. This package imports nothing else from landscape_hpc, so every layer may
import it; `landscape_hpc.cli.register_configs` stores the schemas in Hydra's ConfigStore.

    common    ModelConfig, DatasetConfig, EngineConfig (how the engine evaluates points)
    surface   DirectionsConfig, GridConfig, SurfaceConfig
    train     TrainConfig
    mpo       FitOptions, MaskConfig, SweepConfig, MPOConfig (= FitOptions + the rest)
    geometry  one schema per geometry experiment
"""

from landscape_hpc.config.common import DatasetConfig, EngineConfig, ModelConfig
from landscape_hpc.config.geometry import (
    ConnectorConfig,
    CurveConfig,
    HessianConfig,
    HullConfig,
    HyperplaneConfig,
    IntrinsicDimConfig,
    ShortDirsConfig,
    TunnelConfig,
    WedgeConfig,
    WedgeHyperplaneConfig,
    WidthConfig,
)
from landscape_hpc.config.mpo import FitOptions, MaskConfig, MPOConfig, SweepConfig
from landscape_hpc.config.surface import DirectionsConfig, GridConfig, SurfaceConfig
from landscape_hpc.config.train import TrainConfig

#: `<name>_schema` in the ConfigStore -> its dataclass: conf/<name>.yaml (the commands) and
#: conf/geometry/<name>.yaml (the geometry experiments, by their command-line names)
SCHEMAS: dict[str, type] = {
    "surface": SurfaceConfig,
    "train": TrainConfig,
    "mpo": MPOConfig,
    "wedge": WedgeConfig,
    "subspace": IntrinsicDimConfig,
    "tunnel": TunnelConfig,
    "connector": ConnectorConfig,
    "width": WidthConfig,
    "hessian": HessianConfig,
    "curve": CurveConfig,
}

__all__ = [
    "SCHEMAS",
    "ConnectorConfig",
    "CurveConfig",
    "DatasetConfig",
    "DirectionsConfig",
    "EngineConfig",
    "FitOptions",
    "GridConfig",
    "HessianConfig",
    "HullConfig",
    "HyperplaneConfig",
    "IntrinsicDimConfig",
    "MPOConfig",
    "MaskConfig",
    "ModelConfig",
    "ShortDirsConfig",
    "SurfaceConfig",
    "SweepConfig",
    "TrainConfig",
    "TunnelConfig",
    "WedgeConfig",
    "WedgeHyperplaneConfig",
    "WidthConfig",
]
