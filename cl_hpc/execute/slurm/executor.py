"""cluster=slurm: the whole plan becomes Slurm jobs in one pass, chained by Slurm's dependencies.

One job per task, one job array per fan-out. An edge is ``afterok`` on the upstream job (an array
id waits for every shard); between two fan-outs of the same shards it is ``aftercorr`` (shard i
waits for shard i only). Every job carries ``--kill-on-invalid-dep=yes``, so the dependents of a
failure end CANCELLED instead of pending forever. The launcher can then exit: Slurm runs the DAG.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any, Mapping, Sequence

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.config.schema import Resources, SlurmClusterConf
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan, TaskSpec, Unit
from cl_hpc.dag.render import format_resources
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.base import Executor
from cl_hpc.execute.runner import run_unit
from cl_hpc.execute.slurm.reconcile import reconcile
from cl_hpc.execute.slurm.sbatch import SbatchJob
from cl_hpc.execute.slurm.submit import Submitter, job_id_of
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import UnitStatus, run_status

JOBS_FILE = "slurm.json"  # per launch epoch: task -> {job_id, array}; unit -> Slurm job id


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, conf: SlurmClusterConf) -> None:
        self.conf = conf

    def capacity(self) -> Capacity | None:
        return None  # limits differ per partition: see check()

    def check(self, plan: Plan) -> list[str]:
        problems = [
            f"pipeline.tasks.{s.name}.retries={s.retries}: retries are not yet supported on cluster=slurm "
            f"(use cluster=local, or retries=0 and launch.resume=<run> after a failure)"
            for s in plan.tasks.values() if s.retries
        ]
        if self.conf.check_limits:
            from cl_hpc.execute.slurm.cluster import query_cluster, resource_problems

            info = query_cluster()
            problems += [p for s in plan.tasks.values() for p in resource_problems(s.name, self.resources(s), info)]
        return problems

    def resources(self, spec: TaskSpec) -> Resources:
        """The task's resources with the cluster's defaults filled in where the task names none."""
        res = spec.resources
        return replace(res, partition=res.partition or self.conf.partition, account=res.account or self.conf.account,
                       qos=res.qos or self.conf.qos)

    def describe(self, plan: Plan) -> Mapping[str, str]:
        out = {}
        for spec in plan.tasks.values():
            kind = f"job array of {len(spec.foreach)}" if spec.foreach is not None else "one sbatch job"
            deps = [f"{'aftercorr' if plan.edge_kind(d, spec.name) == 'corr' else 'afterok'}:{d}" for d in spec.depends_on]
            out[spec.name] = f"{kind}; {format_resources(self.resources(spec))}; dependency {','.join(deps) or '-'}"
        return out

    def submit(self, run: RunDir, plan: Plan, todo: Sequence[str], epoch: int) -> None:
        wanted = set(todo)
        submitted: dict[str, dict[str, Any]] = {}
        try:
            for spec in plan.tasks.values():
                units = [u for u in plan.units_of(spec.name) if u.key in wanted]
                if units:
                    submitted[spec.name] = self._submit_task(run, plan, spec, units, submitted, epoch)
                    self._record(run, epoch, submitted)
        except Exception as exc:
            # Never leave half a DAG behind: what was submitted waits on what never will be.
            _scancel([s["job_id"] for s in submitted.values()])
            raise ExecutorError(f"submitting task {spec.name!r} failed, so the {len(submitted)} job(s) already "
                                f"submitted were cancelled: {exc}") from exc

    def _submit_task(self, run: RunDir, plan: Plan, spec: TaskSpec, units: list[Unit],
                     submitted: Mapping[str, Mapping[str, Any]], epoch: int) -> dict[str, Any]:
        shards = tuple(u.shard for u in units) if spec.foreach is not None else None
        job = SbatchJob(
            name=f"cl_hpc.{run.run_id}.{spec.name}", comment=f"cl_hpc run={run.run_id} task={spec.name}",
            resources=self.resources(spec), folder=str(run.path / "tasks" / spec.name / "logs"), array=shards,
            array_parallelism=self.conf.array_parallelism, dependency=_dependency(plan, spec, shards, submitted),
            signal_delay_s=self.conf.signal_delay_s, setup=tuple(self.conf.setup), use_srun=self.conf.use_srun,
            extra=dict(self.conf.extra),
        )
        submitter = Submitter(job, python=self.conf.python, interval_s=self.conf.submit_interval_s)
        attempts = [len(run.attempts(u.key)) + 1 for u in units]
        n = len(units)
        if shards is None:
            jobs = [submitter.submit(run_unit, str(run.path), units[0].key, attempts[0], epoch)]
        else:
            jobs = submitter.map_array(run_unit, [str(run.path)] * n, [u.key for u in units], attempts, [epoch] * n)
        return {"job_id": job_id_of(jobs[0]), "array": list(shards) if shards is not None else None,
                "units": {u.key: str(j.job_id) for u, j in zip(units, jobs)}}

    def _record(self, run: RunDir, epoch: int, submitted: Mapping[str, Any]) -> None:
        data = read_json(run.path / JOBS_FILE) or {}
        data[str(epoch)] = dict(submitted)
        write_json_atomic(run.path / JOBS_FILE, data)

    def status(self, run: RunDir) -> dict[str, UnitStatus]:
        reconcile(run, unit_jobs(run))
        return run_status(run)

    def cancel(self, run: RunDir) -> None:
        _scancel(sorted({job.split("_")[0] for job in unit_jobs(run).values()}))


def unit_jobs(run: RunDir) -> dict[str, str]:
    """Unit key -> Slurm job id ("123" or "123_4") of the latest launch that submitted it."""
    data = read_json(run.path / JOBS_FILE) or {}
    jobs: dict[str, str] = {}
    for epoch in sorted(data, key=int):
        for task in data[epoch].values():
            jobs.update(task["units"])
    return jobs


def _dependency(plan: Plan, spec: TaskSpec, shards: tuple[int | None, ...] | None,
                submitted: Mapping[str, Mapping[str, Any]]) -> str | None:
    parts = []
    for dep in spec.depends_on:
        if dep not in submitted:
            continue  # reused from an earlier launch: already complete
        up = submitted[dep]
        # aftercorr only when both arrays hold the same shard indices; otherwise wait for all.
        corr = plan.edge_kind(dep, spec.name) == "corr" and up["array"] == (list(shards) if shards else None)
        parts.append(f"{'aftercorr' if corr else 'afterok'}:{up['job_id']}")
    return ",".join(parts) or None


def _scancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        proc = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            print(f"cl_hpc: warning: scancel {' '.join(job_ids)} failed: {proc.stderr.strip()}", file=sys.stderr)
