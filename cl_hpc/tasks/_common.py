"""Small helpers the built-in tasks share (no heavy imports)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from cl_hpc.context import TaskContext
from cl_hpc.errors import ConfigError


def upstream(ctx: TaskContext, name: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    """The outputs of upstream task ``name``, checked for the keys this task reads."""
    outputs = ctx.upstream.get(name)
    if not isinstance(outputs, Mapping):
        raise ConfigError(f"task {ctx.task!r} needs the outputs of a task named {name!r}; add "
                          f"`depends_on: [{name}]` to it in the pipeline config (upstream here: {list(ctx.upstream)})")
    missing = [k for k in keys if k not in outputs]
    if missing:
        raise ConfigError(f"upstream task {name!r} of {ctx.task!r} has no output(s) {missing}; its target must "
                          f"be a compatible task (e.g. cl_hpc.tasks.{name}.run)")
    return outputs


def cpus(ctx: TaskContext) -> Optional[int]:
    """The cores this task was given (None when the executor did not say)."""
    value = ctx.resources.get("cpus") if ctx.resources else None
    return int(value) if value else None


def gpus(ctx: TaskContext) -> int:
    """The GPUs this task was given (0 when none, or when the executor did not say)."""
    value = ctx.resources.get("gpus") if ctx.resources else None
    return int(value or 0)
