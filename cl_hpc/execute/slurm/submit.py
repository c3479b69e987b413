"""Submit one task (a job, or a job array for a fan-out) through submitit, with cl_hpc's renderer.

submitit keeps doing what it is good at: pickling the call, parsing the job id, and, inside the
job, the pre-timeout signal handling and requeue. cl_hpc only replaces the script it writes.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import replace
from typing import Any, Sequence

import submitit
from submitit.core import utils
from submitit.slurm.slurm import SlurmJob

from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm.sbatch import SbatchJob, render_sbatch


class Submitter(submitit.SlurmExecutor):
    def __init__(self, job: SbatchJob, python: str | None = None, interval_s: float = 0.05) -> None:
        try:
            super().__init__(job.folder, python=python)
        except RuntimeError as exc:  # submitit's "Could not detect srun"
            raise ExecutorError(f"cluster=slurm needs the Slurm client commands (srun, sbatch) on PATH: {exc}") from exc
        self.job = job
        self._throttling = interval_s  # spacing between sbatch calls, to be gentle with slurmctld
        res = job.resources
        # submitit's own bookkeeping (timeouts before requeue, number of tasks) reads these keys.
        self.parameters.update(time=math.ceil(res.time_min), nodes=res.nodes, ntasks_per_node=res.tasks_per_node)

    def _make_submission_file_text(self, command: str, uid: str) -> str:
        return render_sbatch(replace(self.job, command=command))

    def _internal_process_submissions(self, delayed_submissions: list[utils.DelayedSubmission]) -> list[Any]:
        if self.job.array is None:
            return super()._internal_process_submissions(delayed_submissions)
        return self._submit_array(delayed_submissions)

    def _submit_array(self, delayed: Sequence[utils.DelayedSubmission]) -> list[Any]:
        """One sbatch for the whole fan-out; each shard's pickle is named by its own array index
        (submitit's version numbers shards 0..n-1, which breaks for a resumed subset)."""
        indices = self.job.array or ()
        assert len(indices) == len(delayed), "one call per array index"
        folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickles = []
        for submission in delayed:
            path = folder / f"{uuid.uuid4().hex}.pkl"
            submission.set_timeout(self.parameters["time"], self.max_num_timeout)
            submission.dump(path)
            pickles.append(path)
        self._throttle()
        self._last_job_submitted = time.time()
        first = self._submit_command(self._submitit_command_str)
        jobs = [SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{i}", tasks=list(range(first.num_tasks))) for i in indices]
        for job, path in zip(jobs, pickles):
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs


def job_id_of(job: Any) -> str:
    """The array's id for shards ("123" from "123_4"), the job's own id otherwise."""
    return str(job.job_id).split("_")[0]
