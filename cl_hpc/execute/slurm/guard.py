"""`python -m cl_hpc.execute.slurm.guard RUN_DIR TASK EPOCH`: the retry guard job (see guard_submit).

It records what the task's jobs could not (a memory or time-limit kill), then either re-submits
the shards that failed with attempts left, with resources escalated where memory or time was the
cause, and points the dependents at the new job; or, once no attempts are left, cancels the
dependents, which ``status`` then shows CANCELLED with this task as their root cause.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Mapping

from cl_hpc.config.schema import Resources, SlurmClusterConf
from cl_hpc.dag.model import Plan
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm import commands
from cl_hpc.execute.slurm.accounting import query_accounting
from cl_hpc.execute.slurm.escalate import escalate
from cl_hpc.execute.slurm.executor import (
    Launch,
    SlurmExecutor,
    TaskJobs,
    dependency,
    launch_jobs,
    read_jobs,
    save_launch,
    unit_jobs,
)
from cl_hpc.execute.slurm.parse import LIVE_STATES, SlurmState
from cl_hpc.execute.slurm.reconcile import reconcile, sacct_states
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import State, UnitStatus, run_status
from cl_hpc.states import Limit


def guard(run: RunDir, task: str, epoch: int) -> str:
    plan = run.load_plan()
    conf = SlurmClusterConf(**read_jobs(run)["cluster"])
    jobs = launch_jobs(run, epoch)
    task_jobs = list(jobs[task]["units"].values())
    if not wait_accounted(task_jobs):
        print(f"cl_hpc guard: sacct still shows a job of {task} running after 120 s (is slurmdbd behind?); "
              f"going on with what it shows", file=sys.stderr, flush=True)
    reconcile(run, unit_jobs(run))
    statuses = run_status(run, plan)
    units = [plan.units[k] for k in jobs[task]["units"]]
    dead = [u.key for u in units if statuses[u.key].state is State.FAILED]
    retry = [u for u in units if statuses[u.key].state is State.RETRYING]
    if dead:
        # Raises when scancel fails: this guard job then ends FAILED and status's problems() names
        # it, where a warning would leave the dependents waiting forever behind a COMPLETED guard.
        commands.scancel(_dependent_jobs(plan, jobs, task))
        return f"{', '.join(dead)} failed with no attempts left: cancelled the dependents of {task}"
    if not retry:
        return f"every unit of {task} completed: nothing to do"
    executor = SlurmExecutor(conf)
    errors = [statuses[u.key].error or "" for u in retry]
    peak = _peak_mb(task_jobs) if any(Limit.OUT_OF_MEMORY.ended(e) for e in errors) else None
    res, reasons = escalate(Resources(**jobs[task]["resources"]), errors, peak, *_caps(executor, plan, task))
    replaced = jobs[task]

    def record(entry: TaskJobs) -> None:
        """The re-submitted job is queued: into slurm.json before its own guard is submitted, so it
        is never left untracked. Until that guard's id replaces it, the entry names this guard: if
        its submission fails, this job ends FAILED and problems() names it."""
        entry["units"] = {**replaced["units"], **entry["units"]}
        entry["history"] = [*replaced.get("history", []), {"job_id": replaced["job_id"], "escalation": reasons}]
        if replaced.get("guard"):
            entry["guard"] = replaced["guard"]
        jobs[task] = entry
        save_launch(run, epoch, jobs, conf)

    entry = executor.submit_task(run, plan, plan.tasks[task], retry, {}, epoch, resources=res, on_submitted=record)
    save_launch(run, epoch, jobs, conf)  # with the new guard's id
    _repoint(plan, jobs, task, statuses)
    return (f"re-submitted {', '.join(u.key for u in retry)} as job {entry['job_id']}"
            + "".join(f"; {r}" for r in reasons))


def _dependent_jobs(plan: Plan, jobs: Launch, task: str) -> list[str]:
    return [j for name, spec in plan.tasks.items() if task in spec.depends_on and name in jobs
            for j in (jobs[name]["job_id"], jobs[name].get("guard")) if j]


def _repoint(plan: Plan, jobs: Launch, task: str, statuses: Mapping[str, UnitStatus]) -> None:
    """Dependents wait on the new job; upstreams that already completed drop out of the condition
    (Slurm forgets finished jobs after MinJobAge, and a forgotten id must not stand in it)."""
    done = {t for t, e in jobs.items() if all(statuses[k].state is State.COMPLETED for k in e["units"])}
    pending = {t: e for t, e in jobs.items() if t not in done}
    for name, spec in plan.tasks.items():
        if task in spec.depends_on and name in jobs:
            array = jobs[name]["array"]
            shards = tuple(array) if array is not None else None
            condition = dependency(plan, spec, shards, pending)
            commands.scontrol("update", f"JobId={jobs[name]['job_id']}", f"Dependency={condition}")


def wait_accounted(job_ids: list[str], timeout_s: float = 120.0, poll_s: float = 1.0,
                   states: Callable[[list[str]], dict[str, tuple[str, str]]] = sacct_states) -> bool:
    """Wait until sacct holds an ended state for every job; False if it still did not at the deadline.

    The guard starts tens of ms after the task's jobs end (afterany), and slurmdbd may not have
    their end yet. Read then, a job killed for memory looks RUNNING (or absent), the guard finds
    nothing to retry, and the dependents would wait forever on a job that will never succeed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            known = states(job_ids)
        except ExecutorError as exc:  # slurmdbd busy or restarting: ask again until the deadline
            print(f"cl_hpc guard: {exc}", file=sys.stderr, flush=True)
            known = {}
        if all(known.get(j, (SlurmState.PENDING, ""))[0] not in LIVE_STATES for j in job_ids):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def _peak_mb(job_ids: list[str], timeout_s: float = 30.0) -> float | None:
    """The largest MaxRSS over these jobs' task steps (accounting.fold_sacct), or None when
    accounting has none. A step's MaxRSS can arrive a moment after the job's end (or half-written,
    seen as "16?"): ask again for a while before escalating without a measured peak.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        measured = [e["max_rss_mb"] for e in query_accounting(job_ids).values() if e["max_rss_mb"]]
        if measured or time.monotonic() > deadline:
            return max(measured) if measured else None
        time.sleep(1.0)


def _caps(executor: SlurmExecutor, plan: Plan, task: str) -> tuple[float | None, float | None]:
    """The most memory (GB) and time (min) the task's partition can ever give one job."""
    from cl_hpc.execute.slurm.cluster import query_cluster

    info = query_cluster()
    res = executor.resources(plan.tasks[task])
    part = info.partition(res.partition or info.default_partition or "")
    if part is None:
        return None, None
    nodes = [n for n in info.nodes if n.name in part.nodes]
    mem = max((n.real_memory_mb for n in nodes), default=None)
    return (mem / 1024 if mem else None), part.max_time_min


def main(argv: list[str]) -> int:
    run_dir, task, epoch = argv
    print(f"cl_hpc guard: {guard(RunDir(run_dir), task, int(epoch))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
