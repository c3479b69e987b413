"""cluster=slurm: the whole plan becomes Slurm jobs in one pass, chained by Slurm's dependencies.

One job per task, one job array per fan-out. An edge is ``afterok`` on the upstream job (an array
id waits for every shard); between two fan-outs of the same shards it is ``aftercorr`` (shard i
waits for shard i only). Every job carries ``--kill-on-invalid-dep=yes``, so the dependents of a
failure end CANCELLED instead of pending forever. The launcher can then exit: Slurm runs the DAG.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import asdict, replace
from typing import Any, Callable, Mapping, Sequence, TypedDict

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.config.schema import Resources, SlurmClusterConf
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan, TaskSpec, Unit
from cl_hpc.dag.render import format_resources
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.base import Executor
from cl_hpc.execute.slurm import commands
from cl_hpc.execute.slurm.accounting import attach_sacct
from cl_hpc.execute.slurm.guard_submit import submit_guard
from cl_hpc.execute.slurm.parse import SELF_REPORTING
from cl_hpc.execute.slurm.reconcile import reconcile, sacct_states
from cl_hpc.execute.slurm.sbatch import SbatchJob
from cl_hpc.execute.slurm.submit import Submitter, job_id_of, wait_interval
from cl_hpc.rundir import launch_lock
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import UnitStatus, run_status

JOBS_FILE = "slurm.json"  # a JobsFile: written by submit and the retry guard (save_launch), read through read_jobs


class Escalation(TypedDict):
    job_id: str  # the task's job before its guard re-submitted the failed shards
    escalation: list[str]  # one reason per resource it raised (escalate.escalate); [] for none


class _TaskJobsKeys(TypedDict):
    job_id: str  # the job, or the array job for a fan-out ("123")
    array: list[int] | None  # the array's shard indices; None for a plain job
    units: dict[str, str]  # unit key -> its job id ("123", "123_4"); the latest job of a re-submitted shard
    resources: dict[str, Any]  # the Resources it was submitted with (vars), escalated ones included


class TaskJobs(_TaskJobsKeys, total=False):
    """The Slurm jobs of one task in one launch."""

    guard: str  # the retry guard's job id (tasks with retries only)
    history: list[Escalation]  # the jobs the guard replaced, oldest first


Launch = dict[str, TaskJobs]  # task name -> its jobs, in submission order


class JobsFile(TypedDict, total=False):
    """slurm.json: every Slurm job of a run. Readers: status (reconcile, problems), the retry guard,
    cancel, resume and the watch's lock (all_job_ids)."""

    cluster: dict[str, Any]  # the SlurmClusterConf launched with: the guard rebuilds the executor from it
    launches: dict[str, Launch]  # launch epoch (as text, a JSON key) -> its tasks


def read_jobs(run: RunDir) -> JobsFile:
    """The run's slurm.json; empty before its first submission."""
    data = read_json(run.path / JOBS_FILE)
    return data if data is not None else {}


def launches_of(run: RunDir) -> dict[str, Launch]:
    return read_jobs(run).get("launches") or {}


class SlurmExecutor(Executor):
    name = "slurm"
    follow_interval_s = 2.0  # each status asks sacct: keep slurmdbd's load low on a shared cluster

    def __init__(self, conf: SlurmClusterConf) -> None:
        self.conf = conf
        self._last_sbatch = 0.0  # cluster.submit_interval_s spaces every sbatch of a launch, guards included

    def capacity(self) -> Capacity | None:
        return None  # limits differ per partition: see check()

    def check(self, plan: Plan) -> list[str]:
        if not self.conf.check_limits:
            return []
        from cl_hpc.execute.slurm.cluster import query_cluster, resource_problems

        info = query_cluster()
        return [p for s in plan.tasks.values() for p in resource_problems(s.name, self.resources(s), info)]

    def resources(self, spec: TaskSpec) -> Resources:
        """The task's resources with the cluster's defaults filled in where the task names none."""
        res = spec.resources
        return replace(res, partition=res.partition or self.conf.partition, account=res.account or self.conf.account,
                       qos=res.qos or self.conf.qos)

    def stop_earlier(self, run: RunDir, plan: Plan) -> None:
        stop_earlier_jobs(run)  # what earlier launches left queued or running would run beside the new jobs

    def describe(self, plan: Plan) -> Mapping[str, str]:
        out = {}
        for spec in plan.tasks.values():
            kind = f"job array of {len(spec.foreach)}" if spec.foreach is not None else "one sbatch job"
            deps = [f"{'aftercorr' if plan.edge_kind(d, spec.name) == 'corr' else 'afterok'}:{d}"
                    for d in spec.depends_on]
            out[spec.name] = f"{kind}; {format_resources(self.resources(spec))}; dependency {','.join(deps) or '-'}"
        return out

    def submit(self, run: RunDir, plan: Plan, todo: Sequence[str], epoch: int) -> None:
        wanted = set(todo)
        submitted: Launch = {}
        try:
            for spec in plan.tasks.values():
                units = [u for u in plan.units_of(spec.name) if u.key in wanted]
                if units:
                    record = functools.partial(_record_task, run, epoch, submitted, self.conf, spec.name)
                    record(self.submit_task(run, plan, spec, units, submitted, epoch, on_submitted=record))
        except BaseException as exc:  # Ctrl-C mid-submission too: the same half DAG is left
            reason = abandon(run, todo, submitted, f"submitting task {spec.name!r} failed", exc)
            if not isinstance(exc, Exception):
                raise
            raise ExecutorError(f"{reason}\nEvery unit of this launch is marked CANCELLED; fix the cause and "
                                f"resume with launch.resume={run.run_id}") from exc

    def submit_task(self, run: RunDir, plan: Plan, spec: TaskSpec, units: list[Unit],
                    submitted: Mapping[str, TaskJobs], epoch: int, resources: Resources | None = None,
                    on_submitted: Callable[[TaskJobs], None] | None = None) -> TaskJobs:
        """Submit ``units`` of one task (a job, or an array for a fan-out), and its retry guard.

        ``on_submitted`` gets the entry as soon as the task's sbatch returned, before the guard is
        submitted: if the guard's sbatch fails (or Ctrl-C lands in between), the task's job is
        already recorded, so it is cancelled with the rest rather than left queued and untracked.
        The guard's id is then added to that same entry. ``resources`` replace the task's (the retry
        guard's escalated ones), and the job is told them (``--resources=``, cl_hpc/execute/slurm/job.py)."""
        shards = tuple(u.shard for u in units if u.shard is not None) if spec.foreach is not None else None
        job = SbatchJob(
            name=f"cl_hpc.{run.run_id}.{spec.name}", comment=f"cl_hpc run={run.run_id} task={spec.name}",
            resources=resources or self.resources(spec), folder=str(run.path / "tasks" / spec.name / "logs"),
            array=shards, array_parallelism=self.conf.array_parallelism,
            dependency=dependency(plan, spec, shards, submitted),
            # A retried upstream may fail first and succeed later: its guard re-points or cancels us.
            kill_on_invalid_dep=not any(plan.tasks[d].retries for d in spec.depends_on),
            signal_delay_s=self.conf.signal_delay_s, setup=tuple(self.conf.setup), use_srun=self.conf.use_srun,
            extra=dict(self.conf.extra),
        )
        submitter = Submitter(job, python=self.conf.python, interval_s=self.conf.submit_interval_s,
                              last_submitted=self._last_sbatch)
        attempts = {u.shard: len(run.attempts(u.key)) + 1 for u in units}
        # Resources given here are a retry's escalated ones: the job must know, its plan says the old request.
        given = json.dumps(asdict(job.resources)) if resources is not None else None
        job_ids = submitter.submit_units(str(run.path), spec.name, epoch, attempts, given)
        self._last_sbatch = submitter.last_submitted
        entry: TaskJobs = {"job_id": job_id_of(job_ids[0]), "array": list(shards) if shards is not None else None,
                                 "units": {u.key: j for u, j in zip(units, job_ids)},
                                 "resources": vars(job.resources)}
        if on_submitted is not None:
            on_submitted(entry)
        if spec.retries:
            wait_interval(self._last_sbatch, self.conf.submit_interval_s)
            self._last_sbatch = time.time()
            entry["guard"] = submit_guard(run, spec.name, epoch, entry["job_id"], job, self.conf.python)
        return entry

    def status(self, run: RunDir) -> dict[str, UnitStatus]:
        reconcile(run, unit_jobs(run))
        attach_sacct(run)
        return run_status(run)

    def cancel(self, run: RunDir) -> None:
        scancel(all_job_ids(run))

    def problems(self, run: RunDir) -> list[str]:
        """What leaves units waiting forever: a retry guard that failed (its task's dependents wait),
        or a launcher that stopped mid-submission (the units it never submitted). Each makes the
        run resumable."""
        guards = {e["guard"]: t for launch in launches_of(run).values() for t, e in launch.items() if e.get("guard")}
        states = sacct_states(list(guards))
        out = [f"the retry guard of {task} (job {job}) ended {states[job][0]}; see "
               f"{run.path / 'tasks' / task / 'logs' / f'{job}_0_log.err'}"
               for job, task in guards.items() if job in states and states[job][0] not in SELF_REPORTING]
        missing = never_submitted(run)
        if missing:
            out.append(f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} were never submitted: the "
                       f"launcher stopped mid-submission; `python -m cl_hpc.launch launch.resume={run.run_id}` "
                       f"cancels what it left queued and submits the run again")
        return out


def _record_task(run: RunDir, epoch: int, submitted: Launch, conf: SlurmClusterConf, task: str,
                 entry: TaskJobs) -> None:
    """``task``'s jobs are queued: in the launch (so an error from here on cancels them) and in slurm.json."""
    submitted[task] = entry
    save_launch(run, epoch, submitted, conf)


def abandon(run: RunDir, todo: Sequence[str], submitted: Mapping[str, TaskJobs], failed: str,
            cause: BaseException) -> str:
    """Cancel a launch that could not be submitted whole, and say so in the run dir; returns the
    reason recorded: ``failed`` ("submitting task 'c' failed"), what became of the jobs already
    submitted (cancelled, naming them, or why they could not be), and ``cause``.

    What was submitted waits on what never will be, so it is cancelled; every unit of the launch
    is then marked CANCELLED with the reason. Otherwise the units never submitted would read
    PENDING forever: no job of theirs exists for status to ask about, and resume would refuse a
    run that looks still going.
    """
    jobs = [j for s in submitted.values() for j in (s["job_id"], s.get("guard")) if j]
    if not jobs:
        done = "no job had been submitted yet"
    else:
        what = f"the {len(jobs)} job(s) already submitted ({', '.join(jobs)})"
        try:
            commands.scancel(jobs)
            done = f"{what} were cancelled"
        except ExecutorError as exc:  # said beside the cause, which is what the user must fix first
            done = f"{what} could NOT be cancelled ({exc}); cancel them with `scancel {' '.join(jobs)}`"
    reason = f"{failed}, so {done}: {cause}"
    for key in todo:
        if run.cancelled(key) is None and run.outputs(key) is None:  # a unit that already completed keeps it
            run.mark_cancelled(key, reason, None)
    return reason


# scancel only asks: slurmctld signals the job, then kills it after KillWait (30 s by default), and
# squeue lists it (COMPLETING) until its processes are gone.
STOP_WAIT_S = 60.0
STOP_POLL_S = 1.0


def stop_earlier_jobs(run: RunDir, timeout_s: float = STOP_WAIT_S, poll_s: float = STOP_POLL_S) -> None:
    """Before a resume submits: cancel what earlier launches of the run left queued or running,
    and wait until squeue no longer lists it. Raises, naming the jobs, when scancel fails or they
    are still listed after ``timeout_s``: a resume must never start a task beside its old copy."""
    ids = sorted(commands.live_jobs(all_job_ids(run)), key=int)
    if not ids:
        return
    try:
        commands.scancel(ids)
    except ExecutorError as exc:
        raise ExecutorError(f"the resume could not cancel job(s) {', '.join(ids)}, left by earlier launches of run "
                            f"{run.run_id}, so it submitted nothing: {exc}. Cancel them (`scancel {' '.join(ids)}`) "
                            f"and resume again") from None
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        left = commands.live_jobs(ids)
        if not left:
            return
        if not said:  # a wait of up to a minute must not look like a hang
            print(f"waiting up to {timeout_s:g} s for job(s) {', '.join(sorted(left))} of earlier launches to leave "
                  f"squeue after scancel (Slurm's KillWait)", file=sys.stderr, flush=True)
            said = True
        if time.monotonic() > deadline:
            named = ", ".join(f"{j} ({state})" for j, state in sorted(left.items()))
            raise ExecutorError(f"job(s) {named}, left by earlier launches of run {run.run_id}, are still in squeue "
                                f"{timeout_s:g} s after scancel, so the resume submitted nothing; resume again once "
                                f"`squeue -j {','.join(sorted(left))}` no longer lists them")
        time.sleep(poll_s)


def never_submitted(run: RunDir) -> list[str]:
    """Units of the latest launch with no Slurm job, while no launcher is submitting: its launcher
    was killed midway (SIGKILL, a lost login node), so nothing will ever run or cancel them."""
    launch = (run.meta().get("launches") or [None])[-1]
    if not launch or launch_lock.busy(run.path):
        return []
    jobs = launch_jobs(run, int(launch.get("epoch", 0)))
    have = {k for entry in jobs.values() for k in entry["units"]}
    return [k for k in launch.get("units", ()) if k not in have and run.cancelled(k) is None and run.outputs(k) is None]


def save_launch(run: RunDir, epoch: int, submitted: Mapping[str, TaskJobs], conf: SlurmClusterConf) -> None:
    data = read_jobs(run)
    data["cluster"] = {k: _plain(getattr(conf, k)) for k in SlurmClusterConf.__dataclass_fields__}
    data.setdefault("launches", {})[str(epoch)] = dict(submitted)
    write_json_atomic(run.path / JOBS_FILE, data)


def _plain(value: Any) -> Any:
    """OmegaConf containers (the launcher passes cfg.cluster) as JSON-ready lists and dicts."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def launch_jobs(run: RunDir, epoch: int) -> Launch:
    return dict(launches_of(run).get(str(epoch)) or {})


def unit_jobs(run: RunDir) -> dict[str, str]:
    """Unit key -> Slurm job id ("123" or "123_4") of the latest launch that submitted it."""
    launches = launches_of(run)
    jobs: dict[str, str] = {}
    for epoch in sorted(launches, key=int):
        for task in launches[epoch].values():
            jobs.update(task["units"])
    return jobs


def all_job_ids(run: RunDir) -> list[str]:
    """Every job and retry guard of every launch of the run."""
    launches = launches_of(run)
    return sorted({j for launch in launches.values() for t in launch.values()
                   for j in (t["job_id"], t.get("guard")) if j})


def dependency(plan: Plan, spec: TaskSpec, shards: tuple[int | None, ...] | None,
                submitted: Mapping[str, TaskJobs]) -> str | None:
    parts = []
    for dep in spec.depends_on:
        if dep not in submitted:
            continue  # reused from an earlier launch: already complete
        up = submitted[dep]
        # aftercorr only when both arrays hold the same shard indices; otherwise wait for all.
        corr = plan.edge_kind(dep, spec.name) == "corr" and up["array"] == (list(shards) if shards else None)
        parts.append(f"{'aftercorr' if corr else 'afterok'}:{up['job_id']}")
    return ",".join(parts) or None


def scancel(job_ids: Sequence[str]) -> None:
    """Cancel, and warn rather than raise: it runs while another error is being reported."""
    try:
        commands.scancel(job_ids)
    except ExecutorError as exc:
        print(f"cl_hpc: warning: {exc}", file=sys.stderr)
