"""Submit one task (a job, or a job array for a fan-out) through submitit, with cl_hpc's renderer.

submitit keeps doing what it is good at on the login node: writing the script into its folder and
spacing the calls; sbatch itself runs through cl_hpc's one Slurm command layer (commands.py). The
job runs cl_hpc's light entry (cl_hpc/execute/slurm/job.py) rather than submitit's pickle loader,
which costs 0.2 s per job.
"""

from __future__ import annotations

import math
import shlex
import time
import uuid
from dataclasses import replace

import submitit
from submitit.core import utils

from cl_hpc.dag.unit_call import RESOURCES_OPTION
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm import commands
from cl_hpc.execute.slurm.job import format_attempts
from cl_hpc.execute.slurm.sbatch import SbatchJob, interpreter, render_sbatch


class Submitter(submitit.SlurmExecutor):
    def __init__(self, job: SbatchJob, python: str | None = None, interval_s: float = 0.05,
                 last_submitted: float = 0.0) -> None:
        try:
            super().__init__(job.folder, python=python)
        except RuntimeError as exc:  # submitit's "Could not detect srun"
            raise ExecutorError(f"cluster=slurm needs the Slurm client commands (srun, sbatch) on PATH: {exc}") from exc
        self.job = job
        self.job_python = python  # cluster.python as given: rendered by sbatch.interpreter, as guards and backtests do
        # At least interval_s between sbatch calls, to be gentle with slurmctld. Each task gets its
        # own Submitter, so the time of the launch's previous sbatch comes in.
        self._throttling = interval_s
        self._last_job_submitted = last_submitted
        res = job.resources
        # submitit's own bookkeeping (number of tasks of the Job it returns) reads these keys.
        self.parameters.update(time=math.ceil(res.time_min), nodes=res.nodes, ntasks_per_node=res.tasks_per_node)

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        return render_sbatch(replace(self.job, command=command))

    def _submit_command(self, command: str) -> submitit.SlurmJob:
        """submitit's own steps (script in its folder, then kept beside the job's logs), with the
        sbatch call through the one Slurm command layer (timeouts, transient retries, job id)."""
        uid = uuid.uuid4().hex
        path = utils.JobPaths.get_first_id_independent_folder(self.folder) / f".submission_file_{uid}.sh"
        path.write_text(self._make_submission_file_text(command, uid))
        job_id = commands.sbatch(path)
        job: submitit.SlurmJob = self.job_class(folder=self.folder, job_id=job_id, tasks=list(range(self._num_tasks())))
        job.paths.move_temporary_file(path, "submission_file", keep_as_symlink=True)
        return job

    def submit_units(self, run_dir: str, task: str, epoch: int, attempts: dict[int | None, int],
                     resources: str | None = None) -> list[str]:
        """One sbatch for the task (the whole fan-out as one array); the job id of each unit, in
        the order of ``attempts`` ("123", or "123_4" for shard 4). ``resources``: see job_command."""
        command = job_command(self.job_python, run_dir, task, epoch, attempts, resources)
        utils.JobPaths.get_first_id_independent_folder(self.folder).mkdir(parents=True, exist_ok=True)
        self._throttle()
        self._last_job_submitted = time.time()
        job_id = str(self._submit_command(command).job_id)
        return [job_id if shard is None else f"{job_id}_{shard}" for shard in attempts]

    def _throttle(self) -> None:
        # submitit's own loop sleeps a whole interval whenever one has not passed yet, which makes
        # every gap between interval and twice it: wait only for what is left of it.
        wait_interval(self._last_job_submitted, self._throttling)

    @property
    def last_submitted(self) -> float:
        """When this submitter last called sbatch (epoch seconds; 0.0 before it did)."""
        return self._last_job_submitted


def job_command(python: str | None, run_dir: str, task: str, epoch: int, attempts: dict[int | None, int],
                resources: str | None = None) -> str:
    """The task job's command line: cl_hpc's light job entry under ``cluster.python``. ``resources``
    (the JSON of the Resources a retry guard escalated the job to) becomes its ``--resources=``."""
    args = ["-u", "-m", "cl_hpc.execute.slurm.job", run_dir, task, str(epoch), format_attempts(attempts)]
    if resources is not None:
        args.append(f"{RESOURCES_OPTION}={resources}")
    return " ".join([interpreter(python), *map(shlex.quote, args)])


def wait_interval(last: float, interval_s: float) -> None:
    """Sleep until ``interval_s`` has passed since ``last`` (epoch seconds)."""
    left = last + interval_s - time.time()
    if left > 0:
        time.sleep(left)


def job_id_of(unit_job_id: str) -> str:
    """The array's id for shards ("123" from "123_4"), the job's own id otherwise."""
    return unit_job_id.split("_")[0]
