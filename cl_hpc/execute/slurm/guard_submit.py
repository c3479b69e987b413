"""Submit the retry guard of a task: a one-CPU job that runs once the task's job (or array) ended.

Why a guard job and not a watching process: Slurm must run the retry even after the launcher has
exited. ``afterany`` starts the guard whatever the outcome; a guard that finds every shard
completed exits in a second, otherwise it re-submits (with more memory or time where that was the
cause) and re-points the dependents, which wait with --kill-on-invalid-dep=no, or cancels them once
no attempts are left. See cl_hpc/execute/slurm/guard.py.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from cl_hpc.config.resources import Resources
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm import commands
from cl_hpc.execute.slurm.sbatch import SbatchJob, interpreter, render_sbatch
from cl_hpc.rundir.layout import RunDir


def guard_job(run_dir: str, task: str, epoch: int, job_id: str, job: SbatchJob, python: str | None) -> SbatchJob:
    """The guard of ``job`` (the task's job or array, id ``job_id``): pure, tested on a stored script."""
    res = job.resources
    command = " ".join([interpreter(python), *map(shlex.quote, ["-m", "cl_hpc.execute.slurm.guard", run_dir, task,
                                                                str(epoch)])])
    return SbatchJob(
        name=f"{job.name}.guard", comment=f"{job.comment} guard", folder=job.folder, command=command,
        resources=Resources(cpus=1, mem_gb=1, time_min=10, partition=res.partition, account=res.account, qos=res.qos),
        dependency=f"afterany:{job_id}", setup=job.setup, use_srun=False, signal_delay_s=30,
    )


def submit_guard(run: RunDir, task: str, epoch: int, job_id: str, job: SbatchJob, python: str | None) -> str:
    guard = guard_job(str(run.path), task, epoch, job_id, job, python)
    path = Path(job.folder) / f"guard-{job_id}.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_sbatch(guard))
    try:
        return commands.sbatch(path)
    except ExecutorError as exc:
        raise ExecutorError(f"the retry guard of {task} could not be submitted: {exc}") from exc
