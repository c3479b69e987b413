"""The validated pipeline: tasks, the edges between them, and the units of work (shards) they expand to.

A ``Plan`` is what every executor receives. It is plain data: it round-trips through
``plan.json`` so that a job on another node (or a later ``status``/resume) sees exactly what the
launcher validated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Literal, Mapping

from cl_hpc.config.resources import Resources
from cl_hpc.dag.unit_call import compact_deps, expand_deps, unit_key  # the job's reader owns plan.json's format

EdgeKind = Literal["all", "corr"]  # "all": after every upstream shard; "corr": shard i after shard i


@dataclass(frozen=True)
class TaskSpec:
    name: str
    target: str
    params: Mapping[str, Any]
    depends_on: tuple[str, ...]
    resources: Resources
    retries: int = 0
    foreach: tuple[Any, ...] | None = None  # None: a plain task; a tuple: one shard per element

    @property
    def is_fanout(self) -> bool:
        return self.foreach is not None


@dataclass(frozen=True)
class Edge:
    upstream: str
    downstream: str
    kind: EdgeKind


@dataclass(frozen=True)
class Unit:
    """One schedulable piece of work: a plain task, or one shard of a fan-out."""

    key: str  # "train" or "features[3]"
    task: str
    shard: int | None
    item: Any
    deps: tuple[str, ...]  # keys of the units it waits for
    config_fp: str  # digest of its own target, params and item
    fingerprint: str  # config_fp chained with its upstream units' fingerprints (a Merkle digest)


@dataclass(frozen=True)
class Plan:
    pipeline: str
    tasks: Mapping[str, TaskSpec]  # in topological order
    edges: tuple[Edge, ...]
    units: Mapping[str, Unit]  # in topological order
    workdir: str = ""  # the launch directory: relative paths in params are relative to it
    meta: Mapping[str, Any] = field(default_factory=dict)

    def spec(self, key: str) -> TaskSpec:
        return self.tasks[self.units[key].task]

    def units_of(self, task: str) -> list[Unit]:
        return [u for u in self.units.values() if u.task == task]

    def descendants(self, key: str) -> list[str]:
        """Unit keys that (transitively) wait for ``key``, in topological order."""
        hit = {key}
        for unit in self.units.values():
            if any(d in hit for d in unit.deps):
                hit.add(unit.key)
        return [k for k in self.units if k in hit and k != key]

    def edge_kind(self, upstream: str, downstream: str) -> EdgeKind:
        for edge in self.edges:
            if edge.upstream == upstream and edge.downstream == downstream:
                return edge.kind
        raise KeyError(f"no edge {upstream} -> {downstream}")

    def __iter__(self) -> Iterator[Unit]:
        return iter(self.units.values())

    def to_dict(self) -> dict[str, Any]:
        widths = {t.name: len(t.foreach) for t in self.tasks.values() if t.foreach is not None}
        return {
            "pipeline": self.pipeline,
            "workdir": self.workdir,
            "meta": dict(self.meta),
            "tasks": [_spec_to_dict(s) for s in self.tasks.values()],
            "edges": [asdict(e) for e in self.edges],
            "units": [_unit_to_dict(u, compact_deps(u.deps, widths)) for u in self.units.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        tasks = {t["name"]: _spec_from_dict(t) for t in data["tasks"]}
        units = {u["key"]: Unit(**{**u, "deps": tuple(expand_deps(u["deps"]))}) for u in data["units"]}
        edges = tuple(Edge(**e) for e in data["edges"])
        return cls(data["pipeline"], tasks, edges, units, data.get("workdir", ""), data.get("meta", {}))


def _unit_to_dict(unit: Unit, deps: list[str | dict[str, Any]]) -> dict[str, Any]:
    # Every field, so a new one is never left out of plan.json; not asdict, which would deep-copy
    # every unit's deps only to replace them.
    return {**{f.name: getattr(unit, f.name) for f in fields(unit)}, "deps": deps}


def _spec_to_dict(spec: TaskSpec) -> dict[str, Any]:
    out = asdict(spec)
    out["depends_on"] = list(spec.depends_on)
    out["foreach"] = None if spec.foreach is None else list(spec.foreach)
    return out


def _spec_from_dict(data: Mapping[str, Any]) -> TaskSpec:
    foreach = data.get("foreach")
    return TaskSpec(
        name=data["name"],
        target=data["target"],
        params=data.get("params", {}),
        depends_on=tuple(data.get("depends_on", ())),
        resources=Resources(**data["resources"]),
        retries=int(data.get("retries", 0)),
        foreach=None if foreach is None else tuple(foreach),
    )


__all__ = ["Edge", "EdgeKind", "Plan", "TaskSpec", "Unit", "unit_key"]
