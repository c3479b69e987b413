"""Turn a pipeline config into a validated Plan, or say everything that is wrong with it at once."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import fields
from typing import Any, Iterable, Mapping

from cl_hpc.config.resources import Resources
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.classes import workload_problems
from cl_hpc.dag.model import Edge, EdgeKind, Plan, TaskSpec, Unit, unit_key
from cl_hpc.dag.names import case_collisions, pipeline_name_problem, task_name_problem
from cl_hpc.dag.targets import target_problem
from cl_hpc.errors import DagError, ResourceError

_WHERE = "pipeline.tasks"


def build_plan(pipeline: Mapping[str, Any], capacity: Capacity | None, workdir: str = "") -> Plan:
    """Validate ``pipeline`` (a resolved ``PipelineConf`` as plain data) and expand it into units."""
    tasks = {name: _spec(name, conf) for name, conf in (pipeline.get("tasks") or {}).items()}
    if not tasks:
        raise DagError(f"pipeline {pipeline.get('name')!r} has no tasks; add some under {_WHERE}")
    problems = [p for p in (pipeline_name_problem(pipeline.get("name")),) if p] + _structure_problems(tasks)
    if problems:  # a cycle or a dangling edge makes every later check meaningless
        raise DagError(report("the pipeline's graph is invalid", problems))
    order = topological_order(tasks)
    problems = [p for name in order for p in _task_problems(tasks[name], tasks)]
    problems += workload_problems([tasks[name] for name in order], _WHERE)  # model/datamodule classes, unimported
    resource_problems = [p for name in order for p in resource_problems_of(tasks[name], capacity)]
    if problems:
        raise DagError(report("the pipeline is invalid", problems + resource_problems))
    if resource_problems:
        raise ResourceError(report("a task asks for more than the cluster can give", resource_problems))
    ordered = {name: tasks[name] for name in order}
    edges = tuple(_edge(tasks[up], tasks[name]) for name in order for up in tasks[name].depends_on)
    units = _expand(ordered, edges)
    return Plan(str(pipeline.get("name", "")), ordered, edges, units, workdir)


def _spec(name: str, conf: Mapping[str, Any]) -> TaskSpec:
    foreach = conf.get("foreach")
    res = dict(conf.get("resources") or {})
    known = {f.name for f in fields(Resources)}
    return TaskSpec(
        name=name,
        target=str(conf.get("target", "")),
        params=dict(conf.get("params") or {}),
        depends_on=tuple(conf.get("depends_on") or ()),
        resources=Resources(**{k: v for k, v in res.items() if k in known}),
        retries=int(conf.get("retries", 0)),
        foreach=tuple(foreach) if isinstance(foreach, (list, tuple)) else foreach,
    )


def _structure_problems(tasks: Mapping[str, TaskSpec]) -> list[str]:
    problems = [p for name in tasks if (p := task_name_problem(name, f"{_WHERE}.{name}"))]
    problems += case_collisions(tasks, _WHERE)
    for spec in tasks.values():
        for dep in spec.depends_on:
            if dep == spec.name:
                problems.append(f"{_WHERE}.{spec.name}.depends_on lists the task itself")
            elif dep not in tasks:
                close = difflib.get_close_matches(dep, list(tasks), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known tasks: {', '.join(tasks)}"
                problems.append(f"{_WHERE}.{spec.name}.depends_on names unknown task {dep!r}{hint}")
    cycle = find_cycle(tasks)
    if cycle:
        problems.append(f"dependency cycle: {' -> '.join(cycle)}; remove one of these edges")
    return problems


def find_cycle(tasks: Mapping[str, TaskSpec]) -> list[str] | None:
    """A cycle as a closed path (first name repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in tasks[name].depends_on:
            if dep not in tasks or state.get(dep) == 2:
                continue
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            found = visit(dep)
            if found:
                return found
        path.pop()
        state[name] = 2
        return None

    for name in tasks:
        if name not in state:
            found = visit(name)
            if found:
                return list(reversed(found))  # read along the data flow: upstream -> downstream
    return None


def topological_order(tasks: Mapping[str, TaskSpec]) -> list[str]:
    """Kahn's order, ties broken by the order tasks appear in the config (stable plans and diffs)."""
    remaining = {name: set(spec.depends_on) for name, spec in tasks.items()}
    order: list[str] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            raise DagError(f"dependency cycle among {sorted(remaining)}")
        for name in ready:
            order.append(name)
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def _task_problems(spec: TaskSpec, tasks: Mapping[str, TaskSpec]) -> list[str]:
    where = f"{_WHERE}.{spec.name}"
    problems = []
    problem = target_problem(spec.target) if spec.target else f"{where}.target is empty"
    if problem:
        problems.append(f"{where}.target: {problem}")
    if spec.foreach is not None and not isinstance(spec.foreach, tuple):
        problems.append(
            f"{where}.foreach must be a list (one shard per element), got "
            f"{type(spec.foreach).__name__} {spec.foreach!r}; e.g. foreach: [2024-01, 2024-02]"
        )
    elif spec.foreach == ():
        problems.append(f"{where}.foreach is an empty list: the task would never run; remove foreach or add items")
    if spec.retries < 0:
        problems.append(f"{where}.retries must be >= 0, got {spec.retries}")
    return problems


def resource_problems_of(spec: TaskSpec, capacity: Capacity | None) -> list[str]:
    res, where = spec.resources, f"{_WHERE}.{spec.name}.resources"
    problems = [f"{where}.{msg}" for msg in _impossible(res)]
    if capacity is None or problems:
        return problems
    hint = f" (set {capacity.hint})" if capacity.hint else ""
    checks: Iterable[tuple[str, float, float]] = (
        ("cpus", res.cpus, capacity.cpus),
        ("mem_gb", res.mem_gb, capacity.mem_gb),
        ("gpus", res.gpus, capacity.gpus),
        ("nodes", res.nodes, capacity.nodes),
    )
    for name, asked, limit in checks:
        if asked > limit:
            problems.append(f"{where}.{name}={asked:g} but {capacity.where} offers at most {limit:g}{hint}")
    if capacity.max_time_min is not None and res.time_min > capacity.max_time_min:
        problems.append(f"{where}.time_min={res.time_min:g} exceeds {capacity.where}'s limit of "
                        f"{capacity.max_time_min:g}")
    return problems


def _impossible(res: Resources) -> list[str]:
    problems = []
    for name in ("cpus", "nodes", "tasks_per_node"):
        if getattr(res, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(res, name)}")
    for name in ("mem_gb", "time_min"):
        if getattr(res, name) <= 0:
            problems.append(f"{name} must be > 0, got {getattr(res, name)}")
    if res.gpus < 0:
        problems.append(f"gpus must be >= 0, got {res.gpus}")
    if res.gpu_type and res.gpus == 0:
        problems.append(f"gpu_type={res.gpu_type!r} is set but gpus=0; ask for gpus >= 1 or drop gpu_type")
    return problems


def _edge(up: TaskSpec, down: TaskSpec) -> Edge:
    # Two fan-outs over the same number of shards pair shard i with shard i (Slurm's aftercorr):
    # shard 3 of "train" then needs only shard 3 of "features", not the whole fan-out.
    same_width = up.is_fanout and down.is_fanout and len(up.foreach or ()) == len(down.foreach or ())
    kind: EdgeKind = "corr" if same_width else "all"
    return Edge(up.name, down.name, kind)


def _expand(tasks: Mapping[str, TaskSpec], edges: tuple[Edge, ...]) -> dict[str, Unit]:
    units: dict[str, Unit] = {}
    for spec in tasks.values():
        shards: list[tuple[int | None, Any]] = (
            [(None, None)] if spec.foreach is None else list(enumerate(spec.foreach))
        )
        for shard, item in shards:
            deps = _unit_deps(spec, shard, tasks, edges)
            config_fp = digest({"target": spec.target, "params": spec.params, "item": item})
            chained = digest([config_fp] + [units[d].fingerprint for d in deps])
            key = unit_key(spec.name, shard)
            units[key] = Unit(key, spec.name, shard, item, tuple(deps), config_fp, chained)
    return units


def _unit_deps(spec: TaskSpec, shard: int | None, tasks: Mapping[str, TaskSpec], edges: tuple[Edge, ...]) -> list[str]:
    deps: list[str] = []
    for edge in edges:
        if edge.downstream != spec.name:
            continue
        up = tasks[edge.upstream]
        if edge.kind == "corr":
            deps.append(unit_key(up.name, shard))
        elif up.foreach is None:
            deps.append(up.name)
        else:
            deps.extend(unit_key(up.name, i) for i in range(len(up.foreach)))
    return deps


def digest(value: Any) -> str:
    """sha256 of a canonical JSON rendering (sorted keys), so equal configs give equal digests."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def report(title: str, problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return (f"{title}:\n{lines}\nNothing was submitted. The pipeline's tasks are under `pipeline.tasks` "
            "in the composed config (see conf/pipeline/).")
