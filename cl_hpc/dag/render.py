"""Human views of a Plan: a text table for `launch.dry_run=true` and a mermaid graph."""

from __future__ import annotations

import re
from typing import Mapping

from cl_hpc.config.resources import Resources
from cl_hpc.dag.model import Plan


def format_resources(res: Resources) -> str:
    parts = [f"cpus={res.cpus}", f"mem={res.mem_gb:g}G", f"time={res.time_min:g}m"]
    if res.gpus:
        parts.append(f"gpus={res.gpus}" + (f"({res.gpu_type})" if res.gpu_type else ""))
    if res.nodes > 1 or res.tasks_per_node > 1:
        parts.append(f"nodes={res.nodes}x{res.tasks_per_node}")
    for name in ("partition", "account", "qos", "constraint"):
        value = getattr(res, name)
        if value:
            parts.append(f"{name}={value}")
    parts.extend(f"{k}={v}" for k, v in sorted(res.extra.items()))
    return " ".join(parts)


def render_plan(plan: Plan, actions: Mapping[str, str]) -> str:
    """One block per task: its dependencies (and edge kinds), resources, fan-out and the backend's action."""
    lines = [f"pipeline {plan.pipeline!r}: {len(plan.tasks)} tasks, {len(plan.units)} units of work"]
    for spec in plan.tasks.values():
        deps = ", ".join(
            f"{d} (shard-to-shard)" if plan.edge_kind(d, spec.name) == "corr" else d for d in spec.depends_on
        )
        lines.append(f"  {spec.name}")
        lines.append(f"    target     {spec.target}")
        lines.append(f"    after      {deps or '-'}")
        lines.append(f"    resources  {format_resources(spec.resources)}")
        if spec.foreach is not None:
            lines.append(f"    fan-out    {len(spec.foreach)} shards over {_short(list(spec.foreach))}")
        if spec.retries:
            lines.append(f"    retries    {spec.retries}")
        lines.append(f"    backend    {actions.get(spec.name, '-')}")
    return "\n".join(lines)


def mermaid(plan: Plan) -> str:
    """A mermaid flowchart: fan-outs show their width, shard-to-shard edges are dotted."""
    lines = ["flowchart LR"]
    for spec in plan.tasks.values():
        label = spec.name if spec.foreach is None else f"{spec.name} ×{len(spec.foreach)}"
        shape = ("[[", "]]") if spec.foreach is not None else ("[", "]")
        lines.append(f'  {_node_id(spec.name)}{shape[0]}"{label}"{shape[1]}')
    for edge in plan.edges:
        arrow = "-.->|per shard|" if edge.kind == "corr" else "-->"
        lines.append(f"  {_node_id(edge.upstream)} {arrow} {_node_id(edge.downstream)}")
    return "\n".join(lines)


def _node_id(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _short(items: list[object], limit: int = 4) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return f"[{shown}, …]" if len(items) > limit else f"[{shown}]"
