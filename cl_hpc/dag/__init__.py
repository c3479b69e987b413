"""The pipeline DAG: model (Plan, TaskSpec, Unit), validation and expansion (build), views (render)."""

from cl_hpc.dag.build import build_plan, digest
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Edge, Plan, TaskSpec, Unit, unit_key
from cl_hpc.dag.render import format_resources, mermaid, render_plan

__all__ = [
    "Capacity",
    "Edge",
    "Plan",
    "TaskSpec",
    "Unit",
    "build_plan",
    "digest",
    "format_resources",
    "mermaid",
    "render_plan",
    "unit_key",
]
