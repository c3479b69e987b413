"""Copy what a run directory says into the store. The run dir is the truth; this is an index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from cl_hpc.rundir.layout import RunDir, runs_in
from cl_hpc.rundir.state import State, UnitStatus, root_cause, run_status
from cl_hpc.store.db import Store
from cl_hpc.store.profiles import profile_rows


def sync_run(store: Store, run: RunDir) -> None:
    plan = run.load_plan()
    statuses = run_status(run, plan)
    meta = run.meta()
    cause = root_cause(statuses)
    counts = {s: sum(1 for st in statuses.values() if st.state is s) for s in State}
    store.upsert("runs", [{
        "run_id": run.run_id, "pipeline": plan.pipeline, "backend": meta.get("backend", ""),
        "created": meta.get("created"), "state": run_state(statuses), "run_dir": str(run.path),
        "host": meta.get("host", ""), "n_units": len(statuses), "n_completed": counts[State.COMPLETED],
        "n_failed": counts[State.FAILED], "n_cancelled": counts[State.CANCELLED], "updated": time.time(),
    }])
    store.upsert("tasks", [task_row(run, plan.units[k].task, plan.units[k].shard, plan.spec(k).resources, s, cause)
                           for k, s in statuses.items()])
    store.upsert("attempts", [attempt_row(run.run_id, k, a) for k, s in statuses.items() for a in s.attempts])
    store.upsert("profiles", profile_rows(run))


def index_run(run: RunDir, conf: Mapping[str, Any]) -> None:
    """Sync ``run`` into the store that ``conf`` (a plan's meta["store"]) names."""
    with Store(conf["root"], conf["journal_mode"], conf["busy_timeout_s"]) as store:
        sync_run(store, run)


def sync_unit(store: Store, run: RunDir, key: str, attempt: Mapping[str, Any]) -> None:
    """What one job writes about itself: cheap, no scan of the whole run."""
    store.upsert("attempts", [attempt_row(run.run_id, key, attempt)])


def rebuild(store: Store, run_root: Path) -> int:
    """Re-index every run under ``run_root``; returns how many runs were indexed."""
    runs = runs_in(run_root)
    for run in runs:
        store.delete_run(run.run_id)
        sync_run(store, run)
    return len(runs)


def run_state(statuses: Mapping[str, UnitStatus]) -> str:
    states = {s.state for s in statuses.values()}
    if states <= {State.COMPLETED}:
        return "COMPLETED"
    if all(s.terminal for s in states):
        return "FAILED" if State.FAILED in states else "CANCELLED"
    return "RUNNING" if states & {State.RUNNING, State.RETRYING} or State.COMPLETED in states else "PENDING"


def task_row(run: RunDir, task: str, shard: int | None, res: Any, status: UnitStatus, cause: UnitStatus | None) -> dict[str, Any]:
    last = status.last or {}
    return {
        "run_id": run.run_id, "key": status.key, "task": task, "shard": shard, "state": status.state.value,
        "attempts": len(status.attempts), "started": status.started, "ended": status.ended,
        "duration_s": status.duration_s, "cpus": res.cpus, "gpus": res.gpus, "mem_gb": res.mem_gb,
        "time_min": res.time_min, "log": last.get("log"), "fingerprint": last.get("fingerprint"),
        "root_cause": (status.cancelled or {}).get("root_cause") or (cause.key if cause and status is cause else None),
        "error": last.get("error"),
    }


def attempt_row(run_id: str, key: str, attempt: Mapping[str, Any]) -> dict[str, Any]:
    fields = ("attempt", "state", "started", "ended", "host", "pid", "job_id", "log", "error", "fingerprint")
    return {"run_id": run_id, "key": key, **{f: attempt.get(f) for f in fields}}
