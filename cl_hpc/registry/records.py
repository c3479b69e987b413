"""The registry's records as typed values, and their SQLite rows (JSON text in the JSON columns)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from cl_hpc.registry.versions import Version

_JSON_COLUMNS = ("config", "window_partitions", "packages", "metrics", "tags", "init_args", "signature")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: Version
    strategy: str
    checkpoint_path: str
    checkpoint_sha256: str
    created: float
    parent: Version | None = None
    config: dict[str, Any] = field(default_factory=dict)  # resolved: architecture, features, data, ...
    window_partitions: list[str] = field(default_factory=list)
    window_digest: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    python: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    run_id: str | None = None
    task_key: str | None = None
    quarantined: str | None = None  # why the checkpoint is no longer trusted; None while it is
    model_class: str | None = None  # the LightningModule's dotted path (None: a first-format MLP version)
    init_args: dict[str, Any] = field(default_factory=dict)  # what it was built with, data-derived ones included
    datamodule_class: str | None = None  # the LightningDataModule's dotted path
    signature: dict[str, Any] = field(default_factory=dict)  # inputs and outputs, as MLflow records them

    @property
    def promotable(self) -> bool:
        return self.quarantined is None

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def to_row(self) -> dict[str, Any]:
        row = {key: value for key, value in self.__dict__.items() if key not in ("version", "parent")}
        for key in _JSON_COLUMNS:
            row[key] = json.dumps(row[key], sort_keys=True)
        row["git_dirty"] = None if self.git_dirty is None else int(self.git_dirty)
        row.update(major=self.version.major, minor=self.version.minor,
                   parent_major=self.parent.major if self.parent else None,
                   parent_minor=self.parent.minor if self.parent else None)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "ModelVersion":
        values = {key: row[key] for key in cls.__dataclass_fields__ if key in row}
        for key in _JSON_COLUMNS:  # each defaults to an empty list or dict (its default_factory)
            factory = cls.__dataclass_fields__[key].default_factory
            values[key] = json.loads(row[key]) if row.get(key) else factory() if callable(factory) else None
        values["git_dirty"] = None if row.get("git_dirty") is None else bool(row["git_dirty"])
        values["version"] = Version(row["major"], row["minor"])
        values["parent"] = _version_or_none(row.get("parent_major"), row.get("parent_minor"))
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: versions as "X.Y" strings."""
        out = dict(self.__dict__)
        out["version"] = str(self.version)
        out["parent"] = str(self.parent) if self.parent else None
        return out


@dataclass(frozen=True)
class AliasEvent:
    id: int
    at: float
    name: str
    alias: str
    action: str  # "promote", "rollback" (undo the latest change) or "rollback-to" (an explicit version)
    from_version: Version | None  # None: the alias was new
    to_version: Version
    reason: str
    actor: str | None = None
    run_id: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "AliasEvent":
        return cls(id=row["id"], at=row["at"], name=row["name"], alias=row["alias"], action=row["action"],
                   from_version=_version_or_none(row["from_major"], row["from_minor"]),
                   to_version=Version(row["to_major"], row["to_minor"]), reason=row["reason"],
                   actor=row["actor"], run_id=row["run_id"])

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["from_version"] = str(self.from_version) if self.from_version else None
        out["to_version"] = str(self.to_version)
        return out


def _version_or_none(major: int | None, minor: int | None) -> Version | None:
    return None if major is None or minor is None else Version(int(major), int(minor))


def rollback_target(events: list[AliasEvent]) -> Version | None:
    """Where a plain rollback of one alias goes: undo its latest change that is not undone yet.

    The log is replayed as a stack: a promote (or a rollback to an explicit version) pushes the
    version it replaced, a plain rollback pops. So promote 1.0, 1.1, 1.2 then rollback, rollback
    goes 1.2 -> 1.1 -> 1.0 instead of flipping between the last two. None: nothing left to undo.
    """
    undo: list[Version | None] = []
    for event in events:
        if event.action == "rollback":
            if undo:
                undo.pop()
        else:
            undo.append(event.from_version)
    return undo[-1] if undo else None
