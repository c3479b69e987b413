"""Copy what a run directory says into the store. The run dir is the truth; this is an index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, TypedDict

from cl_hpc.config.resources import Resources
from cl_hpc.rundir.layout import RunDir, runs_in
from cl_hpc.rundir.records import AttemptRecord
from cl_hpc.rundir.state import State, UnitStatus, root_cause, run_status
from cl_hpc.states import AttemptState
from cl_hpc.store.db import Store
from cl_hpc.store.profiles import profile_rows


class RunRow(TypedDict):
    """A row of the store's ``runs`` table (store/db.py)."""

    run_id: str
    pipeline: str
    backend: str
    created: float | None
    state: State  # run_state
    run_dir: str
    host: str
    n_units: int
    n_completed: int
    n_failed: int
    n_cancelled: int
    updated: float


class TaskRow(TypedDict):
    """A row of ``tasks``: one unit, from its UnitStatus and its last attempt."""

    run_id: str
    key: str
    task: str
    shard: int | None
    state: State
    attempts: int
    started: float | None
    ended: float | None
    duration_s: float | None
    cpus: int
    gpus: int
    mem_gb: float
    time_min: float
    log: str | None
    fingerprint: str | None
    root_cause: str | None
    error: str | None


class AttemptRow(TypedDict):
    """A row of ``attempts``: the indexed fields of an attempt record (rundir/records.py), same names."""

    run_id: str
    key: str
    attempt: int
    state: AttemptState
    started: float | None
    ended: float | None
    host: str | None
    pid: int | None
    job_id: str | None
    log: str | None
    error: str | None
    fingerprint: str | None


def sync_run(store: Store, run: RunDir) -> None:
    plan = run.load_plan()
    statuses = run_status(run, plan)
    meta = run.meta()
    cause = root_cause(statuses)
    counts = {s: sum(1 for st in statuses.values() if st.state is s) for s in State}
    row: RunRow = {
        "run_id": run.run_id, "pipeline": plan.pipeline, "backend": meta.get("backend", ""),
        "created": meta.get("created"), "state": run_state(statuses), "run_dir": str(run.path),
        "host": meta.get("host", ""), "n_units": len(statuses), "n_completed": counts[State.COMPLETED],
        "n_failed": counts[State.FAILED], "n_cancelled": counts[State.CANCELLED], "updated": time.time(),
    }
    store.upsert("runs", [row])
    store.upsert("tasks", [task_row(run, plan.units[k].task, plan.units[k].shard, plan.spec(k).resources, s, cause)
                           for k, s in statuses.items()])
    store.upsert("attempts", [attempt_row(run.run_id, k, a) for k, s in statuses.items() for a in s.attempts])
    store.upsert("profiles", profile_rows(run))


def index_run(run: RunDir, conf: Mapping[str, Any]) -> None:
    """Sync ``run`` into the store that ``conf`` (a plan's meta["store"]) names."""
    with Store(conf["root"], conf["journal_mode"], conf["busy_timeout_s"]) as store:
        sync_run(store, run)


def sync_unit(store: Store, run: RunDir, key: str, attempt: AttemptRecord) -> None:
    """What one job writes about itself: cheap, no scan of the whole run."""
    store.upsert("attempts", [attempt_row(run.run_id, key, attempt)])


def rebuild(store: Store, run_root: Path) -> int:
    """Re-index every run under ``run_root``; returns how many runs were indexed."""
    runs = runs_in(run_root)
    for run in runs:
        store.delete_run(run.run_id)
        sync_run(store, run)
    return len(runs)


def run_state(statuses: Mapping[str, UnitStatus]) -> State:
    states = {s.state for s in statuses.values()}
    if states <= {State.COMPLETED}:
        return State.COMPLETED
    if all(s.terminal for s in states):
        return State.FAILED if State.FAILED in states else State.CANCELLED
    return State.RUNNING if states & {State.RUNNING, State.RETRYING} or State.COMPLETED in states else State.PENDING


def task_row(run: RunDir, task: str, shard: int | None, res: Resources, status: UnitStatus,
             cause: UnitStatus | None) -> TaskRow:
    last: AttemptRecord | None = status.last
    return {
        "run_id": run.run_id, "key": status.key, "task": task, "shard": shard, "state": status.state,
        "attempts": len(status.attempts), "started": status.started, "ended": status.ended,
        "duration_s": status.duration_s, "cpus": res.cpus, "gpus": res.gpus, "mem_gb": res.mem_gb,
        "time_min": res.time_min, "log": last.get("log") if last else None,
        "fingerprint": last.get("fingerprint") if last else None,
        "root_cause": (status.cancelled or {}).get("root_cause") or (cause.key if cause and status is cause else None),
        "error": status.error,
    }


def attempt_row(run_id: str, key: str, attempt: AttemptRecord) -> AttemptRow:
    return {"run_id": run_id, "key": key, "attempt": attempt["attempt"], "state": attempt["state"],
            "started": attempt.get("started"), "ended": attempt.get("ended"), "host": attempt.get("host"),
            "pid": attempt.get("pid"), "job_id": attempt.get("job_id"), "log": attempt.get("log"),
            "error": attempt.get("error"), "fingerprint": attempt.get("fingerprint")}
