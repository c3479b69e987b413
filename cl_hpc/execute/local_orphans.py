"""Task processes of a local run that outlived their scheduler, found and stopped from the run dir.

The local scheduler runs each unit as a submitit controller process with the task as its child.
Killed or crashed, the scheduler leaves them running: a resume would then run the same unit twice
at once in the same task dir, and a cancel request would wait for a reader that is gone. These
functions find them from what the run dir holds, with no live scheduler to ask:

- scheduler.json's ``running`` map: each unit's controller pid and start time, written when the
  scheduler started it (before the task could record anything);
- each unit's last attempt record still RUNNING on this host: the task's pid and the controller's
  (its submitit job id), each taken as the same process only if it started before the record.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import psutil

from cl_hpc import procs
from cl_hpc.atomic import read_json
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.records import AttemptRecord
from cl_hpc.states import AttemptState

SCHEDULER_FILE = "scheduler.json"
_UNFINISHED = (AttemptState.RUNNING, AttemptState.PREEMPTED)


@dataclass
class Orphan:
    key: str
    attempt: int
    epoch: int
    processes: list[psutil.Process]  # the roots: the controller and/or the task process
    record: AttemptRecord | None  # the attempt's record, if the task wrote one


def find_orphans(run: RunDir, keys: list[str]) -> list[Orphan]:
    """The units among ``keys`` whose task processes still run on this host."""
    info = read_json(run.path / SCHEDULER_FILE) or {}
    started: Mapping[str, Mapping[str, Any]] = info.get("running") or {}
    found = []
    for key in keys:
        orphan = _orphan(run, key, started.get(key), int(info.get("epoch", 0)))
        if orphan is not None:
            found.append(orphan)
    return found


def _orphan(run: RunDir, key: str, launched: Mapping[str, Any] | None, epoch: int) -> Orphan | None:
    attempts = run.attempts(key)
    last = attempts[-1] if attempts else None
    roots: list[psutil.Process | None] = []
    attempt = None
    if launched:
        roots.append(procs.process(launched.get("pid"), started=launched.get("pid_started")))
        attempt, epoch = int(launched["attempt"]), int(launched.get("epoch", epoch))
    if last and last.get("state") in _UNFINISHED and last.get("host") == os.uname().nodename:
        # the controller (its pid is the submitit job id) and the task process
        roots += [procs.process(pid, before=last.get("started")) for pid in (last.get("job_id"), last.get("pid"))]
        if attempt is None:
            attempt, epoch = int(last["attempt"]), int(last.get("epoch", epoch))
    live = list({p.pid: p for p in roots if p is not None}.values())
    record = last if last and attempt is not None and int(last["attempt"]) == attempt else None
    if not live or attempt is None or (record and record.get("state") not in _UNFINISHED):
        return None  # nothing runs, or it recorded its end and is on its way out: leave its record
    return Orphan(key, attempt, epoch, live, record)


def stop_orphans(run: RunDir, keys: list[str], why: str) -> list[Orphan]:
    """Stop every orphaned task process tree among ``keys`` (SIGTERM, then SIGKILL), then record its
    attempt FAILED with ``why``: after the processes are gone, so none can overwrite the record."""
    orphans = find_orphans(run, keys)
    for orphan in orphans:
        procs.stop([p for root in orphan.processes for p in procs.tree(root)])
        base: AttemptRecord = orphan.record or {"attempt": orphan.attempt, "state": AttemptState.RUNNING,
                                                "epoch": orphan.epoch, "started": None, "host": os.uname().nodename}
        pids = ", ".join(str(p.pid) for p in orphan.processes)
        run.write_attempt(orphan.key, {**base, "state": AttemptState.FAILED, "ended": time.time(),
                                       "error": f"orphaned: {why}; stopped its processes (pid {pids})"})
    return orphans
