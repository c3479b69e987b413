"""What a task's callable receives: the contract between the executors and the task code.

A task target is any importable callable of the form::

    def my_task(ctx: TaskContext, **params) -> Mapping[str, Any]

``params`` are the task's resolved ``params`` from the config. The returned mapping is the task's
outputs: it must be JSON-serialisable, and is written atomically to ``<task_dir>/outputs.json``.
Large artefacts (tables, checkpoints) are written as files under ``ctx.task_dir`` and their paths
returned in the outputs, so downstream tasks (and later runs) can find them.

This module stays free of heavy imports: the launcher and the executors import it on the
login node.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
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


@dataclass(frozen=True)
class TaskContext:
    run_id: str
    task: str  # the task's name in the pipeline, e.g. "train"
    key: str  # unique key of this unit of work: "train", or "features[3]" for a shard of a fan-out
    task_dir: Path  # exists; private to this task (all attempts share it)
    run_dir: Path
    attempt: int  # 1-based
    # Outputs of each upstream task, by task name. An upstream fan-out gives a list of its shards'
    # outputs (in shard order), except across a shard-to-shard edge, where it gives the one
    # matching shard's outputs.
    upstream: Mapping[str, Any] = field(default_factory=dict)
    item: Any = None  # the element of ``foreach`` this shard handles (None for a plain task)
    shard: int | None = None  # the shard's index in ``foreach`` (None for a plain task)
    resources: Mapping[str, Any] = field(default_factory=dict)  # the resources it was given
    # cl_hpc.profile.task.TaskProfiler of this attempt (None with profile.enabled=false, and on
    # the extra ranks of a multi-process task): Lightning tasks add its callback, loops use steps().
    profiler: Any = field(default=None, compare=False)
    _last_progress: list[float] = field(default_factory=lambda: [0.0], repr=False, compare=False)

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
