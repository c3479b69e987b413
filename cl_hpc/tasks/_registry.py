"""What the continual-learning tasks share: the registry named by their params, and its champion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from cl_hpc.errors import ConfigError
from cl_hpc.registry.records import ModelVersion
from cl_hpc.registry.store import ModelRegistry


@dataclass(frozen=True)
class RegistryRef:
    root: str  # the store root holding the registry (the launch's store.root)
    name: str  # the model's name in it (default: the pipeline's name)
    alias: str = "champion"


def registry_ref(params: Optional[Mapping[str, Any]]) -> RegistryRef:
    if not params or not params.get("root") or not params.get("name"):
        raise ConfigError("the task needs params.registry: {root: ${store.root}, name: <model name>} "
                          "(see conf/pipeline/continual.yaml)")
    return RegistryRef(str(params["root"]), str(params["name"]), str(params.get("alias", "champion")))


def champion(reg: ModelRegistry, ref: RegistryRef) -> Optional[ModelVersion]:
    """The version the alias points at, or None before the first promotion (cold start)."""
    if ref.name not in reg.names() or ref.alias not in reg.aliases(ref.name):
        return None
    return reg.get(ref.name, ref.alias)


def newest_of_line(reg: ModelRegistry, record: ModelVersion) -> bool:
    """Whether ``record`` is the newest X.Y of its X: only that one can be fine-tuned into X.(Y+1)."""
    same = [v.version for v in reg.versions(record.name) if v.version.major == record.version.major]
    return max(same) == record.version
