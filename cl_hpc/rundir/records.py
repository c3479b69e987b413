"""The records that cross layers through the run directory, each defined once.

``attempts/<n>.json`` is written by the job itself (cl_hpc/execute/runner.py), by the local
scheduler when a process ended without writing it (execute/local_agent.py, local_orphans.py) and
by the Slurm reconcile for a job Slurm killed (execute/slurm/reconcile.py). It is read by
rundir/state.py (the unit's state), status, the store's index (store/sync.py) and the retry
guard's escalation. Job-path modules import this module only under ``TYPE_CHECKING = False``
(runner.py): a TypedDict is a plain dict at run time.
"""

from __future__ import annotations

from typing import Any, TypedDict

from cl_hpc.states import AttemptState


class _AttemptKeys(TypedDict):
    attempt: int  # 1, 2, ...: the file's name; counted over every launch of the run
    state: AttemptState


class AttemptRecord(_AttemptKeys, total=False):
    """One attempt of one unit. Only ``attempt`` and ``state`` are in every record: a scheduler
    that records a process it lost knows less than the job that records itself."""

    epoch: int  # the launch that made it (run.json's launches[].epoch); 0 when absent
    started: float | None  # epoch seconds; a requeued attempt keeps its first start
    ended: float | None  # None while RUNNING or PREEMPTED
    host: str
    pid: int
    job_id: str | None  # the scheduler's id: "123", "123_4" (a shard), a local submitit id
    log: str | None  # this process's stdout log
    fingerprint: str  # the unit's fingerprint (dag/fingerprint.py) when it ran
    config_fp: str
    error: str | None  # why it FAILED; starts with a Limit's name when a limit ended it
    traceback: str | None
    requeues: int  # how often Slurm requeued this same attempt after a preemption
    resources: dict[str, Any]  # the Resources it ran under: the plan's, or those its scheduler escalated a retry to
    note: str  # the last preemption's message
    preemptions: list[str]  # why each requeue happened
    profile_error: str  # the profiler could not start or finish (never changes the outcome)
    max_rss_mb: float  # the local scheduler's peak of the process tree, when it ended the attempt
    slurm_state: str  # the Slurm state (parse.SlurmState) of a job that reconcile recorded
    unreadable: str  # the path of a record that could not be read (RunDir.attempts); state FAILED
    written: float  # with unreadable: the file's mtime, which tells the launch it belongs to (no epoch to read)

