"""Scheduling rules shared by the local and in-process backends: pure functions over plan and states."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from cl_hpc.config.resources import Resources
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan
from cl_hpc.rundir.layout import RunDir


@dataclass
class Pool:
    """Resources not yet handed out. GPUs are concrete device ids, so each task gets its own."""

    cpus: int
    mem_gb: float
    gpu_ids: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, capacity: Capacity) -> "Pool":
        return cls(capacity.cpus, capacity.mem_gb, list(range(capacity.gpus)))

    def fits(self, res: Resources) -> bool:
        cpus = res.cpus * res.tasks_per_node
        return cpus <= self.cpus and res.mem_gb <= self.mem_gb + 1e-9 and res.gpus <= len(self.gpu_ids)

    def take(self, res: Resources) -> list[int]:
        self.cpus -= res.cpus * res.tasks_per_node
        self.mem_gb -= res.mem_gb
        taken, self.gpu_ids = self.gpu_ids[: res.gpus], self.gpu_ids[res.gpus :]
        return taken

    def give_back(self, res: Resources, gpu_ids: Iterable[int]) -> None:
        self.cpus += res.cpus * res.tasks_per_node
        self.mem_gb += res.mem_gb
        self.gpu_ids = sorted([*self.gpu_ids, *gpu_ids])


def ready(plan: Plan, todo: Iterable[str], done: set[str]) -> list[str]:
    """Units of ``todo`` whose dependencies have all completed, in plan order."""
    todo_set = set(todo)
    return [k for k, u in plan.units.items() if k in todo_set and all(d in done for d in u.deps)]


def cancel_dependents(run: RunDir, plan: Plan, failed: str, reason: str | None = None) -> list[str]:
    """Mark everything downstream of ``failed`` cancelled, naming it as the root cause."""
    why = reason or f"upstream {failed} failed"
    cancelled = plan.descendants(failed)
    for key in cancelled:
        run.mark_cancelled(key, why, failed)
    return cancelled
