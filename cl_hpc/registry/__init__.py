"""The model registry: versions X.Y of named models, their provenance, aliases and the alias log.

Light on purpose: importing it loads neither torch nor Lightning (only loading a checkpoint does).

    from cl_hpc.registry import ModelRegistry
    with ModelRegistry.open("store") as registry:
        v = registry.register("retrain", "runs/<id>/tasks/train/model.pt", strategy="stateless", ...)
        registry.promote("retrain", v.version, "champion", reason="first model")
        workload = registry.load_model("retrain", "champion")  # recorded classes, weights and states
"""

from cl_hpc.registry.records import AliasEvent, ModelVersion
from cl_hpc.registry.store import ModelRegistry
from cl_hpc.registry.versions import RegistryError, Version, parse_version

__all__ = ["AliasEvent", "ModelRegistry", "ModelVersion", "RegistryError", "Version", "parse_version"]
