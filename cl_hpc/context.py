"""What a task's callable receives: the contract between the executors and the task code.

A task target is any importable callable of the form::

    def my_task(ctx: TaskContext, **params) -> Mapping[str, Any]

``params`` are the task's resolved ``params`` from the config. The returned mapping is the task's
outputs: it must be JSON-serialisable, and is written atomically to ``<task_dir>/outputs.json``.
Large artefacts (tables, checkpoints) are written as files under ``ctx.task_dir`` and their paths
returned in the outputs, so downstream tasks (and later runs) can find them.

This module stays free of heavy imports: the launcher and the executors import it on the
login node, and every job before its task starts (so no ``typing`` or ``dataclasses`` either:
cl_hpc/execute/runner.py says why).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping


# A pre-timeout or requeue signal that reached a Slurm job before any checkpointing fit was running:
# the job entry (cl_hpc/execute/slurm/job.py) leaves its name here, and the fit acts on it at its first
# step (cl_hpc/learn/preemption.py).
PENDING_SIGNAL_ENV = "CL_HPC_PENDING_SIGNAL"


class Preempted(Exception):
    """Raised by a task that saved its state on a pre-timeout or preemption signal.

    The runner records the attempt PREEMPTED (not failed) and has the scheduler requeue the job;
    the task, started again with the same attempt number, resumes from what it saved.
    """

    def __init__(self, message: str, requeue: bool = True) -> None:
        super().__init__(message)
        self.requeue = requeue  # False when the scheduler itself requeues (scontrol requeue sends SIGTERM)


class TaskContext:
    """What one attempt of a unit knows about itself. Its attributes cannot be set or deleted.

    - ``run_id``; ``task``: the task's name in the pipeline, e.g. "train"; ``key``: the unit's
      unique key, "train", or "features[3]" for a shard of a fan-out;
    - ``task_dir``: exists and is private to this unit (all its attempts share it); ``run_dir``;
    - ``attempt``: 1-based;
    - ``upstream``: the outputs of each upstream task, by task name. An upstream fan-out gives a
      list of its shards' outputs (in shard order), except across a shard-to-shard edge, where
      it gives the one matching shard's outputs;
    - ``item`` and ``shard``: the element of ``foreach`` this shard handles and its index (None
      for a plain task);
    - ``resources``: what it was given (cl_hpc.config.resources.Resources' fields);
    - ``profiler``: the cl_hpc.profile.task.TaskProfiler of this attempt (None with
      profile.enabled=false, and on the extra ranks of a multi-process task). Lightning tasks add
      its callback, loops use ``steps()``.

    A plain class rather than a frozen dataclass: the dataclasses module (with ``inspect``) is the
    largest import a job would make before its task starts.
    """

    __slots__ = ("run_id", "task", "key", "task_dir", "run_dir", "attempt", "upstream", "item", "shard",
                 "resources", "profiler", "_last_progress", "__weakref__")
    # The slots' types, for type checkers and readers: annotations alone make no class attributes.
    run_id: str
    task: str
    key: str
    task_dir: Path
    run_dir: Path
    attempt: int
    upstream: Mapping[str, Any]
    item: Any
    shard: int | None
    resources: Mapping[str, Any]
    profiler: Any
    _last_progress: list[float]

    def __init__(self, run_id: str, task: str, key: str, task_dir: Path, run_dir: Path, attempt: int,
                 upstream: Mapping[str, Any] | None = None, item: Any = None, shard: int | None = None,
                 resources: Mapping[str, Any] | None = None, profiler: Any = None) -> None:
        values = {"run_id": run_id, "task": task, "key": key, "task_dir": task_dir, "run_dir": run_dir,
                  "attempt": attempt, "upstream": {} if upstream is None else upstream, "item": item,
                  "shard": shard, "resources": {} if resources is None else resources, "profiler": profiler,
                  "_last_progress": [0.0]}
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"TaskContext is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"TaskContext is read-only: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy.deepcopy (a DataLoader worker, a spawned process) rebuild it through
        # __init__: their default sets each slot with setattr, which a read-only class refuses.
        return (type(self), (self.run_id, self.task, self.key, self.task_dir, self.run_dir, self.attempt,
                              self.upstream, self.item, self.shard, self.resources, self.profiler))

    def __repr__(self) -> str:
        shown = ("run_id", "task", "key", "task_dir", "attempt", "item", "shard")
        return "TaskContext(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"

    def progress(self, done: float, total: float | None = None, note: str = "", *, force: bool = False) -> None:
        """Report progress; the launcher's live view and ``status`` show it.

        Writes are throttled to one every 0.5 s (unless ``force``), so a training loop may call
        this every step.
        """
        now = time.monotonic()
        if not force and now - self._last_progress[0] < 0.5 and (total is None or done < total):
            return
        self._last_progress[0] = now
        payload = {"done": done, "total": total, "note": note, "time": time.time()}
        path = self.task_dir / "progress.json"
        tmp = path.with_name(f".progress.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)
