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


def newer_in_line(reg: ModelRegistry, record: ModelVersion) -> list[ModelVersion]:
    """Versions X.(Y+k) after ``record``'s X.Y: the registry fine-tunes only the newest of a line."""
    return [v for v in reg.versions(record.name)
            if v.version.major == record.version.major and v.version > record.version]


def fine_tune_block(reg: ModelRegistry, record: ModelVersion) -> str | None:
    """Why the champion cannot be fine-tuned into the next X.(Y+1), or None if it can."""
    newer = newer_in_line(reg, record)
    if not newer:
        return None
    rejected = all("rejected" in v.tags for v in newer)
    what = "a rejected fine-tune of it" if rejected else "a later version of its line (a rollback?)"
    return f"{newer[-1].version} exists, {what}; the registry fine-tunes only the newest of a line"
