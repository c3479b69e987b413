"""`python -m cl_hpc.execute.slurm.job RUN_DIR TASK EPOCH ATTEMPTS [--resources=JSON]`: what every Slurm job runs.

submitit's ``submitit.core._submit`` entry imports numpy and asyncio and unpickles the call: 0.2 s
of wall time and 0.3 s of CPU per job on the test VM. Eight shards of a fan-out starting at once
on a node compete for its cores, so that start-up was most of cl_hpc's per-level dispatch latency
(issue 3's makespan benchmark). This entry needs nothing the plan in the run dir does not say: the
task's name, the launch epoch, and the attempt number of each shard. The shard of an array job is
``SLURM_ARRAY_TASK_ID``. submitit still submits (sbatch, job id parsing, throttling).

ATTEMPTS is ``"3"`` for a plain job, or ``"0:1,1:1,5:2"`` (shard:attempt) for an array.
``--resources=JSON``, only on a job the retry guard re-submitted with escalated resources: the
Resources it runs under, which the plan (the first attempt's request) no longer says. An argument,
not the environment: sbatch exports the submitter's environment (``--export=ALL``), so a variable
would leak into every job submitted later from a task or a guard, and Slurm's own variables hold
the limits rounded (``--mem`` in whole MiB, ``--time`` in whole minutes).

Signals: ``--signal=USR2@N`` warns N s before the time limit and ``scontrol requeue`` sends SIGTERM.
A Lightning fit with ``PreemptionCheckpoint`` installs its own handlers and checkpoints; elsewhere
the job logs the signal and runs on, since a task that does not checkpoint may still finish in its
last N seconds (Slurm then ends it TIMEOUT, and the retry guard doubles its time). Slurm checks its
time limits every 30 s and may send USR2 up to a minute early, even before a fit has started: the
job leaves the signal's name in ``$CL_HPC_PENDING_SIGNAL``, and a fit that starts later acts on
it at its first step boundary (see cl_hpc/learn/preemption.py).
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False  # no typing at run time on the job path (cl_hpc/execute/runner.py)
if TYPE_CHECKING:
    from typing import Any

# = cl_hpc.context.PENDING_SIGNAL_ENV, spelled out: nothing is imported before the handlers are in place
PENDING_SIGNAL_ENV = "CL_HPC_PENDING_SIGNAL"


def parse_attempts(text: str) -> dict[int | None, int]:
    """``"3"`` -> {None: 3}; ``"0:1,4:2"`` -> {0: 1, 4: 2}."""
    if ":" not in text:
        return {None: int(text)}
    pairs = (item.split(":") for item in text.split(","))
    return {int(shard): int(attempt) for shard, attempt in pairs}


def format_attempts(attempts: dict[int | None, int]) -> str:
    if None in attempts:
        return str(attempts[None])
    return ",".join(f"{shard}:{attempt}" for shard, attempt in attempts.items())


def resources_option(options: list[str]) -> str | None:
    """The JSON of ``--resources=JSON``, the one option (None without it); run_unit validates it."""
    from cl_hpc.dag.unit_call import RESOURCES_OPTION

    if not options:
        return None
    if len(options) > 1 or not options[0].startswith(f"{RESOURCES_OPTION}="):
        raise ValueError(f"cl_hpc job: unexpected argument(s) {options!r}; the only option is {RESOURCES_OPTION}=JSON")
    return options[0].split("=", 1)[1]


def identity(folder: str) -> tuple[str | None, str]:
    """This job's id (``123`` or ``123_4`` for a shard) and the log file of this process, named as
    the sbatch script's ``--output`` names it (see sbatch.log_paths)."""
    env = os.environ
    rank = env.get("SLURM_PROCID", "0")
    if env.get("SLURM_ARRAY_JOB_ID"):
        job_id = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    else:
        job_id = env.get("SLURM_JOB_ID", "")
    return job_id or None, f"{folder}/{job_id}_{rank}_log.out"


def _log_signal(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    os.environ[PENDING_SIGNAL_ENV] = name  # for a checkpointing fit that has not started yet
    print(f"cl_hpc job: caught {name} with no checkpointing fit running; it runs on, and a fit that starts "
          f"later checkpoints at its first step (USR2: the time limit is near; SIGTERM: Slurm kills it after "
          f"KillWait)", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    run_dir, task, epoch, attempts_text, *options = argv
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, _log_signal)
    from cl_hpc.dag.unit_call import unit_key  # after the handlers: USR2's default action kills the job

    attempts = parse_attempts(attempts_text)
    shard = int(os.environ["SLURM_ARRAY_TASK_ID"]) if None not in attempts else None
    from cl_hpc.execute.runner import run_unit  # after the handlers: a signal may come early

    folder = os.path.join(run_dir, "tasks", task, "logs")
    try:
        run_unit(run_dir, unit_key(task, shard), attempts[shard], int(epoch), identity=identity(folder),
                 resources=resources_option(options))
    except Exception:  # the runner recorded it; the traceback goes to the log, the state to Slurm
        import traceback

        traceback.print_exc()
        return 1
    finally:
        # Python resets its handlers to the default action (terminate) early in its shutdown, which
        # takes a while with torch loaded: a late USR2 there made Slurm record a finished task's job
        # FAILED (signal 12) and cancel its afterok dependents. SIG_IGN survives the shutdown.
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
