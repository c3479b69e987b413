"""`python -m cl_hpc.execute.slurm.guard RUN_DIR TASK EPOCH`: the retry guard job (see guard_submit).

It records what the task's jobs could not (a memory or time-limit kill), then either re-submits
the shards that failed with attempts left, with resources escalated where memory or time was the
cause, and points the dependents at the new job; or, once no attempts are left, cancels the
dependents, which ``status`` then shows CANCELLED with this task as their root cause.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from cl_hpc.atomic import read_json
from cl_hpc.config.schema import Resources, SlurmClusterConf
from cl_hpc.dag.model import Plan
from cl_hpc.execute.slurm.escalate import escalate
from cl_hpc.execute.slurm.executor import (JOBS_FILE, SlurmExecutor, dependency, launch_jobs, save_launch, scancel,
                                           unit_jobs)
from cl_hpc.execute.slurm.parse import parse_mem_mb, parse_sacct
from cl_hpc.execute.slurm.reconcile import reconcile
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import State, run_status


def guard(run: RunDir, task: str, epoch: int) -> str:
    plan = run.load_plan()
    conf = SlurmClusterConf(**(read_json(run.path / JOBS_FILE) or {})["cluster"])
    jobs = launch_jobs(run, epoch)
    reconcile(run, unit_jobs(run))
    statuses = run_status(run, plan)
    units = [plan.units[k] for k in jobs[task]["units"]]
    dead = [u.key for u in units if statuses[u.key].state is State.FAILED]
    retry = [u for u in units if statuses[u.key].state is State.RETRYING]
    if dead:
        scancel(_dependent_jobs(plan, jobs, task))
        return f"{', '.join(dead)} failed with no attempts left: cancelled the dependents of {task}"
    if not retry:
        return f"every unit of {task} completed: nothing to do"
    executor = SlurmExecutor(conf)
    res, reasons = escalate(Resources(**jobs[task]["resources"]), [statuses[u.key].last.get("error") for u in retry],
                            _peak_mb(list(jobs[task]["units"].values())), *_caps(executor, plan, task))
    entry = executor.submit_task(run, plan, plan.tasks[task], retry, {}, epoch, resources=res)
    entry["units"] = {**jobs[task]["units"], **entry["units"]}
    entry["history"] = [*jobs[task].get("history", []), {"job_id": jobs[task]["job_id"], "escalation": reasons}]
    jobs[task] = entry
    save_launch(run, epoch, jobs, conf)
    _repoint(plan, jobs, task, statuses)
    return f"re-submitted {', '.join(u.key for u in retry)} as job {entry['job_id']}" + "".join(f"; {r}" for r in reasons)


def _dependent_jobs(plan: Plan, jobs: dict[str, Any], task: str) -> list[str]:
    return [j for name, spec in plan.tasks.items() if task in spec.depends_on and name in jobs
            for j in (jobs[name]["job_id"], jobs[name].get("guard")) if j]


def _repoint(plan: Plan, jobs: dict[str, Any], task: str, statuses: Any) -> None:
    """Dependents wait on the new job; upstreams that already completed drop out of the condition
    (Slurm forgets finished jobs after MinJobAge, and a forgotten id must not stand in it)."""
    done = {t for t, e in jobs.items() if all(statuses[k].state is State.COMPLETED for k in e["units"])}
    pending = {t: e for t, e in jobs.items() if t not in done}
    for name, spec in plan.tasks.items():
        if task in spec.depends_on and name in jobs:
            shards = tuple(jobs[name]["array"]) if jobs[name]["array"] is not None else None
            condition = dependency(plan, spec, shards, pending)
            subprocess.run(["scontrol", "update", f"JobId={jobs[name]['job_id']}", f"Dependency={condition}"],
                           check=True, capture_output=True, text=True, timeout=60)


def _peak_mb(job_ids: list[str]) -> float | None:
    """The largest MaxRSS over every step of these jobs, or None when accounting has none."""
    out = subprocess.run(["sacct", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,MaxRSS"],
                         capture_output=True, text=True, timeout=60)
    values = [parse_mem_mb(r["MaxRSS"]) for r in parse_sacct(out.stdout, ["JobID", "MaxRSS"])]
    measured = [v for v in values if v]
    return max(measured) if measured else None


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
