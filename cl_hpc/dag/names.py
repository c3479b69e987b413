"""The names that become paths, Slurm job names and unit keys, and the set each may be drawn from.

A task's name is a folder under the run dir (``tasks/<name>``), part of its Slurm job name
(``cl_hpc.<run_id>.<task>``) and of its units' keys (``<task>[<shard>]`` for a fan-out); a run id
is a folder under ``run_root``. So ``../x`` would write outside the run, and ``a[0]`` beside a
fan-out ``a`` would be the key of its shard 0 and silently replace it. Every name is checked
against a documented safe set before anything is written or submitted.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
TASK_NAME_RULE = ("letters, digits, '_' and '-', starting with a letter or '_', at most 64 characters "
                  "(it becomes a folder, a Slurm job name and a unit key)")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
RUN_ID_RULE = ("letters, digits, '_', '-' and '.', starting with a letter or digit, at most 128 characters "
               "(it becomes a folder under run_root)")


def task_name_problem(name: object, where: str) -> Optional[str]:
    """Why ``name`` cannot name a task (``where`` locates it in the config), or None."""
    if isinstance(name, str) and TASK_NAME.fullmatch(name):
        return None
    return f"{where}: task name {name!r} is not allowed; use {TASK_NAME_RULE}"


def case_collisions(names: Iterable[str], where: str) -> list[str]:
    """Names equal but for case: on a case-insensitive filesystem (macOS, local mode) they would
    share one task folder, and the last writer's outputs would silently stand for both."""
    seen: dict[str, str] = {}
    problems = []
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            problems.append(f"{where}: task names {other!r} and {name!r} differ only in case; rename one "
                            f"(on a case-insensitive filesystem they would share one task folder)")
    return problems


def pipeline_name_problem(name: object) -> Optional[str]:
    """Why ``name`` cannot name a pipeline: it keys the profile history and names registry models."""
    if isinstance(name, str) and TASK_NAME.fullmatch(name):
        return None
    return f"pipeline.name {name!r} is not allowed; use {TASK_NAME_RULE.split(' (')[0]}"


def run_id_problem(run_id: object) -> Optional[str]:
    """Why ``run_id`` cannot name a run, or None."""
    if isinstance(run_id, str) and RUN_ID.fullmatch(run_id):
        return None
    return f"launch.run_id={run_id!r} is not allowed; use {RUN_ID_RULE}"
