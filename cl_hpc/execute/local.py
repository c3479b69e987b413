"""cluster=local: a small scheduler process on this machine runs each unit as a submitit subprocess.

``submit`` starts that scheduler detached (its own session), so the launcher can exit, be killed,
or lose its terminal while the run goes on, as it would under Slurm. The scheduler admits a unit
only when its dependencies completed and its declared cpus, memory and GPUs fit in what is free.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Mapping, Sequence

from cl_hpc import procs
from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.config.schema import LocalClusterConf
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.base import Executor
from cl_hpc.execute.local_orphans import SCHEDULER_FILE, stop_orphans
from cl_hpc.execute.machine import machine_capacity
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import run_status
from cl_hpc.states import TextEnum

CANCEL_FILE = "cancel.request"


class SchedulerState(TextEnum):
    """scheduler.json's ``state``: the local scheduler's own life, not a unit's."""

    STARTING = "starting"  # the launcher wrote the file; the scheduler process has not taken it yet
    RUNNING = "running"
    FINISHED = "finished"  # ran out of units, or was told it is over (a cancel, a crashed one cleaned up)
    CRASHED = "crashed"  # stopped on an error of its own: its running map stays for resume and cancel


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, conf: LocalClusterConf) -> None:
        self.conf = conf
        self._scheduler: subprocess.Popen[bytes] | None = None  # the scheduler this process started

    def capacity(self) -> Capacity:
        return machine_capacity(self.conf.mode, self.conf.cpus, self.conf.mem_gb, self.conf.gpus)

    def describe(self, plan: Plan) -> Mapping[str, str]:
        cap = self.capacity()
        pool = f"{cap.cpus} cpus, {cap.mem_gb:g} GB, {cap.gpus} gpus"
        return {
            name: f"{len(spec.foreach or [None])} subprocess(es) via submitit, each started once its "
            f"dependencies completed and its resources fit the free pool ({pool})"
            for name, spec in plan.tasks.items()
        }

    def stop_earlier(self, run: RunDir, plan: Plan) -> None:
        if scheduler_alive(run):  # its tasks are not orphans: submit refuses the resume, naming it
            return
        # Tasks of a scheduler that died still run: stop them before their units run again.
        stop_orphans(run, list(plan.units), "its local scheduler died; stopped before the resume")

    def submit(self, run: RunDir, plan: Plan, todo: Sequence[str], epoch: int) -> None:
        self._reap()
        if scheduler_alive(run):
            raise ExecutorError(f"run {run.run_id} already has a live local scheduler; wait for it to finish "
                                f"(`python -m cl_hpc.status {run.run_id}`) or cancel it first with "
                                f"`python -m cl_hpc.cancel {run.run_id}`")
        (run.path / CANCEL_FILE).unlink(missing_ok=True)
        cap = self.capacity()
        write_json_atomic(run.path / SCHEDULER_FILE, {
            "todo": list(todo), "epoch": epoch, "state": SchedulerState.STARTING, "poll_s": self.conf.poll_s,
            "capacity": {"cpus": cap.cpus, "mem_gb": cap.mem_gb, "gpus": cap.gpus},
        })
        with open(run.path / "scheduler.log", "ab") as log:
            self._scheduler = subprocess.Popen(
                [sys.executable, "-m", "cl_hpc.execute.local_agent", str(run.path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the launcher and its terminal's Ctrl-C
                cwd=plan.workdir or None,
            )
        _wait_started(run, self._scheduler)

    def cancel(self, run: RunDir) -> None:
        if scheduler_alive(run):
            (run.path / CANCEL_FILE).write_text(f"{time.time()}\n")
            return
        # Nobody would read a request: stop what still runs and mark the rest, from the run dir.
        statuses = run_status(run)
        open_keys = [k for k, s in statuses.items() if not s.state.terminal]
        stop_orphans(run, open_keys, "cancelled (python -m cl_hpc.cancel) after its local scheduler died")
        for key in open_keys:
            run.mark_cancelled(key, "cancelled by request (cl_hpc.cancel), without a live scheduler", None)
        info = read_json(run.path / SCHEDULER_FILE)
        if info and info.get("state") in (*_LIVE, SchedulerState.CRASHED):
            write_json_atomic(run.path / SCHEDULER_FILE, {**info, "state": SchedulerState.FINISHED,
                                                          "ended": time.time(),
                                                          "note": "cancelled after the scheduler died"})

    def problems(self, run: RunDir) -> list[str]:
        self._reap()
        info = read_json(run.path / SCHEDULER_FILE) or {}
        if info.get("state") in (*_LIVE, SchedulerState.CRASHED) and not scheduler_alive(run):
            what = f"stopped by {info['error']}" if info.get("state") == SchedulerState.CRASHED else "is gone"
            return [f"the local scheduler (pid {info.get('pid')}) {what} before the run finished; see "
                    f"{run.path / 'scheduler.log'}, and continue it with `python -m cl_hpc.launch "
                    f"launch.resume={run.run_id}` (its tasks still running are stopped first) or stop it with "
                    f"`python -m cl_hpc.cancel {run.run_id}`"]
        return []

    def _reap(self) -> None:
        """Collect the scheduler this process started, once it ended: unreaped, it stays a zombie."""
        if self._scheduler is not None and self._scheduler.poll() is not None:
            self._scheduler = None


_LIVE = (SchedulerState.STARTING, SchedulerState.RUNNING)


def scheduler_alive(run: RunDir) -> bool:
    info = read_json(run.path / SCHEDULER_FILE) or {}
    if info.get("state") in (SchedulerState.FINISHED, SchedulerState.CRASHED):
        return False
    return procs.alive(info.get("pid"), info.get("pid_started"))  # a zombie is dead; a reused pid is not it


def _wait_started(run: RunDir, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (read_json(run.path / SCHEDULER_FILE) or {}).get("pid") == proc.pid:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = (run.path / "scheduler.log").read_text(errors="replace")[-2000:]
    raise ExecutorError(f"the local scheduler did not start (exit code {proc.poll()}); its log "
                        f"{run.path / 'scheduler.log'} ends with:\n{tail}")
