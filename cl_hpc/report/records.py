"""What an HTML run report shows, as typed records: built from a run directory by
:mod:`cl_hpc.report.run_data`, drawn by :mod:`cl_hpc.report.charts` and the page templates. Plain data
(numbers, strings, lists), so a page renders the same from a finished run, a running one or a test's
hand-made record.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional


class TimeSource(enum.Enum):
    """Where an attempt's submit, start and end times come from."""

    SACCT = "sacct"  # Slurm's own Submit/Start/End
    LOCAL = "local"  # the run directory's records (the local scheduler, or a job's own record)


class Limit(enum.Enum):
    """A limit that ended an attempt (from cl_hpc.states.Limit, which the attempt record's error starts with:
    ``OUT_OF_MEMORY: ...``, ``TIMEOUT: ...``)."""

    OOM = "OOM"
    TIMEOUT = "TIMEOUT"


@dataclass(frozen=True)
class AttemptBar:
    """One attempt of one unit: a bar of the Gantt chart (queue wait, then run time)."""

    unit: str  # "train", "materialize[3]"
    task: str  # "materialize"
    shard: Optional[int]  # the fan-out index, None for a plain task
    attempt: int  # 1, 2, ...
    state: str  # cl_hpc.states.AttemptState value: COMPLETED, FAILED, RUNNING, ...
    submitted: Optional[float]  # epoch seconds; None when unknown (then no queue wait is drawn)
    started: Optional[float]  # None: still queued
    ended: Optional[float]  # None: still running (the bar runs to the report's time)
    source: TimeSource
    job_id: Optional[str] = None
    limit: Optional[Limit] = None  # the limit that ended it, if one did
    escalation: list[str] = field(default_factory=list)  # what the next attempt raised, one reason each
    error: Optional[str] = None  # why it failed


@dataclass(frozen=True)
class Timeline:
    """One attempt's profile series (cl_hpc/profile/sampler.py), seconds from the attempt's start."""

    unit: str
    attempt: int
    t: list[float]
    cpu_pct: list[Optional[float]]  # 100 = one core busy
    rss_mb: list[Optional[float]]
    mem_request_mb: Optional[float]  # the request, drawn as a line over RSS
    cpus_requested: Optional[int]
    gpu_util_pct: list[list[Optional[float]]] = field(default_factory=list)  # per GPU, then per sample
    gpu_mem_mb: list[list[Optional[float]]] = field(default_factory=list)
    gpu_power_w: list[list[Optional[float]]] = field(default_factory=list)


@dataclass(frozen=True)
class TaskNode:
    """One task of the DAG, coloured by the state of its units."""

    name: str
    depends_on: list[str]
    state: str  # cl_hpc.states.State value of the task as a whole (the worst of its units)
    units: int  # 1, or the fan-out's width
    unit_states: dict[str, int]  # State value -> units in it


@dataclass(frozen=True)
class Failure:
    """A unit that failed for good: its error, the tail of its log, and whether it is the run's root cause."""

    unit: str
    attempt: int
    error: str
    log_path: Optional[str]
    log_tail: list[str]  # the last lines of its log (stderr, then stdout), as written
    root_cause: bool


@dataclass(frozen=True)
class RunReport:
    """Everything a run's page shows."""

    run_id: str
    run_dir: str
    pipeline: str
    backend: str  # local | slurm | inprocess
    state: str  # the run's State value
    finished: bool  # False: the run is still going; the page says so and shows what is known
    created: Optional[float]  # epoch seconds of the launch
    as_of: float  # when the report was built (a running bar ends here)
    tasks: list[TaskNode]
    attempts: list[AttemptBar]
    timelines: list[Timeline]
    efficiency: list[dict[str, Any]]  # cl_hpc.report.efficiency.efficiency_rows: one per profiled attempt
    failures: list[Failure]
    problems: list[str]  # what status reports as keeping the run from ending, unreadable records
    core_h_saved: float = 0.0  # what the next run's recommendations would have saved on this run
    gpu_h_saved: float = 0.0
