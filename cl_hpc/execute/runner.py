"""Run one unit of work: the code every backend executes, in a job process or in-process.

It reads its unit from the run directory's plan, hands the task its params, task dir and upstream
outputs, and records the attempt atomically in the run dir.

Every Slurm job runs this before its task starts, and the shards of a fan-out run it at once on a
node's cores, so the job path imports neither ``typing`` nor ``dataclasses`` (about 10 ms of CPU
per job): this module, cl_hpc/execute/slurm/job.py, context.py, atomic.py, errors.py,
dag/unit_call.py, rundir/layout.py and profile/{task,host,sampler,record}.py. Their annotations'
imports sit under ``TYPE_CHECKING = False``; tests/unit/test_unit_call.py runs a unit in a fresh
interpreter and checks that neither module was loaded.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

from cl_hpc.context import Preempted, TaskContext
from cl_hpc.errors import ClHpcError, TaskFailedError
from cl_hpc.rundir.layout import RunDir
from cl_hpc.states import AttemptState, Limit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping

    from cl_hpc.dag.unit_call import UnitCall
    from cl_hpc.rundir.records import AttemptRecord


def run_unit(run_dir: str, key: str, attempt: int, epoch: int = 0, in_process: bool = False,
             identity: tuple[str | None, str | None] | None = None, resources: str | None = None) -> Mapping[str, Any]:
    """Run unit ``key`` of the run at ``run_dir`` as attempt number ``attempt``; returns its outputs.

    ``identity`` is the scheduler's job id and this process's log file, when the caller knows them
    (the Slurm job entry); otherwise they are asked of submitit's job environment, if any.
    ``resources`` is the JSON of the Resources the scheduler gave this attempt when they are not
    the plan's (a retry escalated for memory or time): the task, its profile and its attempt
    record then see those (UnitCall.run_under).
    """
    run = RunDir(run_dir)
    call = run.load_call(key)
    if resources is not None:
        call.run_under(resources)
    if not in_process and call.workdir:
        # Jobs start wherever the scheduler puts them; relative paths in params mean the launch dir.
        # (A Slurm job starts in it unless cluster.setup changes directory, and `python -m` put it
        # first on sys.path before this module was imported: a stdlib name in the launch dir
        # shadows the stdlib there as in any script run from it. Importing traceback and
        # subprocess early, for the failure and requeue paths, would guard only that rare setup,
        # for 6 ms of every job's start.)
        os.chdir(call.workdir)
        sys.path.insert(0, call.workdir)
    if _rank() != 0:  # extra ranks of a multi-process task compute; rank 0 alone records
        return _call(call, run, attempt)
    record = _start_record(call, attempt, epoch, run, identity or _job_identity())
    _record(run, key, record)
    profiler = _profiler(call, run, record)
    try:
        outputs = _call(call, run, attempt, profiler)
        run.write_outputs(key, outputs)
        record.update({"state": AttemptState.COMPLETED, "ended": time.time()})
        return outputs
    except Preempted as exc:
        record.update({"state": AttemptState.PREEMPTED, "note": str(exc),
                       "preemptions": [*record.get("preemptions", []), str(exc)]})
        _record(run, key, record)  # before the requeue: the job may be killed right after it
        if exc.requeue:
            _request_requeue()
        raise
    except BaseException as exc:
        record.update({"state": AttemptState.FAILED, "ended": time.time(),
                       "error": _describe(exc, call.resources["time_min"])})
        record["traceback"] = _format_exc()  # after the state: importing traceback may fail (MemoryError)
        raise
    finally:
        if profiler is not None:
            _finish_profile(profiler, record)
        _record_end(run, key, record)


def _profiler(call: UnitCall, run: RunDir, record: AttemptRecord) -> Any:
    """The attempt's profiler, started; None when the plan turns profiling off, or when it cannot
    start (the error goes into the attempt record: measuring must never change a task's outcome)."""
    try:
        return _start_profiler(call, run, record)
    except Exception as exc:
        record["profile_error"] = f"{type(exc).__name__}: {exc}"
        return None


def _start_profiler(call: UnitCall, run: RunDir, record: AttemptRecord) -> Any:
    from cl_hpc.profile.task import ProfileSettings, TaskProfiler

    settings = ProfileSettings.from_dict(call.meta.get("profile"))
    if not settings.enabled:
        return None
    identity = {"run_id": run.run_id, "pipeline": call.pipeline, "key": call.key, "task": call.task,
                "shard": call.shard, "attempt": record["attempt"], "segment": record["requeues"],
                "job_id": record["job_id"], "config_fp": call.config_fp}
    return TaskProfiler(run.task_dir(call.key), identity, call.resources, settings).start()


def _finish_profile(profiler: Any, record: AttemptRecord) -> None:
    try:
        profiler.finish(record["state"])
    except Exception as exc:  # the measurement must never change the task's outcome
        record["profile_error"] = f"{type(exc).__name__}: {exc}"


def _call(call: UnitCall, run: RunDir, attempt: int, profiler: Any = None) -> dict[str, Any]:
    key = call.key
    task_dir = run.task_dir(key)
    task_dir.mkdir(parents=True, exist_ok=True)
    ctx = TaskContext(
        run_id=run.run_id, task=call.task, key=key, task_dir=task_dir, run_dir=run.path, attempt=attempt,
        upstream=upstream_outputs(call, run), item=call.item, shard=call.shard,
        resources=dict(call.resources), profiler=profiler,
    )
    outputs = load_target(call.target)(ctx, **call.params)
    outputs = dict(outputs or {})
    try:
        json.dumps(outputs)
    except (TypeError, ValueError) as exc:
        raise TaskFailedError(
            f"task {key!r} returned outputs that are not JSON-serialisable ({exc}); return plain "
            f"numbers/strings/lists/dicts and write larger artefacts as files under ctx.task_dir"
        ) from exc
    return outputs


def upstream_outputs(call: UnitCall, run: RunDir) -> dict[str, Any]:
    """Outputs of each upstream task: a dict, or a list of shard outputs for a fan-out."""
    return {dep: run.outputs(keys) if isinstance(keys, str) else [run.outputs(k) for k in keys]
            for dep, keys in call.upstream.items()}


def load_target(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)  # validated at plan time


def _start_record(call: UnitCall, attempt: int, epoch: int, run: RunDir,
                  identity: tuple[str | None, str | None]) -> AttemptRecord:
    key = call.key
    job_id, log = identity
    record: AttemptRecord = {
        "attempt": attempt, "epoch": epoch, "state": AttemptState.RUNNING, "started": time.time(), "ended": None,
        "host": os.uname().nodename, "pid": os.getpid(), "job_id": job_id, "log": log,
        "fingerprint": call.fingerprint, "config_fp": call.config_fp, "error": None, "requeues": 0,
        "resources": dict(call.resources),
    }
    before = next((a for a in run.attempts(key) if a["attempt"] == attempt), None)
    if before and before.get("state") == AttemptState.PREEMPTED:  # the same attempt, resumed after a requeue
        record.update({"started": before.get("started"), "requeues": int(before.get("requeues", 0)) + 1,
                       "preemptions": list(before.get("preemptions", []))})  # why each requeue happened
    return record


def _format_exc() -> str | None:
    try:
        import traceback

        return traceback.format_exc()
    except Exception:  # the record keeps its state and error without it
        return None


def _request_requeue() -> None:
    """Ask Slurm to requeue this job (array shard included); it keeps its id and its pickle."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if job:
        from cl_hpc.execute.slurm.commands import scontrol

        try:
            scontrol("requeue", job)
        except ClHpcError as exc:  # the attempt stays recorded as preempted; the log says why no requeue
            print(f"cl_hpc: could not requeue job {job}: {exc}", file=sys.stderr, flush=True)


def _record(run: RunDir, key: str, record: AttemptRecord) -> None:
    # Only the run dir: jobs never open the SQLite index. Launch, status and the local scheduler
    # sync it from the run dir (DESIGN: the DB is an index rebuilt from task dirs), which keeps
    # sqlite-utils' import and the write lock off every job's start-up on a busy cluster.
    run.write_attempt(key, record)


def _record_end(run: RunDir, key: str, record: AttemptRecord) -> None:
    """The attempt's last record. If even that cannot be written (a full disk), say so on stderr
    and fail: the attempt's record then still says RUNNING, and the scheduler (the local one, or
    the Slurm reconcile from sacct) records the end of a process that ended without recording it."""
    try:
        _record(run, key, record)
    except OSError as exc:
        try:
            sys.stderr.write(f"cl_hpc: could not record attempt {record['attempt']} of {key} as {record['state']} "
                             f"({exc}); its error was: {record.get('error')}\n")
            sys.stderr.flush()
        except OSError:  # the log is on the same full disk
            pass
        raise


def _job_identity() -> tuple[str | None, str | None]:
    """The scheduler's job id and this process's log file, when running under submitit (the local
    backend). Never imported here otherwise: submitit's import costs 0.2 s per job."""
    if "submitit" not in sys.modules:
        return None, None
    try:
        import submitit

        env = submitit.JobEnvironment()
        return str(env.job_id), str(env.paths.stdout).replace("%t", str(env.global_rank))
    except RuntimeError:  # not inside a submitit job
        return None, None


def _rank() -> int:
    for name in ("SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


def timeout_message(time_min: float) -> str:
    return f"{Limit.TIMEOUT}: stopped at its time limit of {time_min:g} min (resources.time_min)"


def _describe(exc: BaseException, time_min: float) -> str:
    # submitit raises this in the job when the pre-timeout signal arrives and nothing checkpoints
    if type(exc).__name__ == "UncompletedJobError" and "timed-out" in str(exc):
        return timeout_message(time_min)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT): cancelled, or killed at its time limit"
    return f"{type(exc).__name__}: {exc}"
