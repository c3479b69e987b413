"""One unit of a plan as its job runs it, read straight from plan.json's data.

A job runs one unit. Building the whole ``Plan`` (cl_hpc/dag/model.py) would cost it the import
of ``dataclasses`` (which imports ``inspect``), of ``typing`` and of the Hydra-facing
``Resources``, plus one object per unit of the pipeline: about 15 ms of CPU before the task
starts, which the eight shards of a fan-out pay at once on a node's cores. This reader needs only
what ``json`` gives. It reads ``Plan.to_dict``'s format, and tests/unit/test_unit_call.py checks
it against ``Plan`` for every unit of real plans.

This module and the rest of the job path (cl_hpc/execute/runner.py lists them) import neither
``typing`` nor ``dataclasses``: ``TYPE_CHECKING = False`` below keeps the annotations' imports
for type checkers, which treat the name as true.
"""

from __future__ import annotations

import json

from cl_hpc.errors import ExecutorError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping, Sequence


def unit_key(task: str, shard: int | None) -> str:
    return task if shard is None else f"{task}[{shard}]"


def expand_deps(entries: list[Any]) -> list[str]:
    """The unit keys of plan.json's ``deps``: each entry is a unit key, or ``{"fanout": task,
    "shards": n}`` for all n shards of an upstream fan-out in shard order. An all-to-all edge
    between fan-outs of widths N and M would otherwise list N keys in each of M units: plan.json
    N x M in size, parsed by every job. Plans written before (keys only) read the same."""
    keys: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            keys.append(entry)
        else:
            keys.extend(unit_key(entry["fanout"], i) for i in range(entry["shards"]))
    return keys


def compact_deps(deps: Sequence[str], widths: Mapping[str, int]) -> list[str | dict[str, Any]]:
    """``deps`` as plan.json stores them, the inverse of expand_deps: a run of all the shards of a
    fan-out, in shard order, becomes one ``{"fanout": task, "shards": n}``. ``widths``: each
    fan-out task's number of shards."""
    first = {unit_key(task, 0): (task, n) for task, n in widths.items() if n > 1}
    out: list[str | dict[str, Any]] = []
    i = 0
    while i < len(deps):
        task, n = first.get(deps[i], ("", 0))
        if n and list(deps[i:i + n]) == [unit_key(task, shard) for shard in range(n)]:
            out.append({"fanout": task, "shards": n})
            i += n
        else:
            out.append(deps[i])
            i += 1
    return out


class UnitCall:
    """What running unit ``key`` needs: its callable, params, resources and upstream units."""

    __slots__ = ("pipeline", "workdir", "meta", "key", "task", "shard", "item", "target", "params",
                 "resources", "fingerprint", "config_fp", "upstream")

    def __init__(self, data: Mapping[str, Any], key: str) -> None:
        unit = next((u for u in data["units"] if u["key"] == key), None)
        if unit is None:
            raise KeyError(f"the plan has no unit {key!r}")
        tasks = {t["name"]: t for t in data["tasks"]}
        spec = tasks[unit["task"]]
        self.pipeline: str = data["pipeline"]
        self.workdir: str = data.get("workdir", "")
        self.meta: Mapping[str, Any] = data.get("meta", {})
        self.key: str = key
        self.task: str = unit["task"]
        self.shard: int | None = unit["shard"]
        self.item: Any = unit["item"]
        self.target: str = spec["target"]
        self.params: Mapping[str, Any] = spec.get("params", {})
        self.resources: dict[str, Any] = dict(spec["resources"])
        self.fingerprint: str = unit["fingerprint"]
        self.config_fp: str = unit["config_fp"]
        # Each upstream task's unit key, or the keys of all its shards (in shard order) for a
        # fan-out, except across a shard-to-shard edge, where only the matching shard counts.
        kinds = {e["upstream"]: e["kind"] for e in data["edges"] if e["downstream"] == self.task}
        self.upstream: dict[str, str | list[str]] = {}
        for dep in spec.get("depends_on", ()):
            foreach = tasks[dep].get("foreach")
            if kinds.get(dep) == "corr":
                self.upstream[dep] = unit_key(dep, self.shard)
            elif foreach is None:
                self.upstream[dep] = dep
            else:
                self.upstream[dep] = [unit_key(dep, i) for i in range(len(foreach))]

    def run_under(self, given: str) -> None:
        """Take the resources this attempt's scheduler gave it in place of the plan's: a retry it
        escalated (cl_hpc/execute/slurm/escalate.py) runs with more memory or time, and what the job
        records (its profile's ``requested``, its attempt record, a time-limit message) must say so.
        ``given`` is the JSON of those Resources; a field it leaves out keeps the plan's value."""
        why: str | None
        try:
            resources = json.loads(given)
        except ValueError as exc:
            resources, why = None, f"not JSON ({exc})"
        else:
            why = _resources_problem(resources, self.resources)
        if why is not None:
            raise ExecutorError(
                f"unit {self.key!r}: the resources its scheduler gave this attempt ({RESOURCES_OPTION} of "
                f"cl_hpc.execute.slurm.job, or run_unit's resources= from the local scheduler) are invalid: {why}; "
                f"got {given!r}, expected the JSON of a Resources (cl_hpc/config/resources.py), e.g. "
                f'{{"mem_gb": 0.5, "time_min": 10}}')
        self.resources = {**self.resources, **resources}

    def __repr__(self) -> str:
        return f"UnitCall({self.key!r} of {self.pipeline!r}: {self.target})"


RESOURCES_OPTION = "--resources"  # how the Slurm job entry takes them (cl_hpc/execute/slurm/job.py)
_COUNTS = ("cpus", "gpus", "mem_gb", "time_min", "nodes", "tasks_per_node")  # gpus alone may be 0


def _resources_problem(given: Any, planned: Mapping[str, Any]) -> str | None:
    if not isinstance(given, dict):
        return "not a JSON object"
    unknown = sorted(set(given) - set(planned))
    if unknown:
        return f"unknown field(s) {', '.join(map(repr, unknown))}"
    for name in _COUNTS:
        value = given.get(name, planned.get(name, 1))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or value < 0 or (value == 0 and name != "gpus"):
            return f"{name}={value!r} is not a positive number"
    return None
