"""Configuration: typed schemas (schema.py) and helpers that compose and resolve them (compose.py)."""

from cl_hpc.config.schema import (
    ClusterConf,
    Config,
    LaunchConf,
    LocalClusterConf,
    PipelineConf,
    Resources,
    SlurmClusterConf,
    StoreConf,
    TaskConf,
    register,
)

__all__ = [
    "ClusterConf",
    "Config",
    "LaunchConf",
    "LocalClusterConf",
    "PipelineConf",
    "Resources",
    "SlurmClusterConf",
    "StoreConf",
    "TaskConf",
    "register",
]
